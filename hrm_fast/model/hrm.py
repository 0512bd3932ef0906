"""The Hierarchical Reasoning Model: inner recurrence (H/L modules) and the ACT wrapper.

Reads top to bottom like the HRM paper (Wang et al. 2025, arXiv:2506.21734); TRM's inner model is
:mod:`hrm_fast.model.trm`:
- :class:`PuzzleEmbedding`: the per-puzzle vector table (a buffer, trained by sparse SignSGD).
- :class:`HRMInner`: token embedding (x sqrt(hidden)) with the puzzle prefix, H_cycles x L_cycles
  updates of z_L and z_H with the 1-step gradient, LM head and Q head.
- :class:`HRM`: the ACT wrapper. One call = one segment on a persistent :class:`Carry`:
  ``act_reset`` (halted rows restart with fresh data), inner forward, ``act_halt`` (step
  counters and the halting decision), plus the bootstrap target-Q pass in training.
No host syncs and no Python branches on tensor values in ``forward``.

Fast paths (``HRM.fast_paths``, on by default; same semantics, less work; off = the plain reference
path the benchmarks compare against): the no-grad cycles and the bootstrap pass run in
``torch.inference_mode`` (no autograd bookkeeping; plain ``no_grad`` while ``torch.compile``
traces), fp32 master weights are cast to the forward dtype once per segment instead of at every
block call, and the bootstrap target-Q pass computes only what the Q head reads (no LM head, and
its last block only at position 0).

Pad-aware canvases (``model.pad_aware``, off by default; other semantics, eager only): each segment runs every row
on a k x k window of the C x C canvas placed over that row's own cells (:func:`row_windows`: k is the batch's
largest bounding box of non-PAD inputs and labels, bucketed), plus the puzzle prefix. The carry stays full size;
each row's window positions are gathered (their RoPE / learned positions are those of the full canvas), updated and
written back, so cells outside it are not attended to and keep their z in that segment, and their logits predict
PAD (their labels are IGNORE).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from hrm_fast import ops
from hrm_fast.config import ModelConfig
from hrm_fast.data.boxes import bounding_boxes
from hrm_fast.data.encode import PAD_ID
from hrm_fast.model.layers import (
    Block,
    CastedEmbedding,
    CastedLinear,
    ReasoningModule,
    cast_weights_once,
    identity_rope_tables,
    rope_tables,
    trunc_normal_init_,
)
from hrm_fast.model.precision import dtype_of, no_grad_region

BATCH_KEYS = ("inputs", "labels", "puzzle_identifiers")


def row_windows(inputs: torch.Tensor, labels: torch.Tensor, canvas: int, step: int) -> tuple[int, torch.Tensor]:
    """The pad-aware windows of a batch: side k and each row's window origin (int64 [B, 2]: row, column).

    A row's box is the bounding box of its cells that are not PAD in ``inputs`` or not IGNORE in ``labels`` (both
    [B, canvas**2] int). k is the largest box side in the batch (at least 1), rounded up to a multiple of ``step``
    and capped at ``canvas``; a row's window starts at its box's top-left cell, moved up/left where the k x k window
    would leave the canvas, so it always holds the box. One host read (k)."""
    first, size = bounding_boxes(inputs, labels, canvas)
    side = min(-(-max(int(size.amax()), 1) // step) * step, canvas)
    return side, first.clamp(max=canvas - side)


def window_positions(side: int, canvas: int, prefix_len: int, origins: torch.Tensor) -> torch.Tensor:
    """int64 [B, prefix_len + side**2]: per row, the prefix positions, then those of its window's cells (row-major)
    in the full sequence (prefix + (r0 + r) * canvas + c0 + c for r, c < side; origins [B, 2] = (r0, c0))."""
    cells = torch.arange(side, device=origins.device)
    rows = origins[:, :1, None] + cells[:, None]  # [B, side, 1]
    cols = origins[:, 1:, None] + cells[None, :]  # [B, 1, side]
    grid = (rows * canvas + cols).reshape(origins.shape[0], -1) + prefix_len
    prefix = torch.arange(prefix_len, device=origins.device).expand(origins.shape[0], -1)
    return torch.cat((prefix, grid), 1)


def gather_positions(z: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """z [B, T, D] -> [B, T', D]: each row's entries at its ``positions`` [B, T']."""
    return z.gather(1, positions[..., None].expand(-1, -1, z.shape[-1]))


def scatter_positions(z: torch.Tensor, positions: torch.Tensor, values: torch.Tensor) -> None:
    """In place: z [B, T, D] at each row's ``positions`` [B, T'] <- values [B, T', D]."""
    z.scatter_(1, positions[..., None].expand(-1, -1, z.shape[-1]), values)


# --------------------------------------------------------------------------- puzzle embedding
class PuzzleEmbedding(nn.Module):
    """Per-puzzle vectors ``weights`` [num_ids, ndim] fp32 (zero init, persistent buffer, not a Parameter).

    Training forward copies the batch's rows into ``local_weights`` [B, ndim] (a leaf that requires
    grad) and remembers their ids in ``local_ids``; :class:`hrm_fast.training.optim.SparseSignSGD` later
    applies the gradient of ``local_weights`` to those rows only. Eval forward is a plain lookup.
    With gradient accumulation, each training forward first stashes the previous micro-batch's
    (ids, grad) so that no gradient is attributed to the wrong rows.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, cast_to: torch.dtype) -> None:
        super().__init__()
        self.cast_to = cast_to
        self.register_buffer("weights", torch.zeros(num_embeddings, embedding_dim), persistent=True)
        self.register_buffer("local_weights", torch.zeros(0, embedding_dim, requires_grad=True), persistent=False)
        self.register_buffer("local_ids", torch.zeros(0, dtype=torch.int32), persistent=False)
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] = []

    def stash_grad(self) -> None:
        """Move the current (ids, grad of local_weights) into ``pending`` and clear the grad."""
        if self.local_weights.grad is not None:
            self.pending.append((self.local_ids.clone(), self.local_weights.grad.clone()))
            self.local_weights.grad = None

    def prepare(self, batch_size: int) -> None:
        """(Re)allocate ``local_weights`` / ``local_ids`` for ``batch_size`` rows unless they fit already.

        Done by the training forward when needed; callers that compile or graph-capture the step call
        it first, so that the traced forward never replaces module buffers.
        """
        local = self.local_weights
        if local.shape[0] != batch_size or local.device != self.weights.device or not local.is_leaf:
            self.local_weights = torch.zeros(
                batch_size, self.weights.shape[1], device=self.weights.device, requires_grad=True
            )
            self.local_ids = torch.zeros(batch_size, dtype=torch.int32, device=self.weights.device)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B] int -> [B, ndim] in ``cast_to``."""
        if not self.training:
            return self.weights[ids].to(self.cast_to)
        self.stash_grad()
        self.prepare(ids.shape[0])
        with torch.no_grad():
            self.local_weights.copy_(self.weights[ids])
            self.local_ids.copy_(ids)
        return self.local_weights.to(self.cast_to)


# --------------------------------------------------------------------------- inner model
class HRMInner(nn.Module):
    """Embeddings, the H and L modules, and the heads. Sequence = puzzle prefix tokens + seq_len grid tokens."""

    def __init__(self, config: ModelConfig, vocab_size: int, seq_len: int) -> None:
        super().__init__()
        self.config = config
        self.forward_dtype = dtype_of(config.forward_dtype)
        self.hidden_size = config.hidden_size
        self.prefix_len = config.puzzle_emb_len
        self.total_len = seq_len + self.prefix_len
        self.embed_scale = math.sqrt(config.hidden_size)

        self.embed_tokens = CastedEmbedding(vocab_size, config.hidden_size, 1.0 / self.embed_scale, self.forward_dtype)
        self.lm_head = CastedLinear(config.hidden_size, vocab_size, bias=False)
        self.q_head = CastedLinear(config.hidden_size, 2, bias=True)
        with torch.no_grad():  # initial q_halt = q_continue = -5: halting starts unlikely
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5.0)

        if config.pos_encodings == "rope":
            cos, sin = rope_tables(config.head_dim, self.total_len, config.rope_theta)
        else:  # "learned" adds a position table to the input; "none" (TRM's option) has no positions at all
            if config.pos_encodings == "learned":
                self.embed_pos = CastedEmbedding(
                    self.total_len, config.hidden_size, 1.0 / self.embed_scale, self.forward_dtype
                )
            cos, sin = identity_rope_tables(config.head_dim, self.total_len)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

        self.build_levels(config)
        # sampled directly in the forward dtype, as HRM does (same seed -> same vectors)
        h_init = trunc_normal_init_(torch.empty(config.hidden_size, dtype=self.forward_dtype), std=1.0)
        l_init = trunc_normal_init_(torch.empty(config.hidden_size, dtype=self.forward_dtype), std=1.0)
        self.register_buffer("H_init", h_init, persistent=True)
        self.register_buffer("L_init", l_init, persistent=True)

    def build_levels(self, config: ModelConfig) -> None:
        """HRM's two reasoning modules: ``H_level`` (H_layers blocks) and ``L_level`` (L_layers blocks)."""
        self.H_level = ReasoningModule(self.blocks(config, config.H_layers))
        self.L_level = ReasoningModule(self.blocks(config, config.L_layers))
        self.H_level.grad_checkpoint = self.L_level.grad_checkpoint = config.grad_checkpoint

    @staticmethod
    def blocks(config: ModelConfig, n: int) -> list[Block]:
        """``n`` fresh post-norm attention blocks of ``config``'s sizes."""
        args = (config.hidden_size, config.num_heads, config.intermediate_size, config.rms_norm_eps, config.dropout)
        return [Block(*args) for _ in range(n)]

    def input_embeddings(
        self, inputs: torch.Tensor, puzzle_vectors: torch.Tensor | None, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """inputs [B, seq_len] int, puzzle_vectors [B, ndim] -> x [B, prefix + seq_len, D] (forward dtype).

        ``positions`` (int64 [B, T'], :func:`window_positions`): only each row's positions -> [B, T', D]."""
        if positions is not None:
            inputs = inputs.gather(1, positions[:, self.prefix_len :] - self.prefix_len)
        x = self.embed_tokens(inputs.to(torch.int32))
        if self.prefix_len:
            pad = self.prefix_len * self.hidden_size - puzzle_vectors.shape[-1]
            prefix = F.pad(puzzle_vectors, (0, pad)) if pad else puzzle_vectors
            x = torch.cat((prefix.view(-1, self.prefix_len, self.hidden_size), x), dim=-2)
        if self.config.pos_encodings == "learned":
            pos = self.embed_pos.weight if positions is None else self.embed_pos.weight[positions]
            x = 0.707106781 * (x + pos.to(self.forward_dtype))  # keeps the sum's variance
        return self.embed_scale * x

    def forward(
        self, z_H: torch.Tensor, z_L: torch.Tensor, x: torch.Tensor, q_only: bool = False, fast: bool = False,
        positions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """One segment of the recurrence with the 1-step gradient (H_cycles x L_cycles updates).

        z_H, z_L: [B, T, D] carry (no grad); x: [B, T, D] input embedding. Returns new z_H, z_L
        (still attached to the graph of the last updates; callers detach), logits [B, seq_len, V]
        and q [B, 2] fp32 (halt, continue).
        ``q_only``: only q is wanted: no logits (None); with ``fast``, the last H update computes position 0 only
        (the returned z_H is then [B, 1, D]). ``fast``: the no-grad cycles run in inference mode.
        ``positions`` (int64 [B, T']): z_H, z_L, x hold only each row's positions (a pad-aware window); RoPE uses
        theirs.
        """
        cos, sin = self.rope(positions)
        n_h, n_l = self.config.H_cycles, self.config.L_cycles
        with no_grad_region(fast):  # every update but the last L and the last H one
            for h_step in range(n_h):
                for l_step in range(n_l):
                    if h_step < n_h - 1 or l_step < n_l - 1:
                        z_L = self.L_level(z_L, z_H + x, cos, sin)  # L: fast updates, conditioned on H and input
                if h_step < n_h - 1:
                    z_H = self.H_level(z_H, z_L, cos, sin)  # H: one slow update per cycle, from L's result
        # 1-step gradient: only the last L and the last H update are differentiated.
        z_L = self.L_level(z_L, z_H + x, cos, sin)
        z_H = self.H_level(z_H, z_L, cos, sin, rows=1 if q_only and fast else None)
        return z_H, z_L, *self.heads(z_H, q_only)

    def rope(self, positions: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [T, head_dim] fp32, or [B, T', head_dim]: their rows at ``positions`` [B, T']."""
        if positions is None:
            return self.cos, self.sin
        return self.cos[positions], self.sin[positions]

    def heads(self, z_H: torch.Tensor, q_only: bool) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(logits [B, seq_len, V] from the grid positions, None when ``q_only``; q [B, 2] fp32 from position 0)."""
        logits = None if q_only else self.lm_head(z_H[:, self.prefix_len :])
        return logits, self.q_head(z_H[:, 0]).to(torch.float32)


# --------------------------------------------------------------------------- ACT wrapper
@dataclass
class Carry:
    """Persistent ACT state; every field is updated in place by :meth:`HRM.forward`.

    z_H, z_L: [B, T, D] forward dtype; steps: [B] int32; halted: [B] bool;
    current_data: ``inputs``/``labels`` int32 [B, seq_len], ``puzzle_identifiers`` int32 [B].
    """

    z_H: torch.Tensor
    z_L: torch.Tensor
    steps: torch.Tensor
    halted: torch.Tensor
    current_data: dict[str, torch.Tensor] = field(default_factory=dict)


class HRM(nn.Module):
    """HRM (or TRM, ``model.arch=trm``: :mod:`hrm_fast.model.trm`) with adaptive computation time.

    ``carry, outputs = model(carry, batch)`` runs one segment; the ACT wrapper, carry and halting are shared by
    both architectures (TRM without ``bootstrap_q`` halts when q_halt > 0 and has no Q-continue target).

    outputs: ``logits`` [B, seq_len, vocab] (forward dtype), ``q_halt_logits`` / ``q_continue_logits``
    [B] fp32, and in training with ``bootstrap_q`` (and halt_max_steps > 1) ``target_q_continue`` [B] fp32.
    ``fast_paths`` (default True) switches the fast paths of the module docstring; False runs the plain
    reference path (for benchmarks and equivalence tests).
    """

    fast_paths: bool = True

    def __init__(self, config: ModelConfig, vocab_size: int, seq_len: int, num_puzzle_identifiers: int) -> None:
        super().__init__()
        self.config = config
        self.vocab_size = vocab_size
        self.seq_len = seq_len
        self.num_puzzle_identifiers = num_puzzle_identifiers
        ops.set_backend(config.ops)
        if config.arch == "trm":
            from hrm_fast.model.trm import TRMInner  # hrm_fast.model.trm builds on this module's HRMInner

            self.inner: HRMInner = TRMInner(config, vocab_size, seq_len)
        else:
            self.inner = HRMInner(config, vocab_size, seq_len)
        self.canvas = math.isqrt(seq_len)
        if config.pad_aware and self.canvas**2 != seq_len:
            raise ValueError(f"model.pad_aware needs a square canvas; seq_len {seq_len} is not a square")
        self.puzzle_emb = (
            PuzzleEmbedding(num_puzzle_identifiers, config.puzzle_emb_ndim, self.inner.forward_dtype)
            if config.puzzle_emb_ndim > 0
            else None
        )

    def initial_carry(self, batch_size: int, device: torch.device | str | None = None) -> Carry:
        """A carry whose rows are all halted, so the first call loads every row from its batch."""
        device = torch.device(device) if device is not None else self.inner.H_init.device
        shape = (batch_size, self.inner.total_len, self.config.hidden_size)
        dtype = self.inner.forward_dtype
        return Carry(
            z_H=torch.zeros(shape, dtype=dtype, device=device),
            z_L=torch.zeros(shape, dtype=dtype, device=device),
            steps=torch.zeros(batch_size, dtype=torch.int32, device=device),
            halted=torch.ones(batch_size, dtype=torch.bool, device=device),
            current_data={
                "inputs": torch.zeros(batch_size, self.seq_len, dtype=torch.int32, device=device),
                "labels": torch.zeros(batch_size, self.seq_len, dtype=torch.int32, device=device),
                "puzzle_identifiers": torch.zeros(batch_size, dtype=torch.int32, device=device),
            },
        )

    def embed(self, data: dict[str, torch.Tensor], positions: torch.Tensor | None = None) -> torch.Tensor:
        """The input embedding x [B, T, D] of ``data`` (tokens + puzzle prefix); [B, T', D] at ``positions``."""
        vectors = self.puzzle_emb(data["puzzle_identifiers"]) if self.puzzle_emb is not None else None
        return self.inner.input_embeddings(data["inputs"], vectors, positions)

    def window(self, data: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """``model.pad_aware``: each row's positions (int64 [B, T']) in this segment's windows of ``data``; None when
        the window is the whole canvas (the default path runs)."""
        if torch.compiler.is_compiling():
            raise RuntimeError("model.pad_aware=true runs eagerly (a host read per segment): use compile=false")
        side, origins = row_windows(data["inputs"], data["labels"], self.canvas, self.config.pad_aware_step)
        if side == self.canvas:
            return None
        return window_positions(side, self.canvas, self.inner.prefix_len, origins)

    def full_logits(self, logits: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Windows' logits [B, side**2, V] -> [B, seq_len, V]; the cells outside them predict PAD (logit 1, else 0)."""
        full = logits.new_zeros(logits.shape[0], self.seq_len, logits.shape[2])
        full[..., PAD_ID] = 1
        cells = positions[:, self.inner.prefix_len :] - self.inner.prefix_len
        return full.scatter(1, cells[..., None].expand(-1, -1, logits.shape[2]), logits)

    def forward(
        self,
        carry: Carry,
        batch: dict[str, torch.Tensor],
        explore_draw: torch.Tensor | None = None,
        min_steps_draw: torch.Tensor | None = None,
    ) -> tuple[Carry, dict[str, torch.Tensor]]:
        """One ACT segment. ``explore_draw`` [B] fp32 in [0, 1) and ``min_steps_draw`` [B] int32 in
        [2, halt_max_steps] may be given (e.g. drawn for the global batch so that any rank layout
        explores identically); otherwise they are drawn from torch's RNG on the carry's device."""
        data = carry.current_data
        batch = {k: batch[k].to(data[k].dtype) for k in BATCH_KEYS}
        # 1. halted rows restart: z <- init, steps <- 0, data <- the new batch's row
        self._reset(carry, batch)
        fast = self.fast_paths
        casting = cast_weights_once(self.inner, self.inner.forward_dtype) if fast else contextlib.nullcontext()
        with casting:
            return self._segment(carry, explore_draw, min_steps_draw, fast)

    def _reset(self, carry: Carry, batch: dict[str, torch.Tensor]) -> None:
        data = carry.current_data
        ops.act_reset(
            carry.z_H, carry.z_L, carry.steps, data["inputs"], data["labels"], data["puzzle_identifiers"],
            carry.halted, self.inner.H_init, self.inner.L_init,
            batch["inputs"], batch["labels"], batch["puzzle_identifiers"],
        )  # fmt: skip

    def _segment(
        self, carry: Carry, explore_draw: torch.Tensor | None, min_steps_draw: torch.Tensor | None, fast: bool
    ) -> tuple[Carry, dict[str, torch.Tensor]]:
        """Steps 2-4 of :meth:`forward` (after the reset)."""
        cfg = self.config
        data = carry.current_data
        # 2. inner forward (1-step gradient); pad-aware: on the window's positions only
        positions = self.window(data) if cfg.pad_aware else None
        x = self.embed(data, positions)
        if positions is None:
            z_H, z_L, logits, q = self.inner(carry.z_H, carry.z_L, x, fast=fast)
            with torch.no_grad():
                carry.z_H.copy_(z_H)
                carry.z_L.copy_(z_L)
        else:
            z_H, z_L, logits, q = self.inner(gather_positions(carry.z_H, positions),
                                             gather_positions(carry.z_L, positions), x, fast=fast, positions=positions)
            with torch.no_grad():
                scatter_positions(carry.z_H, positions, z_H)
                scatter_positions(carry.z_L, positions, z_L)
            logits = self.full_logits(logits, positions)
        outputs = {"logits": logits, "q_halt_logits": q[:, 0], "q_continue_logits": q[:, 1]}

        # 3. step counters and halting (exploration draws come from torch's RNG on the device)
        batch_size = carry.steps.shape[0]
        device = carry.steps.device
        explore = self.training and cfg.halt_max_steps > 1
        if explore:
            if explore_draw is None:
                explore_draw = torch.rand(batch_size, device=device)
            if min_steps_draw is None:
                high = cfg.halt_max_steps + 1
                min_steps_draw = torch.randint(2, high, (batch_size,), device=device, dtype=torch.int32)
            explore_draw = explore_draw.to(device=device, dtype=torch.float32)
            min_steps_draw = min_steps_draw.to(device=device, dtype=torch.int32)
        else:
            explore_draw = torch.ones(batch_size, device=device)
            min_steps_draw = torch.zeros(batch_size, dtype=torch.int32, device=device)
        q_halt, q_cont = q.detach().t().contiguous()
        if cfg.arch == "trm" and not cfg.bootstrap_q:  # TRM's no_ACT_continue: halt when q_halt > 0
            q_cont = torch.zeros_like(q_cont)
        # ACT halting (HRM paper, adaptive computational time): steps += 1; halted = steps >= halt_max_steps.
        # In training (max > 1) a row also halts when q_halt > q_continue, but not before min_steps_draw steps
        # if its explore_draw < halt_exploration_prob. In eval every row runs halt_max_steps segments.
        ops.act_halt(
            carry.steps, carry.halted, q_halt, q_cont, explore_draw, min_steps_draw,
            cfg.halt_max_steps, cfg.halt_exploration_prob, self.training,
        )  # fmt: skip

        # 4. bootstrap target for Q-continue: the next segment's Q values on the new carry, same data
        if explore and cfg.bootstrap_q:
            with no_grad_region(fast):
                # a window's new z is what was just written back to the carry: no second gather
                z = (carry.z_H, carry.z_L) if positions is None else (z_H.detach(), z_L.detach())
                _, _, _, next_q = self.inner(*z, x.detach(), q_only=True, fast=fast, positions=positions)
                is_last = carry.steps >= cfg.halt_max_steps
                target = torch.sigmoid(torch.where(is_last, next_q[:, 0], torch.maximum(next_q[:, 0], next_q[:, 1])))
            # an inference-mode tensor cannot be saved for the BCE backward: one [B] copy makes it a normal one
            inference = fast and not torch.compiler.is_compiling()
            outputs["target_q_continue"] = target.clone() if inference else target
        return carry, outputs
