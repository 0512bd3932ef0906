"""Pure-PyTorch reference twins of every hot op.

These are the oracle for the fast paths (Triton kernels, the C++/CUDA extension) and the CPU
path. They compute exactly what the original HRM computes, in the same dtypes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_LABEL = -100


# --------------------------------------------------------------------------- RoPE + attention
def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[..., D] -> [-x2, x1] with x1, x2 the two halves of the last axis."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, S, H, Dh] by cos/sin [S, Dh] (fp32, frequencies duplicated [f, f]).

    Computed in the dtype of cos (fp32) and cast back to x's dtype, as HRM does.
    """
    xf = x.to(cos.dtype)
    c, s = cos.unsqueeze(-2), sin.unsqueeze(-2)
    return (xf * c + rotate_half(xf) * s).to(x.dtype)


def rope_attention(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Non-causal multi-head attention with RoPE on q and k.

    qkv: [B, S, 3 * H * Dh] packed projection output (q heads, then k heads, then v heads).
    cos, sin: [S, Dh] fp32. Returns [B, S, H * Dh] in qkv's dtype. Softmax scale 1/sqrt(Dh).
    """
    batch, seq, width = qkv.shape
    head_dim = width // (3 * num_heads)
    qkv = qkv.view(batch, seq, 3 * num_heads, head_dim)
    q = apply_rope(qkv[:, :, :num_heads], cos, sin)
    k = apply_rope(qkv[:, :, num_heads : 2 * num_heads], cos, sin)
    v = qkv[:, :, 2 * num_heads :]
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=False)
    return out.transpose(1, 2).reshape(batch, seq, num_heads * head_dim)


# --------------------------------------------------------------------------- SwiGLU
def swiglu(gate_up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up for gate_up [..., 2 * I] = [gate | up]. Returns [..., I], same dtype."""
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


# --------------------------------------------------------------------------- RMSNorm
def rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Parameter-free RMSNorm over the last axis, computed in fp32, cast back to x's dtype."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps)
    return xf.to(x.dtype)


def add_rms_norm(x: torch.Tensor, delta: torch.Tensor, eps: float) -> torch.Tensor:
    """HRM's post-norm residual: rms_norm(x + delta). The add happens in x's dtype, as in HRM."""
    return rms_norm(x + delta, eps)


# --------------------------------------------------------------------------- ACT carry update
def act_reset(
    z_H: torch.Tensor,
    z_L: torch.Tensor,
    steps: torch.Tensor,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    puzzle_identifiers: torch.Tensor,
    halted: torch.Tensor,
    H_init: torch.Tensor,
    L_init: torch.Tensor,
    new_inputs: torch.Tensor,
    new_labels: torch.Tensor,
    new_puzzle_identifiers: torch.Tensor,
) -> None:
    """Before a segment: rows with ``halted`` set restart (in place on the carry buffers).

    z_H, z_L: [B, S, D] float; H_init, L_init: [D] same dtype; steps: [B] int32;
    halted: [B] bool; inputs/labels: [B, L] and puzzle_identifiers: [B], each with the dtype of
    its ``new_*`` twin. Halted rows get z <- init (broadcast over S), steps <- 0 and the new
    batch's row of inputs, labels and puzzle identifiers; other rows are left untouched.
    """
    rows = halted.view(-1, 1, 1)
    z_H.copy_(torch.where(rows, H_init.view(1, 1, -1), z_H))
    z_L.copy_(torch.where(rows, L_init.view(1, 1, -1), z_L))
    steps.copy_(torch.where(halted, torch.zeros_like(steps), steps))
    inputs.copy_(torch.where(halted.view(-1, 1), new_inputs, inputs))
    labels.copy_(torch.where(halted.view(-1, 1), new_labels, labels))
    puzzle_identifiers.copy_(torch.where(halted, new_puzzle_identifiers, puzzle_identifiers))


def act_halt(
    steps: torch.Tensor,
    halted: torch.Tensor,
    q_halt: torch.Tensor,
    q_continue: torch.Tensor,
    explore_draw: torch.Tensor,
    min_steps_draw: torch.Tensor,
    max_steps: int,
    exploration_prob: float,
    training: bool,
) -> None:
    """After a segment: advance step counters and decide halting (in place).

    steps: [B] int32, halted: [B] bool, q_halt/q_continue: [B] fp32,
    explore_draw: [B] fp32 uniform in [0, 1), min_steps_draw: [B] int32 uniform in [2, max_steps].
    steps += 1; halted = steps >= max_steps; when training and max_steps > 1 also halt where
    q_halt > q_continue, but a row whose explore_draw < exploration_prob may not halt before
    min_steps_draw steps.
    """
    steps.add_(1)
    new_halted = steps >= max_steps
    if training and max_steps > 1:
        new_halted = new_halted | (q_halt > q_continue)
        min_halt = torch.where(explore_draw < exploration_prob, min_steps_draw, torch.zeros_like(min_steps_draw))
        new_halted = new_halted & (steps >= min_halt)
    halted.copy_(new_halted)
