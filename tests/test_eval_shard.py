"""Sharded ARC evaluation: vote boxes of disjoint views merge into exactly the one-process box, the rows are dealt
out over ranks without loss or overlap, and ``torchrun`` with 2 gloo ranks writes the same scores.json and
submission.json as one process (``train.evaluate`` and ``eval.arc_at_end`` of ``train.run``)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torchrun_launch import failure_report, torchrun

from hrm_fast.eval.pipeline import shard_rows
from hrm_fast.eval.vote import VoteBox

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = [
    "model.hidden_size=32", "model.num_heads=2", "model.H_layers=1", "model.L_layers=1", "model.H_cycles=1",
    "model.L_cycles=1", "model.halt_max_steps=2", "model.puzzle_emb_ndim=32",
]
# Facts that describe the machine or the moment, not the result.
RUN_FACTS = ("seconds", "views per second", "device", "written_at")


# ---------------------------------------------------------------------------------------------- unit tests
def _box_state(box: VoteBox) -> dict:
    """Everything finalize reads from a box: per key the views, empties and the ranked candidates."""
    return {
        key: (box.num_views(*key), box.num_empty(*key),
              [(c.grid.shape, c.grid.tobytes(), c.votes, c.q_halt_sum, c.mean_q_halt, c.first_seen)
               for c in box.ranked(*key)])
        for key in box.keys()
    }


def _views(rng: np.random.Generator, n: int) -> list[tuple[str, int, np.ndarray, float]]:
    """n views over 3 test inputs with few distinct grids (1x1 colours 1..3, a 2x1, and empty crops) and q values
    from a small set, so votes and mean q tie often and only first-seen order can break the tie."""
    grids = [np.full((1, 1), c, dtype=np.uint8) for c in (1, 2, 3)] + [np.array([[1], [1]], dtype=np.uint8),
                                                                       np.zeros((0, 0), dtype=np.uint8)]
    qs = [0.5, 0.5, 1.0, 1.0, 0.1, 0.2, 0.3]
    views = [(f"task{int(rng.integers(4))}", int(rng.integers(2)), grids[int(rng.integers(len(grids)))],
              qs[int(rng.integers(len(qs)))]) for _ in range(n)]
    # A sure tie (2 votes, mean q 0.75 each) at random places: which grid ranks first depends on which comes first.
    for grid, q in [(grids[0], 0.5), (grids[1], 0.5), (grids[1], 1.0), (grids[0], 1.0)]:
        views.insert(int(rng.integers(len(views) + 1)), ("tie", 0, grid, q))
    return views


def _fill(views, rows) -> VoteBox:
    box = VoteBox()
    for r in rows:
        task, idx, grid, q = views[r]
        box.add(task, idx, grid, q, order=int(r))
    return box


@pytest.mark.parametrize("seed", range(6))
def test_merged_shards_equal_the_whole_in_any_order(seed):
    rng = np.random.default_rng(seed)
    views = _views(rng, 60)
    whole = _box_state(_fill(views, range(len(views))))
    # Ties on votes and mean q exist, so the first-seen tie-break is exercised.
    assert any(x[2:5] == y[2:5] for _, _, c in whole.values() for x, y in zip(c, c[1:])), "no tie in the data"
    n_shards = 2 + seed % 3
    owner = rng.integers(n_shards, size=len(views))
    shards = [np.flatnonzero(owner == s) for s in range(n_shards)]
    for perm in itertools.permutations(range(n_shards)):
        boxes = [_fill(views, rng.permutation(shards[s])) for s in perm]  # any add order within a shard too
        merged = VoteBox.merged(boxes)
        assert _box_state(merged) == whole, perm
    # merge() in place, pairwise, also equals the whole
    left = _fill(views, shards[-1]).merge(VoteBox.merged(_fill(views, s) for s in shards[:-1]))
    assert _box_state(left) == whole


def test_merge_sums_q_halt_in_view_order_not_per_shard():
    """0.1 + 0.2 + 0.3 != 0.1 + (0.2 + 0.3) in floating point: a merge that added per-shard sums would rank B
    before A here, one process ranks A first (equal votes and mean q, A seen first)."""
    a, b = np.full((1, 1), 1, dtype=np.uint8), np.full((1, 1), 2, dtype=np.uint8)
    views = [("t", 0, a, 0.1), ("t", 0, b, 0.2), ("t", 0, a, 0.2), ("t", 0, b, 0.2), ("t", 0, a, 0.3),
             ("t", 0, b, 0.2)]
    assert (0.1 + 0.2) + 0.3 == (0.2 + 0.2) + 0.2 != 0.1 + (0.2 + 0.3)
    whole = _fill(views, range(6))
    assert [c.grid.item() for c in whole.ranked("t", 0)] == [1, 2]
    for first, second in ([0, 1], [2, 3, 4, 5]), ([2, 3, 4, 5], [0, 1]):
        merged = VoteBox.merged([_fill(views, first), _fill(views, second)])
        assert _box_state(merged) == _box_state(whole)


def test_merge_refuses_boxes_without_order_keys():
    one, two = VoteBox(), VoteBox()
    one.add("t", 0, np.ones((1, 1), dtype=np.uint8), 0.5)
    two.add("t", 0, np.ones((1, 1), dtype=np.uint8), 0.5)
    with pytest.raises(ValueError, match="order"):
        VoteBox.merged([one, two])
    assert _box_state(VoteBox.merged([one])) == _box_state(one)  # a single box needs no keys


@pytest.mark.parametrize("n_rows, batch_size", [(0, 8), (5, 8), (37, 8), (64, 16), (101, 7)])
def test_shard_rows_deals_every_row_once_in_static_batches(n_rows, batch_size):
    rows = np.arange(1000, 1000 + 3 * n_rows, 3)
    alone, alone_batch = shard_rows(rows, batch_size, 0, 1)
    assert np.array_equal(alone, rows) and alone_batch == batch_size
    for world in (2, 3, 4):
        parts = [shard_rows(rows, batch_size, r, world) for r in range(world)]
        local = {p[1] for p in parts}
        assert local == {-(-batch_size // world)}
        got = np.concatenate([p[0] for p in parts])
        assert sorted(got.tolist()) == rows.tolist()  # every row exactly once
        assert all(np.all(np.diff(p[0]) > 0) for p in parts)  # each rank in row order
        sizes = [len(p[0]) for p in parts]
        assert max(sizes) - min(sizes) <= local.pop()  # at most one batch apart


# ---------------------------------------------------------------------------------------------- end to end
def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from hrm_fast.data.build import build_dataset

    out = tmp_path_factory.mktemp("data") / "tiny6"
    build_dataset(out, ["arc-agi-1"], ["arc-agi-1"], num_aug=7, max_grid_size=6, val_fraction=0.2, progress=False)
    return out


@pytest.fixture(scope="module")
def checkpoint(dataset, tmp_path_factory) -> Path:
    from hrm_fast.checkpoint import save_checkpoint
    from hrm_fast.config import load_config
    from hrm_fast.model.hrm import HRM

    cfg = load_config("cpu-tiny", [f"data.path={dataset}", "data.max_grid_size=6", *TINY_MODEL,
                                   "eval.ks=[1,2,10]"])  # fmt: skip
    n_ids = len(json.loads((dataset / "identifiers.json").read_text()))
    torch.manual_seed(0)
    model = HRM(cfg.model, vocab_size=12, seq_len=36, num_puzzle_identifiers=n_ids)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "step_0", model, cfg)


def _evaluate_one_process(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "train.evaluate", *args], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=180)


def _assert_same_outputs(sharded: Path, single: Path) -> dict:
    """scores.json equal but for the run facts, submission.json and tasks.csv byte for byte; returns the scores."""
    a, b = (json.loads((d / "scores.json").read_text()) for d in (sharded, single))
    assert "x 2 ranks" in a["device"] and "ranks" not in b["device"]
    assert {k: v for k, v in a.items() if k not in RUN_FACTS} == {k: v for k, v in b.items() if k not in RUN_FACTS}
    assert (sharded / "submission.json").read_bytes() == (single / "submission.json").read_bytes()
    assert (sharded / "tasks.csv").read_bytes() == (single / "tasks.csv").read_bytes()
    assert sorted(p.name for p in sharded.iterdir()) == ["report.html", "scores.json", "submission.json", "tasks.csv"]
    return a


def test_torchrun_two_ranks_write_what_one_process_writes(checkpoint, dataset, tmp_path):
    """2 ranks with eval.batch_size=2B run exactly the batches of one process with B (blocks of B rows are dealt
    out alternately), so the predictions are the same bits and the merged vote must give identical files."""
    from hrm_fast.eval.views import load_eval_split

    n_rows = load_eval_split(dataset, "test").num_rows
    batch = 6
    assert n_rows > 4 * batch and n_rows % (2 * batch) != 0  # several batches per rank, a padded last batch
    two, one = tmp_path / "two", tmp_path / "one"
    common = [f"checkpoint={checkpoint}", "eval.views=all", "device=cpu"]
    res = torchrun(2, ["--tee", "3", "-m", "train.evaluate", *common, f"eval.batch_size={2 * batch}", f"out={two}",
                       "progress=true"], cwd=ROOT, env=_env(), restore=[two])  # fmt: skip
    assert res.returncode == 0, failure_report(res)
    # --tee prefixes each worker's lines with [default<rank>]: only rank 0 reports and shows the bar.
    assert res.stdout.count("wrote ") == 1 and "[default0]:wrote " in res.stdout, failure_report(res)
    assert "[default0]:eval views (rank 0's share, 2 ranks)" in res.stderr, failure_report(res)
    assert "[default1]:eval views" not in res.stderr and "[default1]:wrote" not in res.stdout
    res1 = _evaluate_one_process([*common, f"eval.batch_size={batch}", f"out={one}", "progress=false"])
    assert res1.returncode == 0, res1.stderr[-3000:]
    scores = _assert_same_outputs(two, one)
    assert scores["views"] == n_rows and scores["tasks"] > 10


def test_torchrun_training_scores_at_the_end_on_all_ranks(dataset, tmp_path):
    """eval.arc_at_end under 2 ranks: the views are shared out, rank 0 writes and logs; the files equal a
    one-process train.evaluate of the final checkpoint."""
    run = tmp_path / "run"
    args = [*TINY_MODEL, "preset=cpu-tiny", "device=cpu", f"data.path={dataset}", "train.global_batch_size=8",
            "train.max_steps=2", "log.tensorboard=false", "eval.every=1000", "eval.batch_size=16",
            "eval.arc_at_end=true", "eval.views=2", "eval.ks=[1,2]", f"run.dir={run}"]
    res = torchrun(2, ["-m", "train.run", *args], cwd=ROOT, env=_env(), restore=[run])
    assert res.returncode == 0, failure_report(res)
    assert "2 rank(s)" in res.stdout and res.stdout.count("ARC scores of step 2") == 1, failure_report(res)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert sum(1 for r in records if "eval/kaggle@2" in r) == 1
    one = tmp_path / "one"
    res1 = _evaluate_one_process([f"checkpoint={run / 'last'}", "eval.batch_size=8", "device=cpu", f"out={one}",
                                  "progress=false"])  # fmt: skip
    assert res1.returncode == 0, res1.stderr[-3000:]
    sharded = run / "eval-test-step2"
    a, b = (json.loads((d / "scores.json").read_text()) for d in (sharded, one))
    assert a.pop("step") == 2 == b.pop("step") and b.pop("checkpoint") == str(run / "last")
    assert b.pop("run") == str(run.resolve())  # train.evaluate names the checkpoint's run
    assert a["device"] == "cpu x 2 ranks" and b["device"] == "cpu"  # the views were shared out
    assert {k: v for k, v in a.items() if k not in RUN_FACTS} == {k: v for k, v in b.items() if k not in RUN_FACTS}
    assert (sharded / "submission.json").read_bytes() == (one / "submission.json").read_bytes()
