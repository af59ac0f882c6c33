import torch
import torch.nn as nn
from sia_kernels import load_cuda

SOURCE = r"""
// y[M,N] = relu(x[M,K] W[N,K]^T + bias): the tiled SGEMM of the matmul kernel (128x128 tiles, 8x8 per thread),
// with both operands read along K (W's rows are K-contiguous) and bias + ReLU fused into the store.
#define BM 128
#define BN 128
#define BK 8
#define TM (BM / 16)
#define TN (BN / 16)
extern "C" __global__ void linear_relu(const float* __restrict__ x, const float* __restrict__ w,
                                       const float* __restrict__ bias, float* __restrict__ y, long M, long N, long K) {
    __shared__ float Xs[BK][BM + 1];
    __shared__ float Ws[BK][BN + 1];
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const long m0 = (long)blockIdx.y * BM, n0 = (long)blockIdx.x * BN;
    float acc[TM][TN];
    #pragma unroll
    for (int i = 0; i < TM; ++i)
        #pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = 0.f;
    for (long k0 = 0; k0 < K; k0 += BK) {
        #pragma unroll
        for (int s = 0; s < BM * BK / 256; ++s) {  // k fastest: contiguous in rows of x and of W
            const int t = tid + 256 * s, kk = t % BK, r = t / BK;
            const long gm = m0 + r, gn = n0 + r, gk = k0 + kk;
            Xs[kk][r] = (gm < M && gk < K) ? x[gm * K + gk] : 0.f;
            Ws[kk][r] = (gn < N && gk < K) ? w[gn * K + gk] : 0.f;  // BN == BM: the same loop fills both
        }
        __syncthreads();
        #pragma unroll
        for (int kk = 0; kk < BK; ++kk) {
            float xv[TM], wv[TN];
            #pragma unroll
            for (int i = 0; i < TM; ++i) xv[i] = Xs[kk][ty + 16 * i];
            #pragma unroll
            for (int j = 0; j < TN; ++j) wv[j] = Ws[kk][tx + 16 * j];
            #pragma unroll
            for (int i = 0; i < TM; ++i)
                #pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] += xv[i] * wv[j];
        }
        __syncthreads();
    }
    #pragma unroll
    for (int j = 0; j < TN; ++j) {
        const long gn = n0 + tx + 16 * j;
        if (gn >= N) continue;
        const float bj = bias[gn];
        #pragma unroll
        for (int i = 0; i < TM; ++i) {
            const long gm = m0 + ty + 16 * i;
            if (gm < M) y[gm * N + gn] = fmaxf(acc[i][j] + bj, 0.f);
        }
    }
}
"""
_linear_relu = load_cuda(SOURCE, "linear_relu")


class ModelNew(nn.Module):
    def __init__(self, in_features, out_features):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)  # holds the weights; never called

    def forward(self, x):
        x = x.contiguous()
        w, b = self.linear.weight, self.linear.bias
        M, K = x.shape
        N = w.shape[0]
        y = x.new_empty((M, N))
        _linear_relu(grid=((N + 127) // 128, (M + 127) // 128), block=(256,), args=(x, w, b, y, M, N, K))
        return y
