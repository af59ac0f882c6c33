import torch
import torch.nn as nn
from sia_kernels import load_cuda

SOURCE = r"""
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
    return v;
}
// Sum (or max) over the block; every thread gets the result. blockDim.x must be a multiple of 32, at most 1024.
__device__ float block_reduce(float v, bool is_max) {
    __shared__ float part[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = is_max ? warp_max(v) : warp_sum(v);
    __syncthreads();
    if (lane == 0) part[warp] = v;
    __syncthreads();
    float r = lane < nwarps ? part[lane] : (is_max ? -INFINITY : 0.f);
    r = is_max ? warp_max(r) : warp_sum(r);
    return r;
}
extern "C" __global__ void layernorm(const float* __restrict__ x, const float* __restrict__ w,
                                     const float* __restrict__ b, float* __restrict__ y, long cols, float eps) {
    const float* xr = x + (long)blockIdx.x * cols;
    float* yr = y + (long)blockIdx.x * cols;
    float s = 0.f;
    for (long c = threadIdx.x; c < cols; c += blockDim.x) s += xr[c];
    const float mean = block_reduce(s, false) / cols;
    float v = 0.f;
    for (long c = threadIdx.x; c < cols; c += blockDim.x) { float d = xr[c] - mean; v += d * d; }
    const float inv = rsqrtf(block_reduce(v, false) / cols + eps);
    for (long c = threadIdx.x; c < cols; c += blockDim.x) yr[c] = (xr[c] - mean) * inv * w[c] + b[c];
}
"""
_layernorm = load_cuda(SOURCE, "layernorm")


class ModelNew(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm = nn.LayerNorm(dim)  # holds the weights; never called

    def forward(self, x):
        x = x.contiguous()
        y = torch.empty_like(x)
        cols = x.shape[-1]
        _layernorm(grid=(x.numel() // cols,), block=(512,), args=(x, self.norm.weight, self.norm.bias, y, cols,
                                                                 self.norm.eps))
        return y
