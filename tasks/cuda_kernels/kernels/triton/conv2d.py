import torch
import torch.nn as nn
import triton
import triton.language as tl


# 3x3 convolution (stride 1, padding 1, NCHW) as an implicit GEMM: rows are output pixels (batch x H x W), columns
# output channels, and the reduction runs over the 9 kernel taps x input channels in BK chunks. The A tile is the
# shifted input (zero outside the image), the B tile w[oc, ic, tap]. input_precision="ieee": TF32 could miss 1e-3.
@triton.jit
def conv3x3_kernel(x_ptr, w_ptr, bias_ptr, y_ptr, NB, CIN, COUT, H, W, BM: tl.constexpr, BN: tl.constexpr,
                   BK: tl.constexpr):
    pid_m, pid_n = tl.program_id(0), tl.program_id(1)
    HW = H * W
    rm = pid_m * BM + tl.arange(0, BM)  # output pixel ids over the whole batch
    rn = pid_n * BN + tl.arange(0, BN)  # output channels
    rk = tl.arange(0, BK)
    b = rm // HW
    r = (rm % HW) // W
    c = rm % W
    m_ok = rm < NB * HW
    n_ok = rn < COUT
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for tap in tl.static_range(9):
        rr = r + (tap // 3 - 1)
        cc = c + (tap % 3 - 1)
        pix_ok = m_ok & (rr >= 0) & (rr < H) & (cc >= 0) & (cc < W)
        base = b * CIN * HW + rr * W + cc  # + ic * HW
        for ic0 in range(0, CIN, BK):
            ic = ic0 + rk
            a = tl.load(x_ptr + base[:, None] + ic[None, :] * HW, mask=pix_ok[:, None] & (ic[None, :] < CIN),
                        other=0.0)
            wt = tl.load(w_ptr + rn[None, :] * (CIN * 9) + ic[:, None] * 9 + tap,
                         mask=(ic[:, None] < CIN) & n_ok[None, :], other=0.0)
            acc = tl.dot(a, wt, acc, input_precision="ieee")
    acc += tl.load(bias_ptr + rn, mask=n_ok, other=0.0)[None, :]
    out = y_ptr + (b * COUT * HW + r * W + c)[:, None] + rn[None, :] * HW
    tl.store(out, acc, mask=m_ok[:, None] & n_ok[None, :])


class ModelNew(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)  # holds the weights only

    def forward(self, x):
        x = x.contiguous()
        n, cin, h, w = x.shape
        cout = self.conv.weight.shape[0]
        y = x.new_empty((n, cout, h, w))
        BM = 64
        BN = max(16, min(128, triton.next_power_of_2(cout)))
        grid = (triton.cdiv(n * h * w, BM), triton.cdiv(cout, BN))
        conv3x3_kernel[grid](x, self.conv.weight, self.conv.bias, y, n, cin, cout, h, w, BM=BM, BN=BN, BK=16,
                             num_warps=8, num_stages=3)  # no spills on sm_90 (BK = 32 or 4 warps spilled)
        return y
