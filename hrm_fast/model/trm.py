"""The Tiny Recursive Model's inner recurrence (``model.arch=trm``; Jolicoeur-Martineau 2025, arXiv:2510.04871).

TRM (SamsungSAILMontreal/TinyRecursiveModels, arXiv 2510.04871) keeps HRM's embeddings, heads, carry and ACT
wrapper (:class:`hrm_fast.model.hrm.HRM` runs both) and changes the inner forward:
- one network, ``L_level`` of ``L_layers`` blocks, does both updates (``H_layers`` is unused);
- per cycle, the latent z (= z_L) is updated ``L_cycles`` times from z + y + x, then the answer y (= z_H)
  once from y + z (no x);
- the first ``H_cycles - 1`` cycles run without grad; the **whole last cycle** (L_cycles + 1 applications)
  is back-propagated (no 1-step approximation);
- optional ``mlp_t`` blocks: a SwiGLU over the sequence axis replaces attention (TRM's Sudoku variant).
Halting without Q-continue lives in the wrapper (q_halt > 0 when ``bootstrap_q`` is off).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hrm_fast import ops
from hrm_fast.config import ModelConfig, swiglu_inner
from hrm_fast.model.hrm import HRMInner
from hrm_fast.model.layers import ReasoningModule, SwiGLU
from hrm_fast.model.precision import no_grad_region


class SequenceMLPBlock(nn.Module):
    """TRM's ``mlp_t`` block: h <- norm_S(h + MLP_S(h)) over the sequence axis, then h <- norm(h + MLP(h)).

    The first residual and its RMSNorm run on the transposed [B, D, S] tensor, so that norm is over the
    sequence positions, exactly as TRM computes it. Key names (``mlp_t.*``, ``mlp.*``) follow TRM.
    """

    def __init__(self, config: ModelConfig, total_len: int) -> None:
        super().__init__()
        self.mlp_t = SwiGLU(total_len, swiglu_inner(total_len, config.expansion))
        self.mlp = SwiGLU(config.hidden_size, config.intermediate_size)
        self.eps = config.rms_norm_eps
        self.dropout = config.dropout

    def forward(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rows: int | None = None) -> torch.Tensor:
        """h [B, S, D] -> [B, S, D] ([B, rows, D]: the first ``rows`` positions). cos/sin are unused (no attention)."""
        t = h.transpose(1, 2).contiguous()  # [B, D, S]
        mixed = self.mlp_t(t)
        if self.dropout:
            mixed = F.dropout(mixed, self.dropout, self.training)
        h = ops.add_rms_norm(t, mixed, self.eps).transpose(1, 2)
        if rows is not None:
            h = h[:, :rows]
        h = h.contiguous()
        mlp = self.mlp(h)
        if self.dropout:
            mlp = F.dropout(mlp, self.dropout, self.training)
        return ops.add_rms_norm(h, mlp, self.eps)


class TRMInner(HRMInner):
    """HRM's embeddings and heads around TRM's single network ``L_level``. Same call signature as :class:`HRMInner`."""

    def build_levels(self, config: ModelConfig) -> None:
        blocks = ([SequenceMLPBlock(config, self.total_len) for _ in range(config.L_layers)] if config.mlp_t
                  else self.blocks(config, config.L_layers))
        self.L_level = ReasoningModule(blocks)
        self.L_level.grad_checkpoint = config.grad_checkpoint

    def forward(
        self, z_H: torch.Tensor, z_L: torch.Tensor, x: torch.Tensor, q_only: bool = False, fast: bool = False,
        positions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """One TRM segment: H_cycles - 1 cycles without grad, then the last cycle with grad.

        z_H (y), z_L (z): [B, T, D] carry; x: [B, T, D] input embedding. Returns what :meth:`HRMInner.forward` does,
        with the same ``q_only`` / ``fast`` / ``positions``.
        """
        cos, sin = self.rope(positions)
        n_l = self.config.L_cycles
        with no_grad_region(fast):
            for _ in range(self.config.H_cycles - 1):
                for _ in range(n_l):
                    z_L = self.L_level(z_L, z_H + x, cos, sin)  # the latent z from (x, y, z)
                z_H = self.L_level(z_H, z_L, cos, sin)  # the answer y from (y, z), same network
        for _ in range(n_l):  # the whole last cycle is differentiated
            z_L = self.L_level(z_L, z_H + x, cos, sin)
        z_H = self.L_level(z_H, z_L, cos, sin, rows=1 if q_only and fast else None)
        return z_H, z_L, *self.heads(z_H, q_only)
