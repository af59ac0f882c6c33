import torch
import torch.nn as nn
from sia_kernels import load_cpp

# TriMul in three fused passes: (1) LayerNorm + the five projections + gates per (b, i, k) row, writing left/right
# channel-major [B, H, N, N] so (2) the triangle product is N x N dot products along contiguous k per channel, and
# (3) LayerNorm over H + output gate + the output projection per (b, i, j).
SOURCE = r"""
#include <cmath>
#include <vector>
static inline float sigm(float v) { return 1.f / (1.f + std::exp(-v)); }

extern "C" void trimul(const float* __restrict__ x, const float* __restrict__ mask,
                       const float* __restrict__ nw, const float* __restrict__ nb,
                       const float* __restrict__ wl, const float* __restrict__ wr,
                       const float* __restrict__ wlg, const float* __restrict__ wrg, const float* __restrict__ wog,
                       const float* __restrict__ ow, const float* __restrict__ ob, const float* __restrict__ wout,
                       float* __restrict__ left, float* __restrict__ right, float* __restrict__ og,
                       float* __restrict__ tmp, float* __restrict__ y, long B, long N, long D, long H) {
    const long NN = N * N;
    #pragma omp parallel
    {
        std::vector<float> xn(D), v(H);
        #pragma omp for schedule(static)
        for (long row = 0; row < B * NN; ++row) {
            const long b = row / NN, ik = row % NN;
            const float* xr = x + row * D;
            float mean = 0.f, var = 0.f;
            for (long c = 0; c < D; ++c) mean += xr[c];
            mean /= D;
            for (long c = 0; c < D; ++c) { float d = xr[c] - mean; var += d * d; }
            const float inv = 1.f / std::sqrt(var / D + 1e-5f);
            for (long c = 0; c < D; ++c) xn[c] = (xr[c] - mean) * inv * nw[c] + nb[c];
            const float m = mask[row];
            for (long h = 0; h < H; ++h) {
                float sl = 0.f, sr = 0.f, slg = 0.f, srg = 0.f, sog = 0.f;
                #pragma omp simd reduction(+:sl, sr, slg, srg, sog)
                for (long c = 0; c < D; ++c) {
                    const float xv = xn[c];
                    sl += wl[h * D + c] * xv; sr += wr[h * D + c] * xv;
                    slg += wlg[h * D + c] * xv; srg += wrg[h * D + c] * xv; sog += wog[h * D + c] * xv;
                }
                left[(b * H + h) * NN + ik] = sl * m * sigm(slg);
                right[(b * H + h) * NN + ik] = sr * m * sigm(srg);
                og[row * H + h] = sigm(sog);
            }
        }
        #pragma omp for collapse(2) schedule(static)
        for (long bh = 0; bh < B * H; ++bh) {
            for (long i = 0; i < N; ++i) {
                const float* L = left + bh * NN + i * N;
                const float* R = right + bh * NN;
                float* T = tmp + bh * NN + i * N;
                for (long j = 0; j < N; ++j) {
                    const float* Rj = R + j * N;
                    float s = 0.f;
                    #pragma omp simd reduction(+:s)
                    for (long k = 0; k < N; ++k) s += L[k] * Rj[k];
                    T[j] = s;
                }
            }
        }
        #pragma omp for schedule(static)
        for (long row = 0; row < B * NN; ++row) {
            const long b = row / NN, ij = row % NN;
            float mean = 0.f, var = 0.f;
            for (long h = 0; h < H; ++h) { v[h] = tmp[(b * H + h) * NN + ij]; mean += v[h]; }
            mean /= H;
            for (long h = 0; h < H; ++h) { float d = v[h] - mean; var += d * d; }
            const float inv = 1.f / std::sqrt(var / H + 1e-5f);
            for (long h = 0; h < H; ++h) v[h] = ((v[h] - mean) * inv * ow[h] + ob[h]) * og[row * H + h];
            float* yr = y + row * D;
            for (long c = 0; c < D; ++c) {
                float s = 0.f;
                #pragma omp simd reduction(+:s)
                for (long h = 0; h < H; ++h) s += wout[c * H + h] * v[h];
                yr[c] = s;
            }
        }
    }
}
"""
_trimul = load_cpp(SOURCE, "trimul")


class ModelNew(nn.Module):
    def __init__(self, dim, hidden_dim):
        super().__init__()
        # Same submodules as the reference, as weight holders only (the harness copies the reference weights in).
        self.norm = nn.LayerNorm(dim)
        self.left_proj = nn.Linear(dim, hidden_dim, bias=False)
        self.right_proj = nn.Linear(dim, hidden_dim, bias=False)
        self.left_gate = nn.Linear(dim, hidden_dim, bias=False)
        self.right_gate = nn.Linear(dim, hidden_dim, bias=False)
        self.out_gate = nn.Linear(dim, hidden_dim, bias=False)
        self.to_out_norm = nn.LayerNorm(hidden_dim)
        self.to_out = nn.Linear(hidden_dim, dim, bias=False)

    def forward(self, x, mask):
        x, mask = x.contiguous(), mask.contiguous()
        B, N, _, D = x.shape
        H = self.left_proj.weight.shape[0]
        left, right, tmp = x.new_empty((B, H, N, N)), x.new_empty((B, H, N, N)), x.new_empty((B, H, N, N))
        og, y = x.new_empty((B, N, N, H)), torch.empty_like(x)
        _trimul(x, mask, self.norm.weight, self.norm.bias, self.left_proj.weight, self.right_proj.weight,
                self.left_gate.weight, self.right_gate.weight, self.out_gate.weight, self.to_out_norm.weight,
                self.to_out_norm.bias, self.to_out.weight, left, right, og, tmp, y, B, N, D, H)
        return y
