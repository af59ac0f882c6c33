import torch
import torch.nn as nn
from sia_kernels import load_cuda

SOURCE = r"""
// Direct 3x3 convolution, stride 1, padding 1, NCHW. A 16x16 block computes a 16x16 output tile of one image for
// OCB output channels (one pixel x OCB channels per thread). Input channels go through ICB at a time: their 18x18
// haloed input tiles (zero outside the image) and the matching OCB x ICB x 9 weights are staged in shared memory.
#define TS 16
#define OCB 16
#define ICB 8
extern "C" __global__ void conv3x3(const float* __restrict__ x, const float* __restrict__ w,
                                   const float* __restrict__ bias, float* __restrict__ y, long n, long cin, long cout,
                                   long h, long wd) {
    __shared__ float tile[ICB][TS + 2][TS + 2];
    __shared__ float ws[OCB][ICB][9];
    const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * TS + tx;
    const long groups = (cout + OCB - 1) / OCB;
    const long b = blockIdx.z / groups, oc0 = (blockIdx.z % groups) * OCB;
    const long r0 = (long)blockIdx.y * TS, c0 = (long)blockIdx.x * TS;
    float acc[OCB];
    #pragma unroll
    for (int o = 0; o < OCB; ++o) acc[o] = 0.f;
    for (long ic0 = 0; ic0 < cin; ic0 += ICB) {
        for (int t = tid; t < ICB * (TS + 2) * (TS + 2); t += TS * TS) {
            const int i = t / ((TS + 2) * (TS + 2)), rem = t % ((TS + 2) * (TS + 2));
            const int tr = rem / (TS + 2), tc = rem % (TS + 2);
            const long ic = ic0 + i, gr = r0 + tr - 1, gc = c0 + tc - 1;
            tile[i][tr][tc] = (ic < cin && gr >= 0 && gr < h && gc >= 0 && gc < wd)
                                  ? x[((b * cin + ic) * h + gr) * wd + gc] : 0.f;
        }
        for (int t = tid; t < OCB * ICB * 9; t += TS * TS) {
            const int o = t / (ICB * 9), i = (t / 9) % ICB, k = t % 9;
            const long oc = oc0 + o, ic = ic0 + i;
            ws[o][i][k] = (oc < cout && ic < cin) ? w[(oc * cin + ic) * 9 + k] : 0.f;
        }
        __syncthreads();
        #pragma unroll
        for (int i = 0; i < ICB; ++i) {
            #pragma unroll
            for (int k = 0; k < 9; ++k) {
                const float v = tile[i][ty + k / 3][tx + k % 3];
                #pragma unroll
                for (int o = 0; o < OCB; ++o) acc[o] += ws[o][i][k] * v;
            }
        }
        __syncthreads();
    }
    const long r = r0 + ty, c = c0 + tx;
    if (r >= h || c >= wd) return;
    #pragma unroll
    for (int o = 0; o < OCB; ++o) {
        const long oc = oc0 + o;
        if (oc < cout) y[((b * cout + oc) * h + r) * wd + c] = acc[o] + bias[oc];
    }
}
"""
_conv3x3 = load_cuda(SOURCE, "conv3x3")


class ModelNew(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)  # holds the weights only

    def forward(self, x):
        x = x.contiguous()
        n, cin, h, w = x.shape
        cout = self.conv.weight.shape[0]
        y = x.new_empty((n, cout, h, w))
        grid = ((w + 15) // 16, (h + 15) // 16, n * ((cout + 15) // 16))
        _conv3x3(grid=grid, block=(16, 16), args=(x, self.conv.weight, self.conv.bias, y, n, cin, cout, h, w))
        return y
