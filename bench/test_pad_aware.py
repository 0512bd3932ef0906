"""Pad-aware canvases (``model.pad_aware``) vs the full canvas: training examples per CPU-second on real ARC batches.

Groups ``pad_aware <device>``; ``impl``: ``full`` (the default path) and ``pad-aware`` (each segment on the
smallest top-left window holding the batch's cells, :func:`hrm_fast.model.hrm.window_side`). Both run the eager
:class:`hrm_fast.training.step.TrainStep` on the same batches, drawn by the real ``TrainSampler`` from ARC-AGI-1
at full size (all tasks, canvas 30x30, ``num_aug`` 1, built once into ``.benchmarks/pad_aware_data``), at the
hrm-paper layer shapes (hidden 512, 8 heads, H4/L4 blocks) cut down for a CPU: H_cycles 1, L_cycles 1,
halt_max_steps 2, fp32, batch 4. extra_info: ``examples_per_cpu_s``, ``mean_window_side`` (30 = full canvas) and
``flops`` per call (hrm_fast.flops at the mean window's grid tokens).

    python -m bench.test_pad_aware --rounds 5   # the ratio, both interleaved in one process
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

import pytest
import torch

from bench.test_train_step import DEVICE, make_draws, sync
from hrm_fast.config import Config, load_config
from hrm_fast.data.build import build_dataset
from hrm_fast.data.dataset import PuzzleDataset, TrainSampler
from hrm_fast.flops import segment_flops
from hrm_fast.model.hrm import HRM
from hrm_fast.training.optim import build_optimizers
from hrm_fast.training.step import TrainStep

DATA = Path(__file__).resolve().parents[1] / ".benchmarks" / "pad_aware_data"
CUT = ["model.forward_dtype=float32", "model.H_cycles=1", "model.L_cycles=1", "model.halt_max_steps=2"]
IMPLS = ["full", "pad-aware"]
ROWS, BATCHES = 4, 16


def arc_dataset() -> PuzzleDataset:
    """The train split of ARC-AGI-1 (every task, 30x30 canvas, 1 augmentation), built on first use."""
    if not (DATA / "train" / "dataset.json").exists():
        build_dataset(DATA, ["arc-agi-1"], ["arc-agi-1"], num_aug=1, seed=0, progress=False, overwrite=True)
    return PuzzleDataset(DATA, "train")


def bench_config(impl: str) -> Config:
    return load_config("hrm-paper", [*CUT, f"model.pad_aware={str(impl == 'pad-aware').lower()}"])


def make_runner(impl: str, rows: int = ROWS):
    """A no-argument callable running one training step of ``impl`` on the next sampler batch (the same batch
    sequence for every impl); its ``sides`` list holds each call's window side and ``cpu`` its CPU seconds."""
    ds = arc_dataset()
    sampler = iter(TrainSampler(ds, rows, seed=0))
    batches = [{k: v.to(DEVICE) for k, v in next(sampler).items()} for _ in range(BATCHES)]
    cfg = bench_config(impl)
    torch.manual_seed(0)
    model = HRM(cfg.model, ds.metadata.vocab_size, ds.seq_len, ds.metadata.num_puzzle_identifiers).to(DEVICE).train()
    step = TrainStep(model, build_optimizers(model, cfg.train), [model.initial_carry(rows, DEVICE)],
                     loss_type=cfg.model.loss_type, global_batch_size=rows, grad_clip=cfg.train.grad_clip,
                     compile=False)
    explore, min_steps = make_draws(cfg, rows)
    window, prefix = model.window, model.inner.prefix_len

    def record_window(data: dict[str, torch.Tensor]) -> torch.Tensor | None:
        positions = window(data)
        run.sides.append(model.canvas if positions is None else math.isqrt(positions.numel() - prefix))
        return positions

    model.window = record_window

    def run() -> None:
        c0 = time.process_time()
        step(batches[run.calls % BATCHES], explore, min_steps)
        sync()
        run.calls += 1
        run.cpu.append(time.process_time() - c0)
        if not cfg.model.pad_aware:
            run.sides.append(model.canvas)

    run.calls, run.sides, run.cpu = 0, [], []
    run.cfg = cfg
    return run


def mean_flops(cfg: Config, sides: list[int]) -> float:
    """Model FLOPs of one call (ROWS rows x one training segment) at the sides' mean grid tokens."""
    tokens = round(statistics.mean(s * s for s in sides))
    return ROWS * segment_flops(cfg.model, tokens, 12).train_segment


@pytest.mark.parametrize("impl", IMPLS)
def test_pad_aware(benchmark, impl):
    run = make_runner(impl)
    run()  # allocator warm-up, outside the timed rounds
    run.sides.clear()
    run.cpu.clear()
    benchmark.group = f"pad_aware {DEVICE}"
    benchmark.pedantic(run, rounds=3 if DEVICE == "cpu" else 10, warmup_rounds=0, iterations=1)
    benchmark.extra_info.update(device=DEVICE, impl=impl, rows=ROWS, mean_window_side=statistics.mean(run.sides),
                                examples_per_cpu_s=ROWS * len(run.cpu) / sum(run.cpu),
                                flops=mean_flops(run.cfg, run.sides))


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.test_pad_aware [--rounds N] [--rows R]``: full vs pad-aware, interleaved, CPU time."""
    import argparse

    global ROWS
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows", type=int, default=ROWS)
    args = parser.parse_args(argv)
    ROWS = args.rows
    if DEVICE == "cpu":
        torch.set_num_threads(1)  # as bench/conftest.py does for pytest runs
    print(f"device {DEVICE}, {torch.get_num_threads()} thread(s), torch {torch.__version__}, batch {ROWS}")
    runs = {impl: make_runner(impl, ROWS) for impl in IMPLS}
    for run in runs.values():
        run()  # warm-up
        run.sides.clear()
        run.cpu.clear()
    for _ in range(args.rounds):
        for run in runs.values():
            run()
    rate = {}
    for impl, run in runs.items():
        rate[impl] = ROWS * len(run.cpu) / sum(run.cpu)
        print(f"{impl:10s} median {statistics.median(run.cpu):.2f} CPU-s per step, {rate[impl]:.3f} examples per "
              f"CPU-second, mean window side {statistics.mean(run.sides):.1f}, "
              f"{mean_flops(run.cfg, run.sides) / 1e12:.3f} TFLOP per step")
    print(f"pad-aware / full: {rate['pad-aware'] / rate['full']:.2f}x examples per CPU-second")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
