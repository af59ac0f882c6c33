import torch
import torch.nn as nn
import triton
import triton.language as tl

# TriMul in three Triton kernels: (1) per (b,i,k) row: LayerNorm + five projections + gates (left/right written
# channel-major [B,H,N,N]); (2) per channel, T = L @ R^T with tl.dot (TF32 on a GPU: within the 2e-2 tolerance);
# (3) per (b,i,j) row: LayerNorm over H, output gate, output projection.


@triton.jit
def proj_kernel(x_ptr, mask_ptr, nw_ptr, nb_ptr, wl_ptr, wr_ptr, wlg_ptr, wrg_ptr, wog_ptr, left_ptr, right_ptr,
                og_ptr, NN, D, H, BD: tl.constexpr, BH: tl.constexpr):
    row = tl.program_id(0)
    b = row // NN
    ik = row % NN
    dc = tl.arange(0, BD)
    hc = tl.arange(0, BH)
    dk, hk = dc < D, hc < H
    x = tl.load(x_ptr + row * D + dc, mask=dk, other=0.0)
    mean = tl.sum(x, axis=0) / D
    xd = tl.where(dk, x - mean, 0.0)
    inv = 1.0 / tl.sqrt(tl.sum(xd * xd, axis=0) / D + 1e-5)
    xn = xd * inv * tl.load(nw_ptr + dc, mask=dk, other=0.0) + tl.load(nb_ptr + dc, mask=dk, other=0.0)
    woff = hc[:, None] * D + dc[None, :]
    wk = hk[:, None] & dk[None, :]
    xb = xn[None, :]
    sl = tl.sum(tl.load(wl_ptr + woff, mask=wk, other=0.0) * xb, axis=1)
    sr = tl.sum(tl.load(wr_ptr + woff, mask=wk, other=0.0) * xb, axis=1)
    slg = tl.sum(tl.load(wlg_ptr + woff, mask=wk, other=0.0) * xb, axis=1)
    srg = tl.sum(tl.load(wrg_ptr + woff, mask=wk, other=0.0) * xb, axis=1)
    sog = tl.sum(tl.load(wog_ptr + woff, mask=wk, other=0.0) * xb, axis=1)
    m = tl.load(mask_ptr + row)
    tl.store(left_ptr + (b * H + hc) * NN + ik, sl * m * tl.sigmoid(slg), mask=hk)
    tl.store(right_ptr + (b * H + hc) * NN + ik, sr * m * tl.sigmoid(srg), mask=hk)
    tl.store(og_ptr + row * H + hc, tl.sigmoid(sog), mask=hk)


@triton.jit
def tri_kernel(l_ptr, r_ptr, t_ptr, N, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    pid_m, pid_n, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    base = bh * N * N
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, N, BK):
        kk = k0 + rk
        a = tl.load(l_ptr + base + rm[:, None] * N + kk[None, :], mask=(rm[:, None] < N) & (kk[None, :] < N), other=0.0)
        bt = tl.load(r_ptr + base + rn[None, :] * N + kk[:, None], mask=(rn[None, :] < N) & (kk[:, None] < N), other=0.0)
        acc += tl.dot(a, bt)
    tl.store(t_ptr + base + rm[:, None] * N + rn[None, :], acc, mask=(rm[:, None] < N) & (rn[None, :] < N))


@triton.jit
def out_kernel(t_ptr, og_ptr, ow_ptr, ob_ptr, wout_ptr, y_ptr, NN, D, H, BD: tl.constexpr, BH: tl.constexpr):
    row = tl.program_id(0)
    b = row // NN
    ij = row % NN
    hc = tl.arange(0, BH)
    dc = tl.arange(0, BD)
    hk, dk = hc < H, dc < D
    v = tl.load(t_ptr + (b * H + hc) * NN + ij, mask=hk, other=0.0)
    mean = tl.sum(v, axis=0) / H
    vd = tl.where(hk, v - mean, 0.0)
    inv = 1.0 / tl.sqrt(tl.sum(vd * vd, axis=0) / H + 1e-5)
    g = tl.load(og_ptr + row * H + hc, mask=hk, other=0.0)
    v = (vd * inv * tl.load(ow_ptr + hc, mask=hk, other=0.0) + tl.load(ob_ptr + hc, mask=hk, other=0.0)) * g
    w = tl.load(wout_ptr + dc[:, None] * H + hc[None, :], mask=dk[:, None] & hk[None, :], other=0.0)
    tl.store(y_ptr + row * D + dc, tl.sum(w * v[None, :], axis=1), mask=dk)


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
        BD, BH = triton.next_power_of_2(D), triton.next_power_of_2(H)
        proj_kernel[(B * N * N,)](x, mask, self.norm.weight, self.norm.bias, self.left_proj.weight,
                                  self.right_proj.weight, self.left_gate.weight, self.right_gate.weight,
                                  self.out_gate.weight, left, right, og, N * N, D, H, BD=BD, BH=BH)
        tri_kernel[(triton.cdiv(N, 64), triton.cdiv(N, 64), B * H)](left, right, tmp, N, BM=64, BN=64, BK=32)
        out_kernel[(B * N * N,)](tmp, og, self.to_out_norm.weight, self.to_out_norm.bias, self.to_out.weight, y,
                                 N * N, D, H, BD=BD, BH=BH)
        return y
