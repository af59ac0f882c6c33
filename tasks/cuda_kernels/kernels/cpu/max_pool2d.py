import torch
import torch.nn as nn
from sia_kernels import load_cpp

SOURCE = r"""
extern "C" void max_pool2x2(const float* __restrict__ x, float* __restrict__ y, long planes, long h, long w) {
    const long oh = h / 2, ow = w / 2;
    #pragma omp parallel for schedule(static)
    for (long p = 0; p < planes; ++p) {
        const float* xp = x + p * h * w;
        float* yp = y + p * oh * ow;
        for (long r = 0; r < oh; ++r) {
            const float* a = xp + (2 * r) * w;
            const float* b = a + w;
            for (long c = 0; c < ow; ++c) {
                float m0 = a[2 * c] > a[2 * c + 1] ? a[2 * c] : a[2 * c + 1];
                float m1 = b[2 * c] > b[2 * c + 1] ? b[2 * c] : b[2 * c + 1];
                yp[r * ow + c] = m0 > m1 ? m0 : m1;
            }
        }
    }
}
"""
_pool = load_cpp(SOURCE, "max_pool2x2")


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        x = x.contiguous()
        n, c, h, w = x.shape
        y = x.new_empty((n, c, h // 2, w // 2))
        _pool(x, y, n * c, h, w)
        return y
