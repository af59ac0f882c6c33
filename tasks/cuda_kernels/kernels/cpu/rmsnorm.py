import torch
import torch.nn as nn
from sia_kernels import load_cpp

SOURCE = r"""
#include <cmath>
extern "C" void rmsnorm(const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ y,
                        long rows, long cols, float eps) {
    #pragma omp parallel for schedule(static)
    for (long r = 0; r < rows; ++r) {
        const float* xr = x + r * cols;
        float* yr = y + r * cols;
        float ss = 0.f;
        #pragma omp simd reduction(+:ss)
        for (long c = 0; c < cols; ++c) ss += xr[c] * xr[c];
        const float inv = 1.f / std::sqrt(ss / cols + eps);
        #pragma omp simd
        for (long c = 0; c < cols; ++c) yr[c] = xr[c] * inv * w[c];
    }
}
"""
_rmsnorm = load_cpp(SOURCE, "rmsnorm")


class ModelNew(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        x = x.contiguous()
        y = torch.empty_like(x)
        cols = x.shape[-1]
        _rmsnorm(x, self.weight, y, x.numel() // cols, cols, self.eps)
        return y
