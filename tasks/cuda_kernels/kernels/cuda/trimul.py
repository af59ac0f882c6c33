import torch
import torch.nn as nn
from sia_kernels import load_cuda

# TriMul in three kernels: (1) per (b,i,k) row: LayerNorm + five projections + gates, left/right written
# channel-major [B,H,N,N]; (2) per channel: T = L @ R^T with 32x32 shared-memory tiles; (3) per (b,i,j) row:
# LayerNorm over H, output gate, output projection. Plain fp32 throughout (no TF32), like the reference.
SOURCE = r"""
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    return v;
}
__device__ float block_sum(float v) {  // blockDim.x a multiple of 32
    __shared__ float part[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) part[warp] = v;
    __syncthreads();
    return warp_sum(lane < nwarps ? part[lane] : 0.f);
}
__device__ __forceinline__ float sigm(float v) { return 1.f / (1.f + __expf(-v)); }

extern "C" __global__ void trimul_proj(const float* __restrict__ x, const float* __restrict__ mask,
        const float* __restrict__ nw, const float* __restrict__ nb, const float* __restrict__ wl,
        const float* __restrict__ wr, const float* __restrict__ wlg, const float* __restrict__ wrg,
        const float* __restrict__ wog, float* __restrict__ left, float* __restrict__ right, float* __restrict__ og,
        long N, long D, long H) {
    extern __shared__ float xn[];  // D floats
    const long row = blockIdx.x, NN = N * N, b = row / NN, ik = row % NN;
    const float* xr = x + row * D;
    float s = 0.f;
    for (long c = threadIdx.x; c < D; c += blockDim.x) { xn[c] = xr[c]; s += xn[c]; }
    const float mean = block_sum(s) / D;
    float v = 0.f;
    for (long c = threadIdx.x; c < D; c += blockDim.x) { float d = xn[c] - mean; v += d * d; }
    const float inv = rsqrtf(block_sum(v) / D + 1e-5f);
    for (long c = threadIdx.x; c < D; c += blockDim.x) xn[c] = (xn[c] - mean) * inv * nw[c] + nb[c];
    __syncthreads();
    const float m = mask[row];
    for (long h = threadIdx.x; h < H; h += blockDim.x) {
        float sl = 0.f, sr = 0.f, slg = 0.f, srg = 0.f, sog = 0.f;
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

// T[bh, i, j] = sum_k L[bh, i, k] * R[bh, j, k]; grid (ceil(N/32), ceil(N/32), B*H), block (32, 32).
extern "C" __global__ void trimul_tri(const float* __restrict__ left, const float* __restrict__ right,
                                      float* __restrict__ tmp, long N) {
    __shared__ float Ls[32][33], Rs[32][33];
    const long bh = blockIdx.z, NN = N * N;
    const long i = (long)blockIdx.y * 32 + threadIdx.y, j = (long)blockIdx.x * 32 + threadIdx.x;
    const long jr = (long)blockIdx.x * 32 + threadIdx.y;  // the R row this thread loads
    const float* L = left + bh * NN;
    const float* R = right + bh * NN;
    float acc = 0.f;
    for (long k0 = 0; k0 < N; k0 += 32) {
        const long k = k0 + threadIdx.x;
        Ls[threadIdx.y][threadIdx.x] = (i < N && k < N) ? L[i * N + k] : 0.f;
        Rs[threadIdx.y][threadIdx.x] = (jr < N && k < N) ? R[jr * N + k] : 0.f;
        __syncthreads();
        #pragma unroll
        for (int kk = 0; kk < 32; ++kk) acc += Ls[threadIdx.y][kk] * Rs[threadIdx.x][kk];
        __syncthreads();
    }
    if (i < N && j < N) tmp[bh * NN + i * N + j] = acc;
}

extern "C" __global__ void trimul_out(const float* __restrict__ tmp, const float* __restrict__ og,
        const float* __restrict__ ow, const float* __restrict__ ob, const float* __restrict__ wout,
        float* __restrict__ y, long N, long D, long H) {
    extern __shared__ float v[];  // H floats
    const long row = blockIdx.x, NN = N * N, b = row / NN, ij = row % NN;
    float s = 0.f;
    for (long h = threadIdx.x; h < H; h += blockDim.x) { v[h] = tmp[(b * H + h) * NN + ij]; s += v[h]; }
    const float mean = block_sum(s) / H;
    float var = 0.f;
    for (long h = threadIdx.x; h < H; h += blockDim.x) { float d = v[h] - mean; var += d * d; }
    const float inv = rsqrtf(block_sum(var) / H + 1e-5f);
    for (long h = threadIdx.x; h < H; h += blockDim.x) v[h] = ((v[h] - mean) * inv * ow[h] + ob[h]) * og[row * H + h];
    __syncthreads();
    for (long c = threadIdx.x; c < D; c += blockDim.x) {
        float acc = 0.f;
        for (long h = 0; h < H; ++h) acc += wout[c * H + h] * v[h];
        y[row * D + c] = acc;
    }
}
"""
_proj = load_cuda(SOURCE, "trimul_proj")
_tri = load_cuda(SOURCE, "trimul_tri")
_out = load_cuda(SOURCE, "trimul_out")


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
        rows = B * N * N
        _proj(grid=(rows,), block=(128,), shared_mem=4 * D,
              args=(x, mask, self.norm.weight, self.norm.bias, self.left_proj.weight, self.right_proj.weight,
                    self.left_gate.weight, self.right_gate.weight, self.out_gate.weight, left, right, og, N, D, H))
        _tri(grid=((N + 31) // 32, (N + 31) // 32, B * H), block=(32, 32), args=(left, right, tmp, N))
        _out(grid=(rows,), block=(128,), shared_mem=4 * H,
             args=(tmp, og, self.to_out_norm.weight, self.to_out_norm.bias, self.to_out.weight, y, N, D, H))
        return y
