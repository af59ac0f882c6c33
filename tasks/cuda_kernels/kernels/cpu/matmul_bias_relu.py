import torch
import torch.nn as nn
from sia_kernels import load_cpp

SOURCE = r"""
// y[b,o] = relu(sum_i x[b,i] w[o,i] + bias[o]); both operands are contiguous along i, so each dot vectorises.
extern "C" void linear_relu(const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
                            float* __restrict__ y, long batch, long in_f, long out_f) {
    #pragma omp parallel for collapse(2) schedule(static)
    for (long b = 0; b < batch; ++b) {
        for (long o = 0; o < out_f; ++o) {
            const float* xb = x + b * in_f;
            const float* wo = w + o * in_f;
            float s = 0.f;
            #pragma omp simd reduction(+:s)
            for (long i = 0; i < in_f; ++i) s += xb[i] * wo[i];
            s += bias[o];
            y[b * out_f + o] = s > 0.f ? s : 0.f;
        }
    }
}
"""
_linear_relu = load_cpp(SOURCE, "linear_relu")


class ModelNew(nn.Module):
    def __init__(self, in_features, out_features):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)  # holds the weights; never called

    def forward(self, x):
        x = x.contiguous()
        w, b = self.linear.weight, self.linear.bias
        y = x.new_empty((x.shape[0], w.shape[0]))
        _linear_relu(x, w, b, y, x.shape[0], x.shape[1], w.shape[0])
        return y
