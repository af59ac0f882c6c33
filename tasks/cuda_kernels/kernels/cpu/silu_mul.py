import torch
import torch.nn as nn
from sia_kernels import load_cpp

SOURCE = r"""
#include <cmath>
extern "C" void silu_mul(const float* __restrict__ g, const float* __restrict__ u, float* __restrict__ y, long n) {
    #pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; ++i) y[i] = g[i] / (1.f + std::exp(-g[i])) * u[i];
}
"""
_silu_mul = load_cpp(SOURCE, "silu_mul")


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, gate, up):
        gate, up = gate.contiguous(), up.contiguous()
        y = torch.empty_like(gate)
        _silu_mul(gate, up, y, gate.numel())
        return y
