import torch
import torch.nn as nn
from sia_kernels import load_cpp

SOURCE = r"""
#include <cmath>
extern "C" void layernorm(const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b,
                          float* __restrict__ y, long rows, long cols, float eps) {
    #pragma omp parallel for schedule(static)
    for (long r = 0; r < rows; ++r) {
        const float* xr = x + r * cols;
        float* yr = y + r * cols;
        float mean = 0.f, var = 0.f;
        #pragma omp simd reduction(+:mean)
        for (long c = 0; c < cols; ++c) mean += xr[c];
        mean /= cols;
        #pragma omp simd reduction(+:var)
        for (long c = 0; c < cols; ++c) { float d = xr[c] - mean; var += d * d; }
        const float inv = 1.f / std::sqrt(var / cols + eps);
        #pragma omp simd
        for (long c = 0; c < cols; ++c) yr[c] = (xr[c] - mean) * inv * w[c] + b[c];
    }
}
"""
_layernorm = load_cpp(SOURCE, "layernorm")


class ModelNew(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm = nn.LayerNorm(dim)  # holds the weights; never called

    def forward(self, x):
        x = x.contiguous()
        y = torch.empty_like(x)
        cols = x.shape[-1]
        _layernorm(x, self.norm.weight, self.norm.bias, y, x.numel() // cols, cols, self.norm.eps)
        return y
