"""The one place that chooses how each hot op runs.

Backends: ``reference`` (pure PyTorch, :mod:`hrm_fast.ops.reference`), ``triton`` (the kernels in
:mod:`kernels`, registered as ``torch.library`` custom ops in :mod:`hrm_fast.ops.fused`) and
``auto`` (Triton for CUDA tensors, reference otherwise). Select with the environment variable
``HRM_FAST_OPS`` or :func:`set_backend`; the model config's ``model.ops`` calls the latter.

The ACT carry update always goes through :mod:`hrm_fast.ops.act` (the C++/CUDA extension when it
is built, the reference otherwise).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from hrm_fast.ops import reference
from hrm_fast.ops.act import act_halt, act_reset, extension_available

BACKENDS = ("auto", "reference", "triton")
_backend = os.environ.get("HRM_FAST_OPS", "auto")
if _backend not in BACKENDS:
    raise ValueError(f"HRM_FAST_OPS={_backend!r}: expected one of {', '.join(BACKENDS)}")


def get_backend() -> str:
    return _backend


def set_backend(name: str) -> None:
    """Force ``reference`` or ``triton`` for every op, or ``auto`` (Triton on CUDA tensors)."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"ops backend {name!r}: expected one of {', '.join(BACKENDS)}")
    _backend = name


@contextlib.contextmanager
def backend(name: str) -> Iterator[None]:
    previous = _backend
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def _use_triton(t: torch.Tensor) -> bool:
    if _backend == "reference":
        return False
    if _backend == "triton":
        return True
    return t.is_cuda


def _fused():
    from hrm_fast.ops import fused  # imported lazily: it imports triton

    return fused


def rope_attention(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, num_heads: int) -> torch.Tensor:
    """qkv [B, S, 3*H*Dh], cos/sin [S, Dh] fp32 -> [B, S, H*Dh]; RoPE on q, k then non-causal attention."""
    if _use_triton(qkv):
        return _fused().rope_attention(qkv, cos, sin, num_heads)
    return reference.rope_attention(qkv, cos, sin, num_heads)


def swiglu(gate_up: torch.Tensor) -> torch.Tensor:
    """gate_up [..., 2*I] = [gate | up] -> silu(gate) * up [..., I]."""
    if _use_triton(gate_up):
        return _fused().swiglu(gate_up)
    return reference.swiglu(gate_up)


def add_rms_norm(x: torch.Tensor, delta: torch.Tensor, eps: float) -> torch.Tensor:
    """rms_norm(x + delta) over the last axis (parameter-free, fp32 statistics)."""
    if _use_triton(x):
        return _fused().add_rms_norm(x, delta, eps)
    return reference.add_rms_norm(x, delta, eps)


__all__ = [
    "BACKENDS",
    "act_halt",
    "act_reset",
    "add_rms_norm",
    "backend",
    "extension_available",
    "get_backend",
    "reference",
    "rope_attention",
    "set_backend",
    "swiglu",
]
