import torch
import torch.nn as nn
from sia_kernels import load_cpp

SOURCE = r"""
extern "C" void cumsum_rows(const float* __restrict__ x, float* __restrict__ y, long rows, long cols) {
    #pragma omp parallel for schedule(static)
    for (long r = 0; r < rows; ++r) {
        const float* xr = x + r * cols;
        float* yr = y + r * cols;
        double s = 0.0;
        for (long c = 0; c < cols; ++c) { s += xr[c]; yr[c] = (float)s; }
    }
}
"""
_cumsum = load_cpp(SOURCE, "cumsum_rows")


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        x = x.contiguous()
        y = torch.empty_like(x)
        cols = x.shape[-1]
        _cumsum(x, y, x.numel() // cols, cols)
        return y
