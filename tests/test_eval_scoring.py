"""Voting and the three scores (model-free)."""

import numpy as np
import pytest

from hrm_fast.eval import score as score_mod
from hrm_fast.eval.score import pass_at_k, scores_at, usable_ks
from hrm_fast.eval.vote import VoteBox, rank_of


def g(*rows):
    return np.asarray(rows, dtype=np.uint8)


def test_scores_at_hand_computed():
    # task A: 2 test outputs, first solved at rank 0, second not found; task B: one output, right answer 2nd.
    ranks = {"A": [0, None], "B": [1]}
    assert scores_at(ranks, 1) == {"kaggle": 1 / 3, "arc_prize": (0.5 + 0.0) / 2, "all_or_nothing": 0.0}
    assert scores_at(ranks, 2) == {"kaggle": 2 / 3, "arc_prize": (0.5 + 1.0) / 2, "all_or_nothing": 0.5}


def test_scores_reject_bad_input():
    with pytest.raises(ValueError):
        scores_at({"A": [0]}, 0)
    with pytest.raises(ValueError):
        scores_at({}, 1)
    with pytest.raises(ValueError, match="task A"):
        scores_at({"A": []}, 1)


def test_pass_at_k_monotone_on_random_ranks():
    rng = np.random.default_rng(0)
    for _ in range(20):
        ranks = {
            f"t{i}": [None if rng.random() < 0.3 else int(rng.integers(0, 200)) for _ in range(rng.integers(1, 4))]
            for i in range(15)
        }
        table = pass_at_k(ranks, [1, 2, 10, 100, 1000])
        for vals in table.values():
            v = list(vals.values())
            assert v == sorted(v)
        assert table["kaggle"]["pass@1000"] == sum(r is not None for t in ranks.values() for r in t) / sum(
            len(t) for t in ranks.values()
        )


def test_pass_at_k_assertion_fires(monkeypatch):
    fake = {1: 0.5, 2: 0.25}
    monkeypatch.setattr(
        score_mod, "scores_at", lambda ranks, k: {"kaggle": fake[k], "arc_prize": 0.0, "all_or_nothing": 0.0}
    )
    with pytest.raises(AssertionError, match="kaggle"):
        score_mod.pass_at_k({"A": [0]}, [1, 2])


def test_usable_ks():
    assert usable_ks(1) == [1, 2]
    assert usable_ks(16) == [1, 2, 10]
    assert usable_ks(1000) == [1, 2, 10, 100, 1000]
    assert usable_ks(50, [1, 2, 5, 10, 100]) == [1, 2, 5, 10]


def test_vote_ranking_by_count_then_q_then_first_seen():
    box = VoteBox()
    a, b, c, d = g([1]), g([2]), g([3, 3]), g([3], [3])  # c and d: same cells, different shapes
    for grid, q in [(a, 0.9), (b, 0.1), (b, 0.2), (c, 0.5), (d, 0.5), (a, 0.1)]:
        box.add("T", 0, grid, q)
    ranked = box.ranked("T", 0)
    # a and b both have 2 votes; a's mean q (0.5) beats b's (0.15); c before d (tie, first seen)
    assert [r.grid.tolist() for r in ranked] == [[[1]], [[2]], [[3, 3]], [[3], [3]]]
    assert [r.votes for r in ranked] == [2, 2, 1, 1]
    assert ranked[0].mean_q_halt == pytest.approx(0.5)
    assert ranked[1].mean_q_halt == pytest.approx(0.15)
    assert rank_of(ranked, d) == 3
    assert rank_of(ranked, g([4])) is None


def test_vote_q_breaks_tie_in_favour_of_lower_count_order():
    box = VoteBox()
    box.add("T", 0, g([1]), 0.2)
    box.add("T", 0, g([2]), 0.9)
    assert [r.grid.item() for r in box.ranked("T", 0)] == [2, 1]


def test_empty_crops_are_counted_not_candidates():
    box = VoteBox()
    empty = np.zeros((0, 0), dtype=np.uint8)
    for _ in range(3):
        box.add("T", 1, empty, 0.99)
    box.add("T", 1, g([5]), 0.01)
    assert box.num_views("T", 1) == 4 and box.num_empty("T", 1) == 3
    assert [r.grid.item() for r in box.ranked("T", 1)] == [5]
    assert box.ranked("T", 0) == [] and box.num_views("T", 0) == 0
    assert box.keys() == [("T", 1)]
