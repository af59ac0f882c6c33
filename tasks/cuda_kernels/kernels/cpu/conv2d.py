import torch
import torch.nn as nn
from sia_kernels import load_cpp

SOURCE = r"""
// Direct 3x3 convolution, stride 1, padding 1, NCHW; one (image, output channel) plane per task.
extern "C" void conv3x3(const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
                        float* __restrict__ y, long n, long cin, long cout, long h, long wd) {
    #pragma omp parallel for collapse(2) schedule(static)
    for (long b = 0; b < n; ++b) {
        for (long oc = 0; oc < cout; ++oc) {
            float* yp = y + (b * cout + oc) * h * wd;
            for (long i = 0; i < h * wd; ++i) yp[i] = bias[oc];
            for (long ic = 0; ic < cin; ++ic) {
                const float* xp = x + (b * cin + ic) * h * wd;
                const float* k = w + (oc * cin + ic) * 9;
                for (long r = 0; r < h; ++r) {
                    for (long dr = -1; dr <= 1; ++dr) {
                        const long rr = r + dr;
                        if (rr < 0 || rr >= h) continue;
                        const float* xrow = xp + rr * wd;
                        const float k0 = k[(dr + 1) * 3], k1 = k[(dr + 1) * 3 + 1], k2 = k[(dr + 1) * 3 + 2];
                        float* yrow = yp + r * wd;
                        yrow[0] += k1 * xrow[0] + (wd > 1 ? k2 * xrow[1] : 0.f);
                        #pragma omp simd
                        for (long c = 1; c < wd - 1; ++c) yrow[c] += k0 * xrow[c - 1] + k1 * xrow[c] + k2 * xrow[c + 1];
                        if (wd > 1) yrow[wd - 1] += k0 * xrow[wd - 2] + k1 * xrow[wd - 1];
                    }
                }
            }
        }
    }
}
"""
_conv3x3 = load_cpp(SOURCE, "conv3x3")


class ModelNew(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)  # holds the weights only

    def forward(self, x):
        x = x.contiguous()
        n, cin, h, w = x.shape
        cout = self.conv.weight.shape[0]
        y = x.new_empty((n, cout, h, w))
        _conv3x3(x, self.conv.weight, self.conv.bias, y, n, cin, cout, h, w)
        return y
