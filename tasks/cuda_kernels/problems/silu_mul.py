import torch
import torch.nn as nn
import torch.nn.functional as F


class Model(nn.Module):
    """The SwiGLU activation: silu(gate) * up, elementwise."""

    def __init__(self):
        super().__init__()

    def forward(self, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        return F.silu(gate) * up


batch_size = 4096
dim = 11008


def get_inputs():
    return [torch.randn(batch_size, dim), torch.randn(batch_size, dim)]


def get_init_inputs():
    return []
