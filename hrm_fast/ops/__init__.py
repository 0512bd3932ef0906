"""The one place that chooses how each hot op runs.

One module per op holds its pure-PyTorch twin (``reference``), its Triton ``torch.library`` custom op
(``fused``; the kernels in :mod:`kernels`) and its dispatcher, re-exported here:
:func:`rope_attention`, :func:`swiglu`, :func:`add_rms_norm` and the ACT carry update
:func:`act_reset` / :func:`act_halt` (:mod:`hrm_fast.ops.act`: the C++/CUDA extension when it is
built, the reference otherwise). ``hrm_fast.ops.swiglu`` etc. name the dispatchers; reach a module's
parts with ``from hrm_fast.ops.swiglu import fused, reference``.

Triton backends: ``reference`` (pure PyTorch), ``triton`` and ``auto`` (Triton for CUDA tensors,
reference otherwise). Select with the environment variable ``HRM_FAST_OPS`` or :func:`set_backend`;
the model config's ``model.ops`` calls the latter.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from hrm_fast.ops.act import act_halt, act_reset, extension_available
from hrm_fast.ops.add_rms_norm import add_rms_norm
from hrm_fast.ops.rope_attention import rope_attention
from hrm_fast.ops.swiglu import swiglu

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


def use_triton(t: torch.Tensor) -> bool:
    """Whether the dispatchers run the Triton op on ``t`` under the current backend."""
    if _backend == "reference":
        return False
    if _backend == "triton":
        return True
    return t.is_cuda


__all__ = [
    "BACKENDS",
    "act_halt",
    "act_reset",
    "add_rms_norm",
    "backend",
    "extension_available",
    "get_backend",
    "rope_attention",
    "set_backend",
    "swiglu",
    "use_triton",
]
