"""SwiGLU on the packed gate/up projection: out = silu(gate) * up, forward and backward.

``gate_up`` [..., 2*I] holds [gate | up] (last axis contiguous, row stride free). Math in fp32, one
rounding to the input dtype. Backward recomputes the sigmoid (nothing but the input is saved) and
writes the packed gradient [..., 2*I] = [d_gate | d_up] directly (no concatenation).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels._common import INTERPRET, RowTile, check_launchable, last_dim_contiguous, next_power_of_2, row_aot_specs


def gpu_config(inner: int) -> RowTile:
    block_c = min(next_power_of_2(inner), 512)  # 512 divides HRM's 1536 (no half-empty column tile)
    return RowTile(max(1, 4096 // block_c), block_c, 4)


def config_for(inner: int) -> RowTile:
    if INTERPRET:  # few, large programs
        return RowTile(64, min(next_power_of_2(inner), 256), 4)
    return gpu_config(inner)


# Widths whose GPU configs `python -m kernels.aot` checks: hidden 384 and 512 (HRM, the seed) -> inner 1024, 1536.
AOT_INNER = (1024, 1536)


@triton.jit
def _swiglu_fwd(
    GU, OUT, R, INNER, stride_gu, stride_out,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = (rows < R)[:, None] & (cols < INNER)[None, :]
    rows64 = rows.to(tl.int64)[:, None]
    gate_ptrs = GU + rows64 * stride_gu + cols[None, :]
    g = tl.load(gate_ptrs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(gate_ptrs + INNER, mask=mask, other=0.0).to(tl.float32)
    out = g * tl.sigmoid(g) * u
    tl.store(OUT + rows64 * stride_out + cols[None, :], out.to(OUT.dtype.element_ty), mask=mask)


@triton.jit
def _swiglu_bwd(
    GU, DOUT, DGU, R, INNER, stride_gu, stride_dout, stride_dgu,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = (rows < R)[:, None] & (cols < INNER)[None, :]
    rows64 = rows.to(tl.int64)[:, None]
    gate_ptrs = GU + rows64 * stride_gu + cols[None, :]
    g = tl.load(gate_ptrs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(gate_ptrs + INNER, mask=mask, other=0.0).to(tl.float32)
    dout = tl.load(DOUT + rows64 * stride_dout + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    sig = tl.sigmoid(g)
    silu = g * sig
    d_gate = dout * u * sig * (1.0 + g * (1.0 - sig))
    d_up = dout * silu
    grad_ptrs = DGU + rows64 * stride_dgu + cols[None, :]
    tl.store(grad_ptrs, d_gate.to(DGU.dtype.element_ty), mask=mask)
    tl.store(grad_ptrs + INNER, d_up.to(DGU.dtype.element_ty), mask=mask)


def _rows(gate_up: torch.Tensor) -> tuple[torch.Tensor, int]:
    check_launchable(gate_up, "swiglu")
    if gate_up.shape[-1] % 2:
        raise ValueError(f"swiglu: last axis must be even ([gate | up]), got {tuple(gate_up.shape)}")
    gu = last_dim_contiguous(gate_up).reshape(-1, gate_up.shape[-1])  # a view whenever the rows are uniform
    return gu, gate_up.shape[-1] // 2


def forward(gate_up: torch.Tensor) -> torch.Tensor:
    """gate_up [..., 2*I] -> silu(gate) * up [..., I] in the input dtype."""
    gu, inner = _rows(gate_up)
    out = torch.empty(gu.shape[0], inner, device=gu.device, dtype=gu.dtype)
    tile = config_for(inner)
    grid = (triton.cdiv(gu.shape[0], tile.block_r), triton.cdiv(inner, tile.block_c))
    _swiglu_fwd[grid](gu, out, gu.shape[0], inner, gu.stride(0), out.stride(0),
                      BLOCK_R=tile.block_r, BLOCK_C=tile.block_c, num_warps=tile.num_warps)  # fmt: skip
    return out.view(*gate_up.shape[:-1], inner)


def backward(grad_out: torch.Tensor, gate_up: torch.Tensor) -> torch.Tensor:
    """grad_out [..., I], gate_up [..., 2*I] -> d gate_up [..., 2*I] (contiguous, input dtype)."""
    gu, inner = _rows(gate_up)
    dout = last_dim_contiguous(grad_out.to(gu.dtype)).reshape(-1, inner)
    dgu = torch.empty(gu.shape, device=gu.device, dtype=gu.dtype)
    tile = config_for(inner)
    grid = (triton.cdiv(gu.shape[0], tile.block_r), triton.cdiv(inner, tile.block_c))
    _swiglu_bwd[grid](gu, dout, dgu, gu.shape[0], inner, gu.stride(0), dout.stride(0), dgu.stride(0),
                      BLOCK_R=tile.block_r, BLOCK_C=tile.block_c, num_warps=tile.num_warps)  # fmt: skip
    return dgu.view(gate_up.shape)


def aot_specs(quick: bool = False) -> list:
    """AotSpecs of the GPU configs at the seed and HRM widths, bf16 and fp32 (``quick``: HRM width, bf16)."""
    return row_aot_specs("swiglu", "I", AOT_INNER, gpu_config, (
        ("fwd", _swiglu_fwd, {"GU": None, "OUT": None}, ()),
        ("bwd", _swiglu_bwd, {"GU": None, "DOUT": None, "DGU": None}, ()),
    ), quick)  # fmt: skip
