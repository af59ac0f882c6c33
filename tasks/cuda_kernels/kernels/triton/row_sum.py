import torch
import torch.nn as nn
import triton
import triton.language as tl


# One program per row; the row is read in BLOCK-wide chunks into a vector accumulator (rows may be long), reduced once.
@triton.jit
def row_sum_kernel(x_ptr, y_ptr, cols, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for c0 in range(0, cols, BLOCK):
        acc += tl.load(x_ptr + row * cols + c0 + offs, mask=c0 + offs < cols, other=0.0)
    tl.store(y_ptr + row, tl.sum(acc, axis=0))


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        x = x.contiguous()
        cols = x.shape[-1]
        y = x.new_empty(x.shape[:-1])
        row_sum_kernel[(x.numel() // cols,)](x, y, cols, BLOCK=min(triton.next_power_of_2(cols), 2048),
                                            num_warps=8)
        return y
