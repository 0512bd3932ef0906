"""Shared helpers for the Triton kernels: interpreter detection, launch guards, config records."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

# Read once, at import: the @triton.jit decorators of the kernel modules are bound to this mode.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_launchable(t: torch.Tensor, what: str) -> None:
    """Raise a clear error when a Triton kernel cannot run on ``t`` (CPU tensors need the interpreter)."""
    if t.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{what}: dtype {t.dtype} not supported (float32, float16 or bfloat16)")
    if not t.is_cuda and not INTERPRET:
        raise RuntimeError(
            f"{what}: Triton kernels need CUDA tensors, or TRITON_INTERPRET=1 set before `kernels` is imported "
            f"(got a {t.device.type} tensor); use the reference ops instead"
        )


def last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    """Return ``t`` if its last axis has unit stride (other strides are passed to kernels), else a copy."""
    return t if t.stride(-1) == 1 else t.contiguous()


def next_power_of_2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


@dataclass(frozen=True)
class AotSpec:
    """One kernel configuration to compile ahead of time (see kernels.aot).

    ``pointers`` maps each pointer argument to its element type ("bf16", "fp32", ...), ``floats`` names
    the fp32 scalar arguments; every other non-constexpr argument is an i32. ``needs_mma``: the kernel
    does half-precision tl.dot, so its PTX must use tensor-core instructions.
    """

    kernel: str
    config: str
    fn: object
    pointers: dict[str, str]
    floats: tuple[str, ...]
    constexprs: dict[str, object]
    num_warps: int
    num_stages: int
    needs_mma: bool


@dataclass(frozen=True)
class RowTile:
    """Rows x columns per program for the row-wise kernels (SwiGLU, add+RMSNorm)."""

    block_r: int
    block_c: int
    num_warps: int

    def label(self) -> str:
        return f"R{self.block_r}-C{self.block_c}-w{self.num_warps}"


def row_aot_specs(
    name: str, prefix: str, widths: tuple[int, ...], gpu_config: Callable[[int], RowTile], kernels: tuple, quick: bool
) -> list[AotSpec]:
    """AotSpecs of a row-wise kernel pair at each width, bf16 and fp32 (``quick``: the last width, bf16).

    ``kernels``: (suffix, fn, pointers, floats) per kernel; ``pointers`` maps each pointer argument to its
    element type, None for the tensor dtype. ``gpu_config(width)`` gives the RowTile.
    """
    specs = []
    for width in widths[-1:] if quick else widths:
        tile = gpu_config(width)
        for dt in ("bf16",) if quick else ("bf16", "fp32"):
            label = f"{prefix}{width} {dt} {tile.label()}"
            consts = {"BLOCK_R": tile.block_r, "BLOCK_C": tile.block_c}
            for suffix, fn, pointers, floats in kernels:
                specs.append(AotSpec(f"{name}_{suffix}", label, fn, {k: v or dt for k, v in pointers.items()}, floats,
                                     consts, tile.num_warps, 1, needs_mma=False))  # fmt: skip
    return specs
