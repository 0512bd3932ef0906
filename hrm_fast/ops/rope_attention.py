"""Non-causal multi-head attention with RoPE on q and k: the reference, the Triton custom op, the dispatcher.

The custom op ``hrm_fast::rope_attention`` (kernel: :mod:`kernels.rope_attention`, imported at the first
call) returns the log-sum-exp its backward needs; :func:`fused` returns only the result. ``custom_op``
(not ``triton_op``) keeps it opaque to ``torch.compile(fullgraph=True)`` on CPU (interpreter) and CUDA.
Double backward is not supported.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hrm_fast import ops

Tensor = torch.Tensor


def rotate_half(x: Tensor) -> Tensor:
    """[..., D] -> [-x2, x1] with x1, x2 the two halves of the last axis."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x [B, S, H, Dh] by cos/sin [S, Dh] or per row [B, S, Dh] (fp32, frequencies duplicated [f, f]).

    Computed in the dtype of cos (fp32) and cast back to x's dtype, as HRM does.
    """
    xf = x.to(cos.dtype)
    c, s = cos.unsqueeze(-2), sin.unsqueeze(-2)
    return (xf * c + rotate_half(xf) * s).to(x.dtype)


def reference(qkv: Tensor, cos: Tensor, sin: Tensor, num_heads: int, kv: Tensor | None = None) -> Tensor:
    """Pure-PyTorch twin, in the dtypes of the original HRM.

    qkv: [B, S, 3 * H * Dh] packed projection output (q heads, then k heads, then v heads); cos, sin:
    [S, Dh] fp32, or [B, S, Dh] (each row's own positions: pad-aware windows). Returns [B, S, H * Dh] in qkv's
    dtype; softmax scale 1/sqrt(Dh). With ``kv``
    [B, S, 2 * H * Dh] (k heads, then v heads), ``qkv`` holds only the queries [B, R, H * Dh] of the
    first R <= S positions and the result is [B, R, H * Dh].
    """
    batch, rows, width = qkv.shape
    if kv is None:
        head_dim = width // (3 * num_heads)
        qkv = qkv.view(batch, rows, 3 * num_heads, head_dim)
        q, kv = apply_rope(qkv[:, :, :num_heads], cos, sin), qkv[:, :, num_heads:]
    else:
        head_dim = width // num_heads
        q = apply_rope(qkv.view(batch, rows, num_heads, head_dim), cos[..., :rows, :], sin[..., :rows, :])
        kv = kv.view(batch, kv.shape[1], 2 * num_heads, head_dim)
    k = apply_rope(kv[:, :, :num_heads], cos, sin)
    v = kv[:, :, num_heads:]
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=False)
    return out.transpose(1, 2).reshape(batch, rows, num_heads * head_dim)


@torch.library.custom_op("hrm_fast::rope_attention", mutates_args=())
def _op(qkv: Tensor, cos: Tensor, sin: Tensor, num_heads: int) -> tuple[Tensor, Tensor]:
    from kernels import rope_attention as kernel  # imported lazily: it imports triton
    return kernel.forward(qkv, cos, sin, num_heads)


@_op.register_fake
def _(qkv: Tensor, cos: Tensor, sin: Tensor, num_heads: int) -> tuple[Tensor, Tensor]:
    batch, seq, width = qkv.shape
    head_dim = width // (3 * num_heads)
    out = qkv.new_empty(batch, seq, num_heads * head_dim)
    return out, qkv.new_empty(batch, num_heads, seq, dtype=torch.float32)


@torch.library.custom_op("hrm_fast::rope_attention_backward", mutates_args=())
def _backward_op(
    grad_out: Tensor, qkv: Tensor, cos: Tensor, sin: Tensor, out: Tensor, lse: Tensor, num_heads: int
) -> Tensor:
    from kernels import rope_attention as kernel
    return kernel.backward(grad_out, qkv, cos, sin, out, lse, num_heads)


@_backward_op.register_fake
def _(grad_out: Tensor, qkv: Tensor, cos: Tensor, sin: Tensor, out: Tensor, lse: Tensor, num_heads: int) -> Tensor:
    return torch.empty(qkv.shape, dtype=qkv.dtype, device=qkv.device)


def _setup_context(ctx, inputs, output) -> None:
    qkv, cos, sin, num_heads = inputs
    out, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(qkv, cos, sin, out, lse)
    ctx.num_heads = num_heads


def _backward(ctx, grad_out: Tensor, _grad_lse: Tensor | None):
    qkv, cos, sin, out, lse = ctx.saved_tensors
    dqkv = _backward_op(grad_out, qkv, cos, sin, out, lse, ctx.num_heads)
    return dqkv, None, None, None


_op.register_autograd(_backward, setup_context=_setup_context)


def fused(qkv: Tensor, cos: Tensor, sin: Tensor, num_heads: int) -> Tensor:
    """The Triton kernel: qkv [B, S, 3*H*Dh], cos/sin [S, Dh] fp32 -> [B, S, H*Dh], semantics of :func:`reference`."""
    return _op(qkv, cos, sin, num_heads)[0]


def rope_attention(qkv: Tensor, cos: Tensor, sin: Tensor, num_heads: int, kv: Tensor | None = None) -> Tensor:
    """qkv [B, S, 3*H*Dh], cos/sin [S, Dh] fp32 -> [B, S, H*Dh]; RoPE on q, k then non-causal attention.

    With ``kv`` (first-rows form, see :func:`reference`) or per-row cos/sin [B, S, Dh] the reference always runs:
    the kernel reads the packed qkv of every position and one [S, Dh] table.
    """
    if kv is None and cos.dim() == 2 and ops.use_triton(qkv):
        return fused(qkv, cos, sin, num_heads)
    return reference(qkv, cos, sin, num_heads, kv)
