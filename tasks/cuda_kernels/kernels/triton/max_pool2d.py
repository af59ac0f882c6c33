import torch
import torch.nn as nn
import triton
import triton.language as tl


# 2x2 max pool, stride 2 (NCHW; odd edges dropped, as nn.MaxPool2d does): each program takes BLOCK outputs of the
# flattened [planes, OH, OW] output and reads its 2x2 window. Exact (tolerance 0): only max, no arithmetic.
@triton.jit
def max_pool2x2_kernel(x_ptr, y_ptr, total, H, W, OH, OW, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    keep = offs < total
    c = offs % OW
    r = (offs // OW) % OH
    p = offs // (OW * OH)
    src = x_ptr + (p * H + 2 * r) * W + 2 * c
    m0 = tl.maximum(tl.load(src, mask=keep), tl.load(src + 1, mask=keep))
    m1 = tl.maximum(tl.load(src + W, mask=keep), tl.load(src + W + 1, mask=keep))
    tl.store(y_ptr + offs, tl.maximum(m0, m1), mask=keep)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        x = x.contiguous()
        n, c, h, w = x.shape
        y = x.new_empty((n, c, h // 2, w // 2))
        total = y.numel()
        max_pool2x2_kernel[(triton.cdiv(total, 1024),)](x, y, total, h, w, h // 2, w // 2, BLOCK=1024)
        return y
