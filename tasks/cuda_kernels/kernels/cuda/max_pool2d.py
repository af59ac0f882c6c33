import torch
import torch.nn as nn
from sia_kernels import load_cuda

SOURCE = r"""
// 2x2 max pool, stride 2, NCHW (odd edges dropped, as nn.MaxPool2d does); one output per thread, grid-stride.
extern "C" __global__ void max_pool2x2(const float* __restrict__ x, float* __restrict__ y, long planes, long h,
                                       long w) {
    const long oh = h / 2, ow = w / 2, total = planes * oh * ow;
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    const long stride = (long)gridDim.x * blockDim.x;
    for (; i < total; i += stride) {
        const long c = i % ow, r = (i / ow) % oh, p = i / (ow * oh);
        const float* a = x + (p * h + 2 * r) * w + 2 * c;
        const float* b = a + w;
        y[i] = fmaxf(fmaxf(a[0], a[1]), fmaxf(b[0], b[1]));
    }
}
"""
_pool = load_cuda(SOURCE, "max_pool2x2")


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        x = x.contiguous()
        n, c, h, w = x.shape
        y = x.new_empty((n, c, h // 2, w // 2))
        total = y.numel()
        _pool(grid=(max(1, min((total + 255) // 256, 65535)),), block=(256,), args=(x, y, n * c, h, w))
        return y
