import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def layernorm_kernel(x_ptr, w_ptr, b_ptr, y_ptr, cols, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    keep = offs < cols
    x = tl.load(x_ptr + row * cols + offs, mask=keep, other=0.0)
    mean = tl.sum(x, axis=0) / cols
    d = tl.where(keep, x - mean, 0.0)
    inv = 1.0 / tl.sqrt(tl.sum(d * d, axis=0) / cols + eps)
    w = tl.load(w_ptr + offs, mask=keep)
    b = tl.load(b_ptr + offs, mask=keep)
    tl.store(y_ptr + row * cols + offs, d * inv * w + b, mask=keep)


class ModelNew(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm = nn.LayerNorm(dim)  # holds the weights; never called

    def forward(self, x):
        x = x.contiguous()
        y = torch.empty_like(x)
        cols = x.shape[-1]
        layernorm_kernel[(x.numel() // cols,)](x, self.norm.weight, self.norm.bias, y, cols, self.norm.eps,
                                               BLOCK=triton.next_power_of_2(cols))
        return y
