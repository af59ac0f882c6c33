import torch
import torch.nn as nn
from sia_kernels import load_cpp

SOURCE = r"""
#include <cmath>
extern "C" void softmax_rows(const float* __restrict__ x, float* __restrict__ y, long rows, long cols) {
    #pragma omp parallel for schedule(static)
    for (long r = 0; r < rows; ++r) {
        const float* xr = x + r * cols;
        float* yr = y + r * cols;
        float m = -INFINITY;
        for (long c = 0; c < cols; ++c) m = xr[c] > m ? xr[c] : m;
        float s = 0.f;
        #pragma omp simd reduction(+:s)
        for (long c = 0; c < cols; ++c) { float e = std::exp(xr[c] - m); yr[c] = e; s += e; }
        const float inv = 1.f / s;
        #pragma omp simd
        for (long c = 0; c < cols; ++c) yr[c] *= inv;
    }
}
"""
_softmax = load_cpp(SOURCE, "softmax_rows")


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        x = x.contiguous()
        y = torch.empty_like(x)
        cols = x.shape[-1]
        _softmax(x, y, x.numel() // cols, cols)
        return y
