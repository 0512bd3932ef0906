"""Voting over de-augmented predictions, per (task id, test index).

Every augmented view of a test input yields one predicted grid (already cropped and mapped back to
the original orientation and colours) and the model's halting confidence sigmoid(q_halt). Identical
grids pool their votes. Candidates are ranked by vote count, ties broken by the mean halting
confidence (HRM's arc_eval notebook), remaining ties by first appearance (deterministic).

Empty crops (0x0: the model put no colour in the top-left cell) are not candidates: an ARC answer is
at least 1x1, so they can never be right and cannot be written to submission.json. They are counted
per test input as ``empty`` instead.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from hrm_fast.eval.grids import grid_key

Key = tuple[str, int]  # (task id, index of the test input within the task)


@dataclass
class Candidate:
    """One distinct predicted grid for a test input and the views that voted for it."""

    grid: np.ndarray  # uint8 [H, W], original orientation and colours
    votes: int = 0
    q_halt_sum: float = 0.0

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

    def add(self, task_id: str, test_index: int, grid: np.ndarray, q_halt_prob: float) -> None:
        """Record one view's prediction. ``grid``: [H, W] ints 0..9 (may be 0x0); q_halt_prob in [0, 1]."""
        key = (task_id, int(test_index))
        self._views[key] += 1
        if grid.size == 0:
            self._empty[key] += 1
            return
        box = self._candidates[key]
        gk = grid_key(grid)
        cand = box.get(gk)
        if cand is None:
            cand = box[gk] = Candidate(grid=np.array(grid, dtype=np.uint8, copy=True))
        cand.votes += 1
        cand.q_halt_sum += float(q_halt_prob)

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
        # dicts keep insertion order and sorted() is stable, so exact ties keep first-seen order.
        return sorted(box.values(), key=lambda c: (-c.votes, -c.mean_q_halt))


def rank_of(candidates: list[Candidate] | list[np.ndarray], truth: np.ndarray) -> int | None:
    """0-based position of ``truth`` among ranked candidates (Candidate or bare grids), None if absent."""
    tk = grid_key(truth)
    for i, c in enumerate(candidates):
        g = c.grid if isinstance(c, Candidate) else c
        if grid_key(g) == tk:
            return i
    return None
