"""HRM's post-norm residual rms_norm(x + delta): the reference, the Triton custom op, the dispatcher.

The custom op ``hrm_fast::add_rms_norm`` (kernel: :mod:`kernels.add_rms_norm`, imported at the first
call) returns the rstd its backward needs; :func:`fused` returns only the result. ``custom_op`` with
fake and autograd rules, opaque to ``torch.compile``. Double backward is not supported.
"""

from __future__ import annotations

import torch

from hrm_fast import ops

Tensor = torch.Tensor


def rms_norm(x: Tensor, eps: float) -> Tensor:
    """Parameter-free RMSNorm over the last axis, computed in fp32, cast back to x's dtype."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps)
    return xf.to(x.dtype)


def reference(x: Tensor, delta: Tensor, eps: float) -> Tensor:
    """rms_norm(x + delta); the add happens in x's dtype, as in HRM."""
    return rms_norm(x + delta, eps)


@torch.library.custom_op("hrm_fast::add_rms_norm", mutates_args=())
def _op(x: Tensor, delta: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    from kernels import add_rms_norm as kernel  # imported lazily: it imports triton
    return kernel.forward(x, delta, eps)


@_op.register_fake
def _(x: Tensor, delta: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    return torch.empty(x.shape, dtype=x.dtype, device=x.device), x.new_empty(rows, dtype=torch.float32)


@torch.library.custom_op("hrm_fast::add_rms_norm_backward", mutates_args=())
def _backward_op(grad_y: Tensor, x: Tensor, delta: Tensor, rstd: Tensor) -> tuple[Tensor, Tensor]:
    from kernels import add_rms_norm as kernel
    return kernel.backward(grad_y, x, delta, rstd)


@_backward_op.register_fake
def _(grad_y: Tensor, x: Tensor, delta: Tensor, rstd: Tensor) -> tuple[Tensor, Tensor]:
    return (torch.empty(x.shape, dtype=x.dtype, device=x.device),
            torch.empty(x.shape, dtype=x.dtype, device=x.device))  # fmt: skip


def _setup_context(ctx, inputs, output) -> None:
    x, delta, _eps = inputs
    _y, rstd = output
    ctx.mark_non_differentiable(rstd)
    ctx.save_for_backward(x, delta, rstd)


def _backward(ctx, grad_y: Tensor, _grad_rstd: Tensor | None):
    x, delta, rstd = ctx.saved_tensors
    dx, ddelta = _backward_op(grad_y, x, delta, rstd)
    return dx, ddelta, None


_op.register_autograd(_backward, setup_context=_setup_context)


def fused(x: Tensor, delta: Tensor, eps: float) -> Tensor:
    """The Triton kernel: the add in the promoted dtype, fp32 statistics, result in that dtype.

    Mixed dtypes and broadcasting follow ``x + delta`` (done here with differentiable torch ops; the
    kernel itself takes two tensors of one shape and dtype).
    """
    if x.dtype != delta.dtype:
        dtype = torch.promote_types(x.dtype, delta.dtype)
        x, delta = x.to(dtype), delta.to(dtype)
    if x.shape != delta.shape:
        x, delta = torch.broadcast_tensors(x, delta)
    return _op(x, delta, eps)[0]


def add_rms_norm(x: Tensor, delta: Tensor, eps: float) -> Tensor:
    """rms_norm(x + delta) over the last axis (parameter-free, fp32 statistics)."""
    if ops.use_triton(x):
        return fused(x, delta, eps)
    return reference(x, delta, eps)
