import torch
import torch.nn as nn
import triton
import triton.language as tl


# One program per row, two passes over BLOCK-wide chunks (rows may be longer than a block): sum of squares, then scale.
@triton.jit
def rmsnorm_kernel(x_ptr, w_ptr, y_ptr, cols, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    xr, yr = x_ptr + row * cols, y_ptr + row * cols
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for c0 in range(0, cols, BLOCK):
        x = tl.load(xr + c0 + offs, mask=c0 + offs < cols, other=0.0)
        acc += x * x
    inv = 1.0 / tl.sqrt(tl.sum(acc, axis=0) / cols + eps)
    for c0 in range(0, cols, BLOCK):
        keep = c0 + offs < cols
        x = tl.load(xr + c0 + offs, mask=keep, other=0.0)
        w = tl.load(w_ptr + c0 + offs, mask=keep, other=0.0)
        tl.store(yr + c0 + offs, x * inv * w, mask=keep)


class ModelNew(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        x = x.contiguous()
        y = torch.empty_like(x)
        cols = x.shape[-1]
        rmsnorm_kernel[(x.numel() // cols,)](x, self.weight, y, cols, self.eps,
                                             BLOCK=min(triton.next_power_of_2(cols), 2048), num_warps=8)
        return y
