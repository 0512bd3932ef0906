"""The static inference computation that gets exported: N segments of HRM from a fresh carry.

Evaluation never halts early (eval mode halts only at ``halt_max_steps``), so from a fresh carry the ACT
bookkeeping is constant: the first segment's ``act_reset`` sets every row's z_H / z_L to ``H_init`` /
``L_init`` (all rows start halted) and no later segment resets a row, so ``act_reset`` / ``act_halt``
(the C++ extension ops) are left out and the segments are unrolled. The verification in
:mod:`hrm_fast.export.verify` compares against the real ``HRM.forward`` loop with its carry, which
proves this equivalence on every export.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import nn

from hrm_fast.model.hrm import HRM
from hrm_fast.model.layers import CastedEmbedding, CastedLinear

PuzzleInput = Literal["ids", "vectors", "none"]


class InferenceProgram(nn.Module):
    """tokens int32 [B, S] (+ puzzle ids int32 [B] or puzzle vectors [B, ndim]) -> (logits or tokens, q_halt).

    ``puzzle_input``: ``ids`` (a lookup in ``table``, the checkpoint's puzzle rows or a chosen subset of
    them, indexed 0..rows-1), ``vectors`` (the caller passes each row's puzzle vector, forward dtype) or
    ``none`` (the model has no puzzle embedding). ``output``: ``logits`` [.., B, S, V] in the forward dtype
    or ``tokens`` int32 [.., B, S] (argmax); q_halt logits are fp32 [.., B]. ``per_segment``: a leading
    [segments] axis with every segment's outputs; else the last segment's only (what evaluation uses).
    """

    def __init__(self, model: HRM, segments: int, puzzle_input: PuzzleInput, table: torch.Tensor | None,
                 output: Literal["logits", "tokens"], per_segment: bool) -> None:
        super().__init__()
        self.inner = copy.deepcopy(model.inner).eval()
        dtype = self.inner.forward_dtype
        # Weights stored in the forward dtype: the per-call casts become no-ops (same values, half-size fp16 files).
        for m in self.inner.modules():
            if isinstance(m, CastedLinear | CastedEmbedding):
                for p in m.parameters(recurse=False):
                    p.data = p.data.to(dtype)
        for p in self.inner.parameters():
            p.requires_grad_(False)
        self.segments = segments
        self.puzzle_input = puzzle_input
        self.output = output
        self.per_segment = per_segment
        self.register_buffer("table", None if table is None else table.to(dtype).clone(), persistent=False)

    def forward(self, tokens: torch.Tensor, puzzle: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        inner = self.inner
        if self.puzzle_input == "ids":
            vectors = self.table[puzzle.to(torch.int64)]
        elif self.puzzle_input == "vectors":
            vectors = puzzle.to(inner.forward_dtype)
        else:
            vectors = None
        x = inner.input_embeddings(tokens, vectors)
        z_H = inner.H_init.view(1, 1, -1).expand_as(x)
        z_L = inner.L_init.view(1, 1, -1).expand_as(x)
        outs, qs = [], []
        for _ in range(self.segments):
            z_H, z_L, logits, q = inner(z_H, z_L, x)
            outs.append(logits if self.output == "logits" else logits.argmax(dim=-1).to(torch.int32))
            qs.append(q[:, 0])
        if self.per_segment:
            return torch.stack(outs), torch.stack(qs)
        return outs[-1], qs[-1]
