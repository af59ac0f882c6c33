import torch
import torch.nn as nn
import triton
import triton.language as tl


# One program per row: scan BLOCK-wide chunks with tl.cumsum and carry the running total from chunk to chunk,
# so rows longer than a block work.
@triton.jit
def cumsum_kernel(x_ptr, y_ptr, cols, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    xr, yr = x_ptr + row * cols, y_ptr + row * cols
    carry = tl.zeros((1,), dtype=tl.float32)
    for c0 in range(0, cols, BLOCK):
        keep = c0 + offs < cols
        x = tl.load(xr + c0 + offs, mask=keep, other=0.0)
        tl.store(yr + c0 + offs, tl.cumsum(x, axis=0) + carry, mask=keep)
        carry += tl.sum(x, axis=0)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        x = x.contiguous()
        y = torch.empty_like(x)
        cols = x.shape[-1]
        cumsum_kernel[(x.numel() // cols,)](x, y, cols, BLOCK=min(triton.next_power_of_2(cols), 1024))
        return y
