import torch
import torch.nn as nn
from sia_kernels import load_cuda

SOURCE = r"""
extern "C" __global__ void gelu(const float* __restrict__ x, float* __restrict__ y, long n) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    long stride = (long)gridDim.x * blockDim.x;
    for (; i < n; i += stride) y[i] = 0.5f * x[i] * (1.f + erff(x[i] * 0.70710678118654752f));
}
"""
_gelu = load_cuda(SOURCE, "gelu")


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        x = x.contiguous()
        y = torch.empty_like(x)
        n = x.numel()
        _gelu(grid=(min((n + 255) // 256, 65535),), block=(256,), args=(x, y, n))
        return y
