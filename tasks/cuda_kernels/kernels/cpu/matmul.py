import torch
import torch.nn as nn
from sia_kernels import load_cpp

SOURCE = r"""
#include <cstring>
// C[m,n] = A[m,k] B[k,n], i-k-j order so the inner loop streams rows of B and C (vectorises), blocked over k.
extern "C" void matmul(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ c,
                       long m, long k, long n) {
    const long KB = 256;
    #pragma omp parallel for schedule(static)
    for (long i = 0; i < m; ++i) {
        float* ci = c + i * n;
        std::memset(ci, 0, sizeof(float) * n);
        for (long k0 = 0; k0 < k; k0 += KB) {
            const long k1 = k0 + KB < k ? k0 + KB : k;
            for (long p = k0; p < k1; ++p) {
                const float aip = a[i * k + p];
                const float* bp = b + p * n;
                #pragma omp simd
                for (long j = 0; j < n; ++j) ci[j] += aip * bp[j];
            }
        }
    }
}
"""
_matmul = load_cpp(SOURCE, "matmul")


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, a, b):
        a, b = a.contiguous(), b.contiguous()
        c = a.new_empty((a.shape[0], b.shape[1]))
        _matmul(a, b, c, a.shape[0], a.shape[1], b.shape[1])
        return c
