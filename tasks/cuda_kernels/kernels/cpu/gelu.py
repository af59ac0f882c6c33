import torch
import torch.nn as nn
from sia_kernels import load_cpp

SOURCE = r"""
#include <cmath>
extern "C" void gelu(const float* __restrict__ x, float* __restrict__ y, long n) {
    #pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; ++i) y[i] = 0.5f * x[i] * (1.f + std::erf(x[i] * 0.70710678118654752f));
}
"""
_gelu = load_cpp(SOURCE, "gelu")


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        x = x.contiguous()
        y = torch.empty_like(x)
        _gelu(x, y, x.numel())
        return y
