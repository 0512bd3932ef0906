"""Fused residual add + parameter-free RMSNorm (HRM's post-norm ``rms_norm(x + delta)``).

x, delta [..., D] (same dtype; last axis contiguous). Forward: h = x + delta rounded to the input
dtype (as the reference adds in that dtype), statistics in fp32, y = h * rstd rounded to the dtype;
it saves rstd [rows] fp32. Backward is row-local (no weight): it recomputes h from x and delta and
writes dh = rstd * (dy - y_hat * mean(dy * y_hat)) into two buffers, the gradients of x and delta.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels._common import INTERPRET, RowTile, check_launchable, last_dim_contiguous, next_power_of_2, row_aot_specs

MAX_WIDTH = 16384  # one row lives in registers


def gpu_config(width: int) -> RowTile:
    block_c = next_power_of_2(width)
    return RowTile(max(1, 2048 // block_c), block_c, 4 if block_c <= 2048 else 8)


def config_for(width: int) -> RowTile:
    if INTERPRET:
        return RowTile(64, next_power_of_2(width), 4)
    return gpu_config(width)


# Widths whose GPU configs `python -m kernels.aot` checks: hidden 384 and 512 (HRM, the seed).
AOT_WIDTHS = (384, 512)


@triton.jit
def _add_rms_norm_fwd(
    X, DELTA, Y, RSTD, R, D, stride_x, stride_d, stride_y, eps,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_C)
    row_mask = rows < R
    mask = row_mask[:, None] & (cols < D)[None, :]
    rows64 = rows.to(tl.int64)[:, None]
    x = tl.load(X + rows64 * stride_x + cols[None, :], mask=mask, other=0.0)
    d = tl.load(DELTA + rows64 * stride_d + cols[None, :], mask=mask, other=0.0)
    # fp32 sum then one rounding = the correctly rounded add in x's dtype (fp32 has > 2p+1 bits)
    h = (x.to(tl.float32) + d.to(tl.float32)).to(x.dtype).to(tl.float32)
    rstd = tl.math.rsqrt(tl.sum(h * h, 1) / D + eps)
    tl.store(Y + rows64 * stride_y + cols[None, :], (h * rstd[:, None]).to(Y.dtype.element_ty), mask=mask)
    tl.store(RSTD + rows, rstd, mask=row_mask)


@triton.jit
def _add_rms_norm_bwd(
    X, DELTA, RSTD, DY, DX, DDELTA, R, D, stride_x, stride_d, stride_dy, stride_dx,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_C)
    row_mask = rows < R
    mask = row_mask[:, None] & (cols < D)[None, :]
    rows64 = rows.to(tl.int64)[:, None]
    x = tl.load(X + rows64 * stride_x + cols[None, :], mask=mask, other=0.0)
    d = tl.load(DELTA + rows64 * stride_d + cols[None, :], mask=mask, other=0.0)
    h = (x.to(tl.float32) + d.to(tl.float32)).to(x.dtype).to(tl.float32)
    rstd = tl.load(RSTD + rows, mask=row_mask, other=0.0)
    dy = tl.load(DY + rows64 * stride_dy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    y_hat = h * rstd[:, None]
    mean_dy_y = tl.sum(dy * y_hat, 1) / D
    dh = (rstd[:, None] * (dy - y_hat * mean_dy_y[:, None])).to(DX.dtype.element_ty)
    offs = rows64 * stride_dx + cols[None, :]
    tl.store(DX + offs, dh, mask=mask)
    tl.store(DDELTA + offs, dh, mask=mask)


def _rows(x: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    check_launchable(x, "add_rms_norm")
    if delta.shape != x.shape or delta.dtype != x.dtype or delta.device != x.device:
        raise ValueError(f"add_rms_norm: delta {delta.dtype} {tuple(delta.shape)} must match x "
                         f"{x.dtype} {tuple(x.shape)}")  # fmt: skip
    if x.shape[-1] > MAX_WIDTH:
        raise ValueError(f"add_rms_norm: last axis {x.shape[-1]} wider than {MAX_WIDTH}")
    width = x.shape[-1]
    return last_dim_contiguous(x).reshape(-1, width), last_dim_contiguous(delta).reshape(-1, width)


def forward(x: torch.Tensor, delta: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x, delta [..., D] -> (rms_norm(x + delta) [..., D] in x's dtype, rstd [rows] fp32)."""
    x2, d2 = _rows(x, delta)
    rows, width = x2.shape
    y = torch.empty(rows, width, device=x.device, dtype=x.dtype)
    rstd = torch.empty(rows, device=x.device, dtype=torch.float32)
    tile = config_for(width)
    _add_rms_norm_fwd[(triton.cdiv(rows, tile.block_r),)](
        x2, d2, y, rstd, rows, width, x2.stride(0), d2.stride(0), y.stride(0), eps,
        BLOCK_R=tile.block_r, BLOCK_C=tile.block_c, num_warps=tile.num_warps,
    )  # fmt: skip
    return y.view(x.shape), rstd


def backward(
    grad_y: torch.Tensor, x: torch.Tensor, delta: torch.Tensor, rstd: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients wrt x and wrt delta (equal values, separate buffers), each [..., D] in x's dtype."""
    x2, d2 = _rows(x, delta)
    rows, width = x2.shape
    dy = last_dim_contiguous(grad_y.to(x.dtype)).reshape(-1, width)
    dx = torch.empty(rows, width, device=x.device, dtype=x.dtype)
    ddelta = torch.empty_like(dx)
    tile = config_for(width)
    _add_rms_norm_bwd[(triton.cdiv(rows, tile.block_r),)](
        x2, d2, rstd, dy, dx, ddelta, rows, width, x2.stride(0), d2.stride(0), dy.stride(0), dx.stride(0),
        BLOCK_R=tile.block_r, BLOCK_C=tile.block_c, num_warps=tile.num_warps,
    )  # fmt: skip
    return dx.view(x.shape), ddelta.view(x.shape)


def aot_specs(quick: bool = False) -> list:
    """AotSpecs of the GPU configs at the seed and HRM hidden sizes, bf16 and fp32 (``quick``: HRM width, bf16)."""
    return row_aot_specs("add_rms_norm", "D", AOT_WIDTHS, gpu_config, (
        ("fwd", _add_rms_norm_fwd, {"X": None, "DELTA": None, "Y": None, "RSTD": "fp32"}, ("eps",)),
        ("bwd", _add_rms_norm_bwd, {"X": None, "DELTA": None, "RSTD": "fp32", "DY": None, "DX": None, "DDELTA": None},
         ()),
    ), quick)  # fmt: skip
