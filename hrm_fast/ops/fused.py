"""The Triton kernels as ``torch.library`` custom ops (``hrm_fast::*``) with fake and autograd rules.

``custom_op`` (not ``triton_op``) is used so that ``torch.compile(fullgraph=True)`` traces the ops as
opaque nodes on CPU (under ``TRITON_INTERPRET=1``) as well as on CUDA. Each forward op returns
what its backward needs (attention: the log-sum-exp; add+RMSNorm: rstd); the public functions
below return only the result, with exactly the semantics of :mod:`hrm_fast.ops.reference`.
Double backward is not supported.
"""

from __future__ import annotations

import torch

from kernels import rms_norm as _rms
from kernels import rope_attention as _attn
from kernels import swiglu as _swiglu

Tensor = torch.Tensor


# --------------------------------------------------------------------------- RoPE attention
@torch.library.custom_op("hrm_fast::rope_attention", mutates_args=())
def _rope_attention_op(qkv: Tensor, cos: Tensor, sin: Tensor, num_heads: int) -> tuple[Tensor, Tensor]:
    return _attn.forward(qkv, cos, sin, num_heads)


@_rope_attention_op.register_fake
def _(qkv: Tensor, cos: Tensor, sin: Tensor, num_heads: int) -> tuple[Tensor, Tensor]:
    batch, seq, width = qkv.shape
    head_dim = width // (3 * num_heads)
    out = qkv.new_empty(batch, seq, num_heads * head_dim)
    return out, qkv.new_empty(batch, num_heads, seq, dtype=torch.float32)


@torch.library.custom_op("hrm_fast::rope_attention_backward", mutates_args=())
def _rope_attention_bwd_op(
    grad_out: Tensor, qkv: Tensor, cos: Tensor, sin: Tensor, out: Tensor, lse: Tensor, num_heads: int
) -> Tensor:
    return _attn.backward(grad_out, qkv, cos, sin, out, lse, num_heads)


@_rope_attention_bwd_op.register_fake
def _(grad_out: Tensor, qkv: Tensor, cos: Tensor, sin: Tensor, out: Tensor, lse: Tensor, num_heads: int) -> Tensor:
    return torch.empty(qkv.shape, dtype=qkv.dtype, device=qkv.device)


def _rope_attention_setup(ctx, inputs, output) -> None:
    qkv, cos, sin, num_heads = inputs
    out, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(qkv, cos, sin, out, lse)
    ctx.num_heads = num_heads


def _rope_attention_backward(ctx, grad_out: Tensor, _grad_lse: Tensor | None):
    qkv, cos, sin, out, lse = ctx.saved_tensors
    dqkv = _rope_attention_bwd_op(grad_out, qkv, cos, sin, out, lse, ctx.num_heads)
    return dqkv, None, None, None


_rope_attention_op.register_autograd(_rope_attention_backward, setup_context=_rope_attention_setup)


def rope_attention(qkv: Tensor, cos: Tensor, sin: Tensor, num_heads: int) -> Tensor:
    """qkv [B, S, 3*H*Dh], cos/sin [S, Dh] fp32 -> [B, S, H*Dh]; RoPE on q, k, then non-causal attention."""
    return _rope_attention_op(qkv, cos, sin, num_heads)[0]


# --------------------------------------------------------------------------- SwiGLU
@torch.library.custom_op("hrm_fast::swiglu", mutates_args=())
def _swiglu_op(gate_up: Tensor) -> Tensor:
    return _swiglu.forward(gate_up)


@_swiglu_op.register_fake
def _(gate_up: Tensor) -> Tensor:
    return gate_up.new_empty(*gate_up.shape[:-1], gate_up.shape[-1] // 2)


@torch.library.custom_op("hrm_fast::swiglu_backward", mutates_args=())
def _swiglu_bwd_op(grad_out: Tensor, gate_up: Tensor) -> Tensor:
    return _swiglu.backward(grad_out, gate_up)


@_swiglu_bwd_op.register_fake
def _(grad_out: Tensor, gate_up: Tensor) -> Tensor:
    return torch.empty(gate_up.shape, dtype=gate_up.dtype, device=gate_up.device)


def _swiglu_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[0])


def _swiglu_backward(ctx, grad_out: Tensor):
    (gate_up,) = ctx.saved_tensors
    return _swiglu_bwd_op(grad_out, gate_up)


_swiglu_op.register_autograd(_swiglu_backward, setup_context=_swiglu_setup)


def swiglu(gate_up: Tensor) -> Tensor:
    """gate_up [..., 2*I] = [gate | up] -> silu(gate) * up [..., I], same dtype."""
    return _swiglu_op(gate_up)


# --------------------------------------------------------------------------- add + RMSNorm
@torch.library.custom_op("hrm_fast::add_rms_norm", mutates_args=())
def _add_rms_norm_op(x: Tensor, delta: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    return _rms.forward(x, delta, eps)


@_add_rms_norm_op.register_fake
def _(x: Tensor, delta: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    return torch.empty(x.shape, dtype=x.dtype, device=x.device), x.new_empty(rows, dtype=torch.float32)


@torch.library.custom_op("hrm_fast::add_rms_norm_backward", mutates_args=())
def _add_rms_norm_bwd_op(grad_y: Tensor, x: Tensor, delta: Tensor, rstd: Tensor) -> tuple[Tensor, Tensor]:
    return _rms.backward(grad_y, x, delta, rstd)


@_add_rms_norm_bwd_op.register_fake
def _(grad_y: Tensor, x: Tensor, delta: Tensor, rstd: Tensor) -> tuple[Tensor, Tensor]:
    return (torch.empty(x.shape, dtype=x.dtype, device=x.device),
            torch.empty(x.shape, dtype=x.dtype, device=x.device))  # fmt: skip


def _add_rms_norm_setup(ctx, inputs, output) -> None:
    x, delta, _eps = inputs
    _y, rstd = output
    ctx.mark_non_differentiable(rstd)
    ctx.save_for_backward(x, delta, rstd)


def _add_rms_norm_backward(ctx, grad_y: Tensor, _grad_rstd: Tensor | None):
    x, delta, rstd = ctx.saved_tensors
    dx, ddelta = _add_rms_norm_bwd_op(grad_y, x, delta, rstd)
    return dx, ddelta, None


_add_rms_norm_op.register_autograd(_add_rms_norm_backward, setup_context=_add_rms_norm_setup)


def add_rms_norm(x: Tensor, delta: Tensor, eps: float) -> Tensor:
    """rms_norm(x + delta) over the last axis: the add in the promoted dtype, fp32 statistics, result in that dtype.

    Mixed dtypes and broadcasting follow ``x + delta`` (done here with differentiable torch ops; the
    kernel itself takes two tensors of one shape and dtype).
    """
    if x.dtype != delta.dtype:
        dtype = torch.promote_types(x.dtype, delta.dtype)
        x, delta = x.to(dtype), delta.to(dtype)
    if x.shape != delta.shape:
        x, delta = torch.broadcast_tensors(x, delta)
    return _add_rms_norm_op(x, delta, eps)[0]


__all__ = ["add_rms_norm", "rope_attention", "swiglu"]
