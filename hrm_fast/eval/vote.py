"""Voting over de-augmented predictions, per (task id, test index).

Every augmented view of a test input yields one predicted grid (already cropped and mapped back to
the original orientation and colours) and the model's halting confidence sigmoid(q_halt). Identical
grids pool their votes. Candidates are ranked by vote count, ties broken by the mean halting
confidence (HRM's arc_eval notebook), remaining ties by first appearance (deterministic).

Empty crops (0x0: the model put no colour in the top-left cell) are not candidates: an ARC answer is
at least 1x1, so they can never be right and cannot be written to submission.json. They are counted
per test input as ``empty`` instead.

Sharded evaluation (``torchrun``): each rank votes over its share of the views, passing each view's
dataset row as its ``order``; :meth:`VoteBox.merge` then pools the boxes. "First appearance" is the
smallest order, and a candidate's q-halt sum is added up in order, so the merged box ranks and sums
exactly (bit for bit) as one box fed every view in row order, whatever the split and merge order.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from hrm_fast.eval.grids import grid_key

Key = tuple[str, int]  # (task id, index of the test input within the task)


@dataclass
class Candidate:
    """One distinct predicted grid for a test input and the views that voted for it."""

    grid: np.ndarray  # uint8 [H, W], original orientation and colours
    orders: list[int] = field(default_factory=list)  # order key (dataset row) of each voting view
    q_halts: list[float] = field(default_factory=list)  # sigmoid(q_halt) of each voting view, same positions

    @property
    def votes(self) -> int:
        return len(self.orders)

    @property
    def first_seen(self) -> int:
        """The smallest order key among the voting views (the tie-break of last resort)."""
        return min(self.orders)

    @property
    def q_halt_sum(self) -> float:
        """Sum of sigmoid(q_halt) over the voting views, added in order-key order (split-independent bits)."""
        total = 0.0
        for _, q in sorted(zip(self.orders, self.q_halts)):
            total += q
        return total

    @property
    def mean_q_halt(self) -> float:
        """Mean sigmoid(q_halt) over the views that produced this grid, in [0, 1]."""
        return self.q_halt_sum / self.votes if self.votes else 0.0


class VoteBox:
    """Accumulates predictions and ranks them per (task id, test index)."""

    def __init__(self) -> None:
        self._candidates: dict[Key, dict[bytes, Candidate]] = defaultdict(dict)
        self._views: dict[Key, int] = defaultdict(int)
        self._empty: dict[Key, int] = defaultdict(int)
        self._next_order = 0  # order key of the next view added without one
        self._auto_orders = False  # some view got an automatic order key (such a box cannot be merged)

    def add(self, task_id: str, test_index: int, grid: np.ndarray, q_halt_prob: float, order: int | None = None
            ) -> None:
        """Record one view's prediction. ``grid``: [H, W] ints 0..9 (may be 0x0); q_halt_prob in [0, 1].

        ``order``: the view's position in the whole evaluation (its dataset row), unique per view; None = the
        number of views added before it. Boxes to be merged must be fed explicit, disjoint orders."""
        key = (task_id, int(test_index))
        self._views[key] += 1
        if order is None:
            order, self._auto_orders = self._next_order, True
        self._next_order = max(self._next_order, int(order)) + 1
        if grid.size == 0:
            self._empty[key] += 1
            return
        box = self._candidates[key]
        gk = grid_key(grid)
        cand = box.get(gk)
        if cand is None:
            cand = box[gk] = Candidate(grid=np.array(grid, dtype=np.uint8, copy=True))
        cand.orders.append(int(order))
        cand.q_halts.append(float(q_halt_prob))

    def merge(self, other: VoteBox) -> VoteBox:
        """Pool ``other``'s views into this box (in place; returns self). Both must have been fed explicit,
        disjoint ``order`` keys; the result does not depend on the order of merges."""
        if (self._auto_orders and other._views) or (other._auto_orders and self._views):
            raise ValueError("VoteBox.merge: boxes fed without explicit order keys cannot be merged "
                             "(pass each view's dataset row as order=)")
        self._auto_orders = self._auto_orders or other._auto_orders
        self._next_order = max(self._next_order, other._next_order)
        for key, n in other._views.items():
            self._views[key] += n
        for key, n in other._empty.items():
            self._empty[key] += n
        for key, theirs in other._candidates.items():
            mine = self._candidates[key]
            for gk, cand in theirs.items():
                if gk not in mine:
                    mine[gk] = Candidate(grid=cand.grid.copy())
                mine[gk].orders.extend(cand.orders)
                mine[gk].q_halts.extend(cand.q_halts)
        return self

    @classmethod
    def merged(cls, boxes: Iterable[VoteBox]) -> VoteBox:
        """A new box holding the views of all ``boxes`` (which are left unchanged)."""
        out = cls()
        for box in boxes:
            out.merge(box)
        return out

    def keys(self) -> list[Key]:
        """Every (task id, test index) that received at least one view, sorted."""
        return sorted(self._views)

    def num_views(self, task_id: str, test_index: int) -> int:
        """How many views were recorded for this test input (empty crops included)."""
        return self._views.get((task_id, int(test_index)), 0)

    def num_empty(self, task_id: str, test_index: int) -> int:
        """How many views produced an empty (0x0) crop."""
        return self._empty.get((task_id, int(test_index)), 0)

    def ranked(self, task_id: str, test_index: int) -> list[Candidate]:
        """Candidates best first: more votes, then higher mean sigmoid(q_halt), then first seen."""
        box = self._candidates.get((task_id, int(test_index)), {})
        return sorted(box.values(), key=lambda c: (-c.votes, -c.mean_q_halt, c.first_seen))


def rank_of(candidates: list[Candidate] | list[np.ndarray], truth: np.ndarray) -> int | None:
    """0-based position of ``truth`` among ranked candidates (Candidate or bare grids), None if absent."""
    tk = grid_key(truth)
    for i, c in enumerate(candidates):
        g = c.grid if isinstance(c, Candidate) else c
        if grid_key(g) == tk:
            return i
    return None
