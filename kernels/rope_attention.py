"""Non-causal flash attention with RoPE fused into the Q/K tile loads, reading a packed QKV tensor.

Layout: ``qkv`` [B, S, 3*H*Dh] (q heads, then k heads, then v heads; the last axis contiguous, the
batch and sequence strides free, so slices of a larger buffer need no copy), ``cos``/``sin`` [S, Dh]
fp32 (any row stride). Output [B, S, H*Dh] in qkv's dtype and the base-2 log-sum-exp [B, H, S] fp32.

RoPE is the rotate-half form: for x = [x1 | x2] (halves of Dh), rope(x) = [x1*c1 - x2*s1 | x2*c2 + x1*s2].
Q and K are loaded as two half tiles, rotated in fp32, rounded to the input dtype (as the reference
does) and fed to ``tl.dot`` as two half-depth products. Backward recomputes the rotation, and the
transposed rotation [d1*c1 + d2*s2 | d2*c2 - d1*s1] maps dQ_rot/dK_rot back to the packed gradient.
Any S works: key columns past S are masked to -inf, query rows past S are neither read nor written.
Head sizes 32/64/128 are tuned; any other even size up to 128 runs in tiles padded to a power of 2
(at least 16, tl.dot's minimum) with column masks. When the tables repeat their frequencies ([f, f],
as HRM builds them; checked once per table) only their first halves are loaded (SAME_HALVES).
Backward: a delta = rowsum(out * d_out) kernel, then one kernel per K/V tile (dK, dV) and one per
query tile (dQ), each recomputing the probabilities from the saved log-sum-exp (no atomics).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kernels._common import INTERPRET, AotSpec, check_launchable, last_dim_contiguous, next_power_of_2

LOG2E = 1.4426950408889634
HEAD_DIMS = (32, 64, 128)  # tuned and ahead-of-time checked; other even sizes up to 128 run in padded tiles
MAX_HEAD_DIM = 128


@dataclass(frozen=True)
class Tile:
    """One launch configuration: query rows per tile, key rows per tile, warps, pipeline stages."""

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int

    def label(self) -> str:
        return f"M{self.block_m}-N{self.block_n}-w{self.num_warps}-s{self.num_stages}"


@dataclass(frozen=True)
class AttentionConfig:
    fwd: Tile
    dkdv: Tile
    dq: Tile
    pre: Tile  # the delta preprocessing (block_n unused)


# Shipped GPU configurations, keyed by (head_dim, half precision?, duplicated-frequency tables?), chosen
# with `python -m kernels.aot`: no spills and at most 99 KB shared memory per block on sm_89 (and sm_90).
# Tiles holding rotated Q/K tiles are register-bound, hence the modest sizes; "ff" tables ([f, f]
# halves, as HRM builds them) need half the table registers and get larger tiles. fp32 uses exact
# (ieee) products on CUDA cores and small tiles. Nothing here has been timed on a GPU yet.
def _cfg(fwd: tuple, dkdv: tuple, dq: tuple, pre_block: int) -> AttentionConfig:
    return AttentionConfig(Tile(*fwd), Tile(*dkdv), Tile(*dq), Tile(pre_block, 0, 4, 1))


_GPU_CONFIGS: dict[tuple[int, bool, bool], AttentionConfig] = {
    (32, True, True): _cfg((128, 64, 4, 3), (64, 128, 8, 2), (128, 64, 8, 2), 128),
    (64, True, True): _cfg((128, 64, 4, 2), (32, 128, 8, 2), (128, 32, 8, 2), 128),
    (128, True, True): _cfg((128, 32, 8, 2), (32, 32, 4, 2), (32, 32, 4, 2), 64),
    (32, True, False): _cfg((128, 64, 4, 3), (64, 128, 8, 2), (128, 64, 8, 2), 128),
    (64, True, False): _cfg((128, 32, 4, 2), (16, 128, 8, 2), (64, 32, 8, 2), 128),
    (128, True, False): _cfg((64, 32, 4, 2), (16, 16, 4, 2), (32, 32, 4, 2), 64),
}
for _key, _fp32 in {
    32: _cfg((64, 32, 4, 2), (16, 32, 4, 2), (32, 32, 4, 2), 128),
    64: _cfg((32, 32, 4, 2), (16, 32, 4, 2), (32, 32, 4, 2), 128),
    128: _cfg((32, 16, 4, 2), (16, 32, 8, 1), (16, 16, 4, 2), 64),
}.items():
    _GPU_CONFIGS[(_key, False, True)] = _GPU_CONFIGS[(_key, False, False)] = _fp32
_GPU_CONFIGS[(128, False, False)] = _cfg((32, 16, 4, 2), (16, 16, 4, 1), (16, 16, 4, 2), 64)

# The interpreter's cost grows with the number of programs and loop steps: one config, large blocks.
_INTERPRET_TILE = Tile(32, 32, 4, 1)
_INTERPRET_CONFIG = AttentionConfig(_INTERPRET_TILE, _INTERPRET_TILE, _INTERPRET_TILE, _INTERPRET_TILE)


def padded_dims(head_dim: int) -> tuple[int, int]:
    """(HALF_PAD, D_PAD): power-of-2 tile widths >= 16 (tl.dot's minimum) for the half and full head."""
    if head_dim % 2 or not 2 <= head_dim <= MAX_HEAD_DIM:
        raise ValueError(f"rope_attention: head_dim {head_dim} not supported (even, at most {MAX_HEAD_DIM})")
    return max(16, next_power_of_2(head_dim // 2)), max(16, next_power_of_2(head_dim))


def _config_key(head_dim: int, half: bool, same_halves: bool) -> tuple[int, bool, bool]:
    # Padded head sizes carry column masks (more registers): they use the general-table tiles of their width.
    half_pad, d_pad = padded_dims(head_dim)
    padded = d_pad != head_dim or half_pad != head_dim // 2
    return max(32, d_pad), half, same_halves and not padded


def config_for(head_dim: int, dtype: torch.dtype, same_halves: bool) -> AttentionConfig:
    """The launch configuration; head sizes other than 32/64/128 use one of their padded width."""
    key = _config_key(head_dim, dtype != torch.float32, same_halves)
    return _INTERPRET_CONFIG if INTERPRET else _GPU_CONFIGS[key]


def dot_precision(dtype: torch.dtype) -> str:
    """fp32 inputs get exact products (the reference does not use TF32); half inputs use tensor cores."""
    return "ieee" if dtype == torch.float32 else "tf32"


# --------------------------------------------------------------------------- tile helpers
@triton.jit
def _tile_mask(row_mask, cols, N: tl.constexpr, NP: tl.constexpr):
    """Mask of a [rows, NP] tile holding N real columns (the column test only when the tile is padded)."""
    if N == NP:
        mask = row_mask[:, None]
    else:
        mask = row_mask[:, None] & (cols < N)[None, :]
    return mask


@triton.jit
def _load_cos_sin(
    COS, SIN, rows, row_mask, stride_cs, HALF: tl.constexpr, HALF_PAD: tl.constexpr, SAME_HALVES: tl.constexpr
):
    cols = tl.arange(0, HALF_PAD)
    offs = rows[:, None] * stride_cs + cols[None, :]
    mask = _tile_mask(row_mask, cols, HALF, HALF_PAD)
    c1 = tl.load(COS + offs, mask=mask, other=0.0).to(tl.float32)
    s1 = tl.load(SIN + offs, mask=mask, other=0.0).to(tl.float32)
    if SAME_HALVES:  # HRM's tables repeat the frequencies [f, f]: half the table loads and registers
        c2 = c1
        s2 = s1
    else:
        c2 = tl.load(COS + offs + HALF, mask=mask, other=0.0).to(tl.float32)
        s2 = tl.load(SIN + offs + HALF, mask=mask, other=0.0).to(tl.float32)
    return c1, c2, s1, s2


@triton.jit
def _load_rotated(
    base, rows, row_mask, stride_s, COS, SIN, stride_cs,
    HALF: tl.constexpr, HALF_PAD: tl.constexpr, SAME_HALVES: tl.constexpr,
):  # fmt: skip
    """Load a [rows, Dh] tile as two rotated halves [rows, HALF_PAD], rounded back to the tile's dtype."""
    cols = tl.arange(0, HALF_PAD)
    ptrs = base + rows[:, None] * stride_s + cols[None, :]
    mask = _tile_mask(row_mask, cols, HALF, HALF_PAD)
    x1 = tl.load(ptrs, mask=mask, other=0.0)
    x2 = tl.load(ptrs + HALF, mask=mask, other=0.0)
    c1, c2, s1, s2 = _load_cos_sin(COS, SIN, rows, row_mask, stride_cs, HALF, HALF_PAD, SAME_HALVES)
    x1f = x1.to(tl.float32)
    x2f = x2.to(tl.float32)
    r1 = (x1f * c1 - x2f * s1).to(x1.dtype)
    r2 = (x2f * c2 + x1f * s2).to(x1.dtype)
    return r1, r2


@triton.jit
def _store_unrotated(
    base, d1, d2, rows, row_mask, stride_s, COS, SIN, stride_cs,
    HALF: tl.constexpr, HALF_PAD: tl.constexpr, SAME_HALVES: tl.constexpr,
):  # fmt: skip
    """Store the gradient of a rotated tile (fp32 halves d1, d2) as the gradient of the unrotated input."""
    c1, c2, s1, s2 = _load_cos_sin(COS, SIN, rows, row_mask, stride_cs, HALF, HALF_PAD, SAME_HALVES)
    cols = tl.arange(0, HALF_PAD)
    ptrs = base + rows[:, None] * stride_s + cols[None, :]
    mask = _tile_mask(row_mask, cols, HALF, HALF_PAD)
    tl.store(ptrs, (d1 * c1 + d2 * s2).to(base.dtype.element_ty), mask=mask)
    tl.store(ptrs + HALF, (d2 * c2 - d1 * s1).to(base.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------- forward
@triton.jit
def _attn_fwd(
    QKV, COS, SIN, OUT, LSE,
    stride_qb, stride_qs, stride_ob, stride_os, stride_cs,
    S, H, qk_scale,
    HEAD_DIM: tl.constexpr, HALF_PAD: tl.constexpr, D_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PREC: tl.constexpr, SAME_HALVES: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    HALF: tl.constexpr = HEAD_DIM // 2
    batch = QKV + b.to(tl.int64) * stride_qb
    q_base = batch + h * HEAD_DIM
    k_base = batch + (H + h) * HEAD_DIM
    v_base = batch + (2 * H + h) * HEAD_DIM

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D_PAD)
    m_mask = offs_m < S
    q1, q2 = _load_rotated(q_base, offs_m, m_mask, stride_qs, COS, SIN, stride_cs, HALF, HALF_PAD, SAME_HALVES)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, D_PAD], tl.float32)
    for start_n in range(0, S, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_mask = offs_n < S
        k1, k2 = _load_rotated(k_base, offs_n, n_mask, stride_qs, COS, SIN, stride_cs, HALF, HALF_PAD, SAME_HALVES)
        qk = tl.dot(q1, tl.trans(k1), input_precision=DOT_PREC)
        qk = tl.dot(q2, tl.trans(k2), qk, input_precision=DOT_PREC)
        qk = tl.where(n_mask[None, :], qk * qk_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        p = tl.math.exp2(qk - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v_mask = _tile_mask(n_mask, offs_d, HEAD_DIM, D_PAD)
        v = tl.load(v_base + offs_n[:, None] * stride_qs + offs_d[None, :], mask=v_mask, other=0.0)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=DOT_PREC)
        m_i = m_new

    acc = acc / l_i[:, None]
    out_ptrs = OUT + b.to(tl.int64) * stride_ob + offs_m[:, None] * stride_os + h * HEAD_DIM + offs_d[None, :]
    tl.store(out_ptrs, acc.to(OUT.dtype.element_ty), mask=_tile_mask(m_mask, offs_d, HEAD_DIM, D_PAD))
    tl.store(LSE + pid_bh.to(tl.int64) * S + offs_m, m_i + tl.math.log2(l_i), mask=m_mask)


# --------------------------------------------------------------------------- backward
@triton.jit
def _attn_bwd_delta(
    OUT, DO, DELTA,
    stride_ob, stride_os, stride_db, stride_ds,
    S, H,
    HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    """delta[b, h, s] = sum_d out * d_out (fp32): the softmax-backward row term."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D_PAD)
    mask = _tile_mask(offs_m < S, offs_d, HEAD_DIM, D_PAD)
    o = tl.load(OUT + b.to(tl.int64) * stride_ob + offs_m[:, None] * stride_os + h * HEAD_DIM + offs_d[None, :],
                mask=mask, other=0.0)  # fmt: skip
    do = tl.load(DO + b.to(tl.int64) * stride_db + offs_m[:, None] * stride_ds + h * HEAD_DIM + offs_d[None, :],
                 mask=mask, other=0.0)  # fmt: skip
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + pid_bh.to(tl.int64) * S + offs_m, delta, mask=offs_m < S)


@triton.jit
def _attn_bwd_dkdv(
    QKV, COS, SIN, DO, LSE, DELTA, DQKV,
    stride_qb, stride_qs, stride_db, stride_ds, stride_gb, stride_gs, stride_cs,
    S, H, qk_scale, sm_scale,
    HEAD_DIM: tl.constexpr, HALF_PAD: tl.constexpr, D_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PREC: tl.constexpr, SAME_HALVES: tl.constexpr,
):  # fmt: skip
    """One program holds a K/V tile and streams all query tiles; writes dK (unrotated) and dV."""
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    HALF: tl.constexpr = HEAD_DIM // 2
    batch = QKV + b.to(tl.int64) * stride_qb
    q_base = batch + h * HEAD_DIM
    k_base = batch + (H + h) * HEAD_DIM
    v_base = batch + (2 * H + h) * HEAD_DIM
    do_base = DO + b.to(tl.int64) * stride_db + h * HEAD_DIM
    row_stats = pid_bh.to(tl.int64) * S

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D_PAD)
    n_mask = offs_n < S
    k1, k2 = _load_rotated(k_base, offs_n, n_mask, stride_qs, COS, SIN, stride_cs, HALF, HALF_PAD, SAME_HALVES)
    v_mask = _tile_mask(n_mask, offs_d, HEAD_DIM, D_PAD)
    v = tl.load(v_base + offs_n[:, None] * stride_qs + offs_d[None, :], mask=v_mask, other=0.0)

    dk1 = tl.zeros([BLOCK_N, HALF_PAD], tl.float32)
    dk2 = tl.zeros([BLOCK_N, HALF_PAD], tl.float32)
    dv = tl.zeros([BLOCK_N, D_PAD], tl.float32)
    for start_m in range(0, S, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        m_mask = offs_m < S
        q1, q2 = _load_rotated(q_base, offs_m, m_mask, stride_qs, COS, SIN, stride_cs, HALF, HALF_PAD, SAME_HALVES)
        do_mask = _tile_mask(m_mask, offs_d, HEAD_DIM, D_PAD)
        do = tl.load(do_base + offs_m[:, None] * stride_ds + offs_d[None, :], mask=do_mask, other=0.0)
        lse = tl.load(LSE + row_stats + offs_m, mask=m_mask, other=0.0)
        delta = tl.load(DELTA + row_stats + offs_m, mask=m_mask, other=0.0)

        qk_t = tl.dot(k1, tl.trans(q1), input_precision=DOT_PREC)
        qk_t = tl.dot(k2, tl.trans(q2), qk_t, input_precision=DOT_PREC)
        p_t = tl.math.exp2(qk_t * qk_scale - lse[None, :])
        p_t = tl.where(m_mask[None, :], p_t, 0.0)
        dv = tl.dot(p_t.to(do.dtype), do, dv, input_precision=DOT_PREC)
        dp_t = tl.dot(v, tl.trans(do), input_precision=DOT_PREC)
        ds_t = (p_t * (dp_t - delta[None, :])).to(q1.dtype)
        dk1 = tl.dot(ds_t, q1, dk1, input_precision=DOT_PREC)
        dk2 = tl.dot(ds_t, q2, dk2, input_precision=DOT_PREC)

    grad = DQKV + b.to(tl.int64) * stride_gb
    _store_unrotated(grad + (H + h) * HEAD_DIM, dk1 * sm_scale, dk2 * sm_scale, offs_n, n_mask, stride_gs,
                     COS, SIN, stride_cs, HALF, HALF_PAD, SAME_HALVES)  # fmt: skip
    dv_ptrs = grad + (2 * H + h) * HEAD_DIM + offs_n[:, None] * stride_gs + offs_d[None, :]
    tl.store(dv_ptrs, dv.to(DQKV.dtype.element_ty), mask=v_mask)


@triton.jit
def _attn_bwd_dq(
    QKV, COS, SIN, DO, LSE, DELTA, DQKV,
    stride_qb, stride_qs, stride_db, stride_ds, stride_gb, stride_gs, stride_cs,
    S, H, qk_scale, sm_scale,
    HEAD_DIM: tl.constexpr, HALF_PAD: tl.constexpr, D_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PREC: tl.constexpr, SAME_HALVES: tl.constexpr,
):  # fmt: skip
    """One program holds a query tile and streams all K/V tiles; writes dQ (unrotated)."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    HALF: tl.constexpr = HEAD_DIM // 2
    batch = QKV + b.to(tl.int64) * stride_qb
    q_base = batch + h * HEAD_DIM
    k_base = batch + (H + h) * HEAD_DIM
    v_base = batch + (2 * H + h) * HEAD_DIM
    row_stats = pid_bh.to(tl.int64) * S

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D_PAD)
    m_mask = offs_m < S
    q1, q2 = _load_rotated(q_base, offs_m, m_mask, stride_qs, COS, SIN, stride_cs, HALF, HALF_PAD, SAME_HALVES)
    do = tl.load(DO + b.to(tl.int64) * stride_db + h * HEAD_DIM + offs_m[:, None] * stride_ds + offs_d[None, :],
                 mask=_tile_mask(m_mask, offs_d, HEAD_DIM, D_PAD), other=0.0)  # fmt: skip
    lse = tl.load(LSE + row_stats + offs_m, mask=m_mask, other=0.0)
    delta = tl.load(DELTA + row_stats + offs_m, mask=m_mask, other=0.0)

    dq1 = tl.zeros([BLOCK_M, HALF_PAD], tl.float32)
    dq2 = tl.zeros([BLOCK_M, HALF_PAD], tl.float32)
    for start_n in range(0, S, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_mask = offs_n < S
        k1, k2 = _load_rotated(k_base, offs_n, n_mask, stride_qs, COS, SIN, stride_cs, HALF, HALF_PAD, SAME_HALVES)
        v_mask = _tile_mask(n_mask, offs_d, HEAD_DIM, D_PAD)
        v = tl.load(v_base + offs_n[:, None] * stride_qs + offs_d[None, :], mask=v_mask, other=0.0)
        qk = tl.dot(q1, tl.trans(k1), input_precision=DOT_PREC)
        qk = tl.dot(q2, tl.trans(k2), qk, input_precision=DOT_PREC)
        p = tl.math.exp2(qk * qk_scale - lse[:, None])
        p = tl.where(n_mask[None, :], p, 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PREC)
        ds = (p * (dp - delta[:, None])).to(k1.dtype)
        dq1 = tl.dot(ds, k1, dq1, input_precision=DOT_PREC)
        dq2 = tl.dot(ds, k2, dq2, input_precision=DOT_PREC)

    grad = DQKV + b.to(tl.int64) * stride_gb + h * HEAD_DIM
    _store_unrotated(grad, dq1 * sm_scale, dq2 * sm_scale, offs_m, m_mask, stride_gs,
                     COS, SIN, stride_cs, HALF, HALF_PAD, SAME_HALVES)  # fmt: skip


# --------------------------------------------------------------------------- host wrappers
def _check(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, num_heads: int) -> int:
    check_launchable(qkv, "rope_attention")
    if qkv.dim() != 3 or qkv.shape[-1] % (3 * num_heads) != 0:
        raise ValueError(f"rope_attention: qkv must be [B, S, 3*H*Dh] with H={num_heads}, got {tuple(qkv.shape)}")
    head_dim = qkv.shape[-1] // (3 * num_heads)
    padded_dims(head_dim)  # raises on an unsupported head size
    seq = qkv.shape[1]
    for name, t in (("cos", cos), ("sin", sin)):
        if t.shape != (seq, head_dim) or t.dtype != torch.float32 or t.device != qkv.device:
            raise ValueError(f"rope_attention: {name} must be fp32 [S={seq}, Dh={head_dim}] on {qkv.device}, "
                             f"got {t.dtype} {tuple(t.shape)} on {t.device}")  # fmt: skip
    return head_dim


_SAME_HALVES_ATTR = "_hrm_fast_rope_same_halves"


def _halves_equal(table: torch.Tensor) -> bool:
    """Whether table[:, :Dh/2] == table[:, Dh/2:], cached on the tensor object (keyed by its version).

    The check needs a device sync, so it runs once per table (RoPE tables are long-lived buffers). While
    a CUDA graph is being captured an unchecked table takes the general path (no sync, still exact).
    """
    version = None if table.is_inference() else table._version  # inference tensors have no version counter
    cached = getattr(table, _SAME_HALVES_ATTR, None)
    if version is not None and cached is not None and cached[0] == version:
        return cached[1]
    if table.is_cuda and torch.cuda.is_current_stream_capturing():
        return False
    half = table.shape[1] // 2
    equal = bool(torch.equal(table[:, :half], table[:, half:]))
    if version is not None:
        setattr(table, _SAME_HALVES_ATTR, (version, equal))
    return equal


def _rope_tables(cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    same_halves = _halves_equal(cos) and _halves_equal(sin)
    cos, sin = last_dim_contiguous(cos), last_dim_contiguous(sin)
    if cos.stride(0) != sin.stride(0):
        cos, sin = cos.contiguous(), sin.contiguous()
    return cos, sin, same_halves


def forward(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, num_heads: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """qkv [B, S, 3*H*Dh] -> (out [B, S, H*Dh] in qkv's dtype, lse [B, H, S] fp32, base 2, scaled logits)."""
    head_dim = _check(qkv, cos, sin, num_heads)
    qkv = last_dim_contiguous(qkv)
    cos, sin, same_halves = _rope_tables(cos, sin)
    batch, seq, _ = qkv.shape
    out = torch.empty(batch, seq, num_heads * head_dim, device=qkv.device, dtype=qkv.dtype)
    lse = torch.empty(batch, num_heads, seq, device=qkv.device, dtype=torch.float32)
    tile = config_for(head_dim, qkv.dtype, same_halves).fwd
    half_pad, d_pad = padded_dims(head_dim)
    sm_scale = 1.0 / math.sqrt(head_dim)
    grid = (triton.cdiv(seq, tile.block_m), batch * num_heads)
    _attn_fwd[grid](
        qkv, cos, sin, out, lse,
        qkv.stride(0), qkv.stride(1), out.stride(0), out.stride(1), cos.stride(0),
        seq, num_heads, sm_scale * LOG2E,
        HEAD_DIM=head_dim, HALF_PAD=half_pad, D_PAD=d_pad, BLOCK_M=tile.block_m, BLOCK_N=tile.block_n,
        DOT_PREC=dot_precision(qkv.dtype),
        SAME_HALVES=same_halves, num_warps=tile.num_warps, num_stages=tile.num_stages,
    )  # fmt: skip
    return out, lse


def backward(
    grad_out: torch.Tensor,
    qkv: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    num_heads: int,
) -> torch.Tensor:
    """Gradient wrt the packed qkv [B, S, 3*H*Dh] (same dtype, contiguous), given grad_out [B, S, H*Dh]."""
    head_dim = _check(qkv, cos, sin, num_heads)
    qkv = last_dim_contiguous(qkv)
    cos, sin, same_halves = _rope_tables(cos, sin)
    grad_out = last_dim_contiguous(grad_out.to(qkv.dtype))
    out = last_dim_contiguous(out)
    batch, seq, _ = qkv.shape
    cfg = config_for(head_dim, qkv.dtype, same_halves)
    half_pad, d_pad = padded_dims(head_dim)
    sm_scale = 1.0 / math.sqrt(head_dim)
    prec = dot_precision(qkv.dtype)

    delta = torch.empty(batch, num_heads, seq, device=qkv.device, dtype=torch.float32)
    grid = (triton.cdiv(seq, cfg.pre.block_m), batch * num_heads)
    _attn_bwd_delta[grid](
        out, grad_out, delta, out.stride(0), out.stride(1), grad_out.stride(0), grad_out.stride(1), seq, num_heads,
        HEAD_DIM=head_dim, D_PAD=d_pad, BLOCK_M=cfg.pre.block_m, num_warps=cfg.pre.num_warps,
        num_stages=cfg.pre.num_stages,
    )  # fmt: skip

    dqkv = torch.empty(qkv.shape, device=qkv.device, dtype=qkv.dtype)  # every element is written below
    common = (
        qkv, cos, sin, grad_out, lse, delta, dqkv,
        qkv.stride(0), qkv.stride(1), grad_out.stride(0), grad_out.stride(1), dqkv.stride(0), dqkv.stride(1),
        cos.stride(0), seq, num_heads, sm_scale * LOG2E, sm_scale,
    )  # fmt: skip
    t = cfg.dkdv
    _attn_bwd_dkdv[(triton.cdiv(seq, t.block_n), batch * num_heads)](
        *common, HEAD_DIM=head_dim, HALF_PAD=half_pad, D_PAD=d_pad, BLOCK_M=t.block_m, BLOCK_N=t.block_n,
        DOT_PREC=prec,
        SAME_HALVES=same_halves, num_warps=t.num_warps, num_stages=t.num_stages,
    )  # fmt: skip
    t = cfg.dq
    _attn_bwd_dq[(triton.cdiv(seq, t.block_m), batch * num_heads)](
        *common, HEAD_DIM=head_dim, HALF_PAD=half_pad, D_PAD=d_pad, BLOCK_M=t.block_m, BLOCK_N=t.block_n,
        DOT_PREC=prec,
        SAME_HALVES=same_halves, num_warps=t.num_warps, num_stages=t.num_stages,
    )  # fmt: skip
    return dqkv


# --------------------------------------------------------------------------- ahead-of-time specs
def aot_specs(quick: bool = False) -> list[AotSpec]:
    """Every shipped GPU configuration (bf16 stands for both half types), plus two padded head sizes (16, 48).

    ``quick``: the HRM path only (head_dim 64, bf16, duplicated-frequency tables).
    """
    variants = list(_GPU_CONFIGS) + [(16, True, True), (48, True, True)]
    if quick:
        variants = [(64, True, True)]
    specs = []
    for head_dim, half, same_halves in variants:
        half_pad, d_pad = padded_dims(head_dim)
        cfg = _GPU_CONFIGS[_config_key(head_dim, half, same_halves)]
        dt = "bf16" if half else "fp32"
        prec = "tf32" if half else "ieee"
        tables = {"QKV": dt, "COS": "fp32", "SIN": "fp32"}
        bwd_ptrs = {**tables, "DO": dt, "LSE": "fp32", "DELTA": "fp32", "DQKV": dt}
        variant = f"D{head_dim} {dt} {'ff' if same_halves else 'gen'}"
        dims = {"HEAD_DIM": head_dim, "HALF_PAD": half_pad, "D_PAD": d_pad}
        for name, fn, tile, ptrs, floats in (
            ("attn_fwd", _attn_fwd, cfg.fwd, {**tables, "OUT": dt, "LSE": "fp32"}, ("qk_scale",)),
            ("attn_bwd_dkdv", _attn_bwd_dkdv, cfg.dkdv, bwd_ptrs, ("qk_scale", "sm_scale")),
            ("attn_bwd_dq", _attn_bwd_dq, cfg.dq, bwd_ptrs, ("qk_scale", "sm_scale")),
        ):
            constexprs = {**dims, "BLOCK_M": tile.block_m, "BLOCK_N": tile.block_n, "DOT_PREC": prec,
                          "SAME_HALVES": same_halves}  # fmt: skip
            specs.append(AotSpec(name, f"{variant} {tile.label()}", fn, ptrs, floats, constexprs,
                                 tile.num_warps, tile.num_stages, needs_mma=half))  # fmt: skip
        if same_halves:  # the delta kernel does not read the tables: once per head size and dtype
            pre = cfg.pre
            specs.append(AotSpec("attn_bwd_delta", f"D{head_dim} {dt} M{pre.block_m}-w{pre.num_warps}",
                                 _attn_bwd_delta, {"OUT": dt, "DO": dt, "DELTA": "fp32"}, (),
                                 {"HEAD_DIM": head_dim, "D_PAD": d_pad, "BLOCK_M": pre.block_m},
                                 pre.num_warps, pre.num_stages, needs_mma=False))  # fmt: skip
    return specs
