import torch
import torch.nn as nn
import triton
import triton.language as tl

# TriMul in three blocked Triton kernels (tl.dot, TF32 on a GPU: within the 2e-2 tolerance):
# (1) BM rows of x ((b,i,k) positions) x BH hidden channels per program: LayerNorm stats over D, then the five
#     projections as [BM, BK] x [BK, BH] dots over D chunks, gates fused; left/right stored channel-major [B,H,N,N]
#     so (2) is a plain batched GEMM; (2) per channel T = L @ R^T; (3) BM rows of T: LayerNorm over H, output gate,
#     then [BM, H] x [H, BD] dots over D chunks. Blocking reuses each weight tile for BM rows (a per-row GEMV
#     reloaded the full weight matrices for every row).


@triton.jit
def proj_kernel(x_ptr, mask_ptr, nw_ptr, nb_ptr, wl_ptr, wr_ptr, wlg_ptr, wrg_ptr, wog_ptr, left_ptr, right_ptr,
                og_ptr, ROWS, NN, D, H, BM: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr):
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    hc = tl.program_id(1) * BH + tl.arange(0, BH)
    kc = tl.arange(0, BK)
    row_ok, h_ok = rows < ROWS, hc < H
    xrow = x_ptr + rows[:, None] * D
    # LayerNorm statistics: mean first, then the centred variance (robust for Cauchy inputs), D in BK chunks.
    s = tl.zeros((BM,), dtype=tl.float32)
    for k0 in range(0, D, BK):
        s += tl.sum(tl.load(xrow + k0 + kc[None, :], mask=row_ok[:, None] & (k0 + kc[None, :] < D), other=0.0), 1)
    mean = s / D
    v = tl.zeros((BM,), dtype=tl.float32)
    for k0 in range(0, D, BK):
        keep = row_ok[:, None] & (k0 + kc[None, :] < D)
        xd = tl.where(keep, tl.load(xrow + k0 + kc[None, :], mask=keep, other=0.0) - mean[:, None], 0.0)
        v += tl.sum(xd * xd, 1)
    inv = 1.0 / tl.sqrt(v / D + 1e-5)
    al = tl.zeros((BM, BH), dtype=tl.float32)
    ar = tl.zeros((BM, BH), dtype=tl.float32)
    alg = tl.zeros((BM, BH), dtype=tl.float32)
    arg = tl.zeros((BM, BH), dtype=tl.float32)
    aog = tl.zeros((BM, BH), dtype=tl.float32)
    for k0 in range(0, D, BK):
        k = k0 + kc
        k_ok = k < D
        keep = row_ok[:, None] & k_ok[None, :]
        x = tl.load(xrow + k[None, :], mask=keep, other=0.0)
        nw = tl.load(nw_ptr + k, mask=k_ok, other=0.0)
        nb = tl.load(nb_ptr + k, mask=k_ok, other=0.0)
        xn = tl.where(keep, (x - mean[:, None]) * inv[:, None] * nw[None, :] + nb[None, :], 0.0)
        woff = hc[None, :] * D + k[:, None]  # W is [H, D]: a [BK, BH] tile of W^T
        wk = k_ok[:, None] & h_ok[None, :]
        al = tl.dot(xn, tl.load(wl_ptr + woff, mask=wk, other=0.0), al)
        ar = tl.dot(xn, tl.load(wr_ptr + woff, mask=wk, other=0.0), ar)
        alg = tl.dot(xn, tl.load(wlg_ptr + woff, mask=wk, other=0.0), alg)
        arg = tl.dot(xn, tl.load(wrg_ptr + woff, mask=wk, other=0.0), arg)
        aog = tl.dot(xn, tl.load(wog_ptr + woff, mask=wk, other=0.0), aog)
    m = tl.load(mask_ptr + rows, mask=row_ok, other=0.0)[:, None]
    b, ik = rows // NN, rows % NN
    cm = (b[:, None] * H + hc[None, :]) * NN + ik[:, None]  # channel-major [B, H, N, N]
    ok = row_ok[:, None] & h_ok[None, :]
    tl.store(left_ptr + cm, al * m * tl.sigmoid(alg), mask=ok)
    tl.store(right_ptr + cm, ar * m * tl.sigmoid(arg), mask=ok)
    tl.store(og_ptr + rows[:, None] * H + hc[None, :], tl.sigmoid(aog), mask=ok)


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
        acc = tl.dot(a, bt, acc)
    tl.store(t_ptr + base + rm[:, None] * N + rn[None, :], acc, mask=(rm[:, None] < N) & (rn[None, :] < N))


@triton.jit
def out_kernel(t_ptr, og_ptr, ow_ptr, ob_ptr, wout_ptr, y_ptr, ROWS, NN, D, H, BM: tl.constexpr, BH: tl.constexpr,
               BD: tl.constexpr):
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    hc = tl.arange(0, BH)
    dc = tl.arange(0, BD)
    row_ok, h_ok = rows < ROWS, hc < H
    ok = row_ok[:, None] & h_ok[None, :]
    b, ij = rows // NN, rows % NN
    t = tl.load(t_ptr + (b[:, None] * H + hc[None, :]) * NN + ij[:, None], mask=ok, other=0.0)  # [BM, BH]
    mean = tl.sum(t, 1) / H
    td = tl.where(ok, t - mean[:, None], 0.0)
    inv = 1.0 / tl.sqrt(tl.sum(td * td, 1) / H + 1e-5)
    g = tl.load(og_ptr + rows[:, None] * H + hc[None, :], mask=ok, other=0.0)
    ow = tl.load(ow_ptr + hc, mask=h_ok, other=0.0)
    ob = tl.load(ob_ptr + hc, mask=h_ok, other=0.0)
    v = tl.where(ok, (td * inv[:, None] * ow[None, :] + ob[None, :]) * g, 0.0)
    for d0 in range(0, D, BD):
        d = d0 + dc
        d_ok = d < D
        w = tl.load(wout_ptr + d[None, :] * H + hc[:, None], mask=h_ok[:, None] & d_ok[None, :], other=0.0)
        tl.store(y_ptr + rows[:, None] * D + d[None, :], tl.dot(v, w), mask=row_ok[:, None] & d_ok[None, :])


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
        BH = max(16, min(64, triton.next_power_of_2(H)))  # five [BM, BH] accumulators: keep them in registers
        BK = max(16, min(32, triton.next_power_of_2(D)))
        proj_kernel[(triton.cdiv(rows, 64), triton.cdiv(H, BH))](
            x, mask, self.norm.weight, self.norm.bias, self.left_proj.weight, self.right_proj.weight,
            self.left_gate.weight, self.right_gate.weight, self.out_gate.weight, left, right, og, rows, N * N, D, H,
            BM=64, BH=BH, BK=BK, num_warps=8, num_stages=2)
        tri_kernel[(triton.cdiv(N, 64), triton.cdiv(N, 64), B * H)](left, right, tmp, N, BM=64, BN=64, BK=32)
        out_kernel[(triton.cdiv(rows, 64),)](tmp, og, self.to_out_norm.weight, self.to_out_norm.bias,
                                             self.to_out.weight, y, rows, N * N, D, H, BM=64,
                                             BH=max(16, triton.next_power_of_2(H)),
                                             BD=max(16, min(64, triton.next_power_of_2(D))), num_warps=8,
                                             num_stages=2)
        return y
