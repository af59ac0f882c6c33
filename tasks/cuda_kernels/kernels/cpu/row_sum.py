import torch
import torch.nn as nn
from sia_kernels import load_cpp

SOURCE = r"""
extern "C" void row_sum(const float* __restrict__ x, float* __restrict__ y, long rows, long cols) {
    #pragma omp parallel for schedule(static)
    for (long r = 0; r < rows; ++r) {
        const float* xr = x + r * cols;
        float s = 0.f;
        #pragma omp simd reduction(+:s)
        for (long c = 0; c < cols; ++c) s += xr[c];
        y[r] = s;
    }
}
"""
_row_sum = load_cpp(SOURCE, "row_sum")


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        x = x.contiguous()
        cols = x.shape[-1]
        y = x.new_empty(x.shape[:-1])
        _row_sum(x, y, x.numel() // cols, cols)
        return y
