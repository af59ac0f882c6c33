"""GPUMode's TriMul: the outgoing triangle multiplicative update of AlphaFold-3 (reference-kernels, problems/bioml/trimul).

Written in KernelBench form. The weights follow the competition's initialisation (random LayerNorm affine
parameters, projections scaled by 1/sqrt(fan)); inputs follow its generator: normal or Cauchy(0, 2) activations and a
random 0/1 mask unless ``nomask``. Tolerance in the competition: rtol = atol = 2e-2.
"""
import math

import torch
import torch.nn as nn


class Model(nn.Module):
    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.left_proj = nn.Linear(dim, hidden_dim, bias=False)
        self.right_proj = nn.Linear(dim, hidden_dim, bias=False)
        self.left_gate = nn.Linear(dim, hidden_dim, bias=False)
        self.right_gate = nn.Linear(dim, hidden_dim, bias=False)
        self.out_gate = nn.Linear(dim, hidden_dim, bias=False)
        self.to_out_norm = nn.LayerNorm(hidden_dim)
        self.to_out = nn.Linear(hidden_dim, dim, bias=False)
        with torch.no_grad():
            self.norm.weight.copy_(torch.randn(dim))
            self.norm.bias.copy_(torch.randn(dim))
            for lin in (self.left_proj, self.right_proj, self.left_gate, self.right_gate, self.out_gate):
                lin.weight.copy_(torch.randn(hidden_dim, dim) / math.sqrt(hidden_dim))
            self.to_out_norm.weight.copy_(torch.randn(hidden_dim))
            self.to_out_norm.bias.copy_(torch.randn(hidden_dim))
            self.to_out.weight.copy_(torch.randn(dim, hidden_dim) / math.sqrt(dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: [bs, n, n, dim], mask: [bs, n, n] -> [bs, n, n, dim]."""
        x = self.norm(x)
        mask = mask.unsqueeze(-1)
        left = self.left_proj(x) * mask * self.left_gate(x).sigmoid()
        right = self.right_proj(x) * mask * self.right_gate(x).sigmoid()
        out_gate = self.out_gate(x).sigmoid()
        out = torch.einsum("... i k d, ... j k d -> ... i j d", left, right)
        out = self.to_out_norm(out) * out_gate
        return self.to_out(out)


seqlen = 256
bs = 2
dim = 128
hiddendim = 128
nomask = True
distribution = "normal"


def get_inputs():
    if distribution == "cauchy":
        x = torch.distributions.Cauchy(torch.tensor(0.0), torch.tensor(2.0)).sample((bs, seqlen, seqlen, dim))
    else:
        x = torch.randn(bs, seqlen, seqlen, dim)
    if nomask:
        mask = torch.ones(bs, seqlen, seqlen)
    else:
        mask = torch.randint(0, 2, (bs, seqlen, seqlen)).float()
    return [x.float().contiguous(), mask]


def get_init_inputs():
    return [dim, hiddendim]
