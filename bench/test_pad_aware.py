"""Pad-aware canvases (``model.pad_aware``) vs the full canvas: training examples per CPU-second on real ARC batches.

Groups ``pad_aware <device>``; ``impl``: ``full`` (the default path), ``pad-aware`` (each row on a k x k window
over its own cells, :func:`hrm_fast.model.hrm.row_windows`) and ``pad-aware-bucketed`` (the same, with the
sampler's ``bucket_batches`` over all the benchmark's batches: the same examples regrouped by grid size). All run
the eager :class:`hrm_fast.training.step.TrainStep` on batches drawn by the real ``TrainSampler`` from ARC-AGI-1
at full size (all tasks, canvas 30x30, ``num_aug`` 1, built once into ``.benchmarks/pad_aware_data``), at the
hrm-paper layer shapes (hidden 512, 8 heads, H4/L4 blocks) cut down for a CPU: H_cycles 1, L_cycles 1,
halt_max_steps 2, fp32, batch 4. extra_info: ``examples_per_cpu_s``, ``mean_window_side`` (30 = full canvas) and
``flops`` per call (hrm_fast.flops at the mean window's grid tokens).

    python -m bench.test_pad_aware --rounds 16   # the ratios, all interleaved in one process (16 = every batch)
    python -m bench.test_pad_aware --sides       # window sides at other batch sizes (no training; seconds)
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
from hrm_fast.model.hrm import HRM, row_windows
from hrm_fast.training.optim import build_optimizers
from hrm_fast.training.step import TrainStep

DATA = Path(__file__).resolve().parents[1] / ".benchmarks" / "pad_aware_data"
CUT = ["model.forward_dtype=float32", "model.H_cycles=1", "model.L_cycles=1", "model.halt_max_steps=2"]
IMPLS = ["full", "pad-aware", "pad-aware-bucketed"]
ROWS, BATCHES = 4, 16


def arc_dataset() -> PuzzleDataset:
    """The train split of ARC-AGI-1 (every task, 30x30 canvas, 1 augmentation), built on first use."""
    if not (DATA / "train" / "dataset.json").exists():
        build_dataset(DATA, ["arc-agi-1"], ["arc-agi-1"], num_aug=1, seed=0, progress=False, overwrite=True)
    return PuzzleDataset(DATA, "train")


def bench_config(impl: str) -> Config:
    return load_config("hrm-paper", [*CUT, f"model.pad_aware={str(impl != 'full').lower()}"])


def spread(rounds: int) -> list[int]:
    """``rounds`` batch indices spread evenly over the BATCHES (all of them, in turn, when rounds >= BATCHES)."""
    if rounds >= BATCHES:
        return list(range(BATCHES))
    stride = BATCHES // rounds
    return [stride * i + stride // 2 for i in range(rounds)]


def make_runner(impl: str, rows: int = ROWS, order: list[int] | None = None):
    """A no-argument callable running one training step of ``impl`` on the next of the sampler's first BATCHES
    batches, taken in ``order`` (default: all, in turn; the same for every impl); its ``sides`` list holds each
    call's window side and ``cpu`` its CPU seconds. Bucketed batches are sorted by size, so a subset of them
    must be spread over the pool (``order``) to be representative."""
    ds = arc_dataset()
    bucket = BATCHES if impl == "pad-aware-bucketed" else 0
    sampler = iter(TrainSampler(ds, rows, seed=0, bucket_batches=bucket))
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
        run.sides.append(model.canvas if positions is None else math.isqrt(positions.shape[1] - prefix))
        return positions

    model.window = record_window

    def run() -> None:
        c0 = time.process_time()
        step(batches[run.order[run.calls % len(run.order)]], explore, min_steps)
        sync()
        run.calls += 1
        run.cpu.append(time.process_time() - c0)
        if not cfg.model.pad_aware:
            run.sides.append(model.canvas)

    run.calls, run.sides, run.cpu, run.order = 0, [], [], order or list(range(BATCHES))
    run.cfg = cfg
    return run


def mean_flops(cfg: Config, sides: list[int]) -> float:
    """Model FLOPs of one call (ROWS rows x one training segment) at the sides' mean grid tokens."""
    tokens = round(statistics.mean(s * s for s in sides))
    return ROWS * segment_flops(cfg.model, tokens, 12).train_segment


@pytest.mark.parametrize("impl", IMPLS)
def test_pad_aware(benchmark, impl):
    rounds = 3 if DEVICE == "cpu" else BATCHES
    run = make_runner(impl, order=spread(rounds))
    run()  # allocator warm-up, outside the timed rounds (then each of the rounds' batches once)
    run.sides.clear()
    run.cpu.clear()
    benchmark.group = f"pad_aware {DEVICE}"
    benchmark.pedantic(run, rounds=rounds, warmup_rounds=0, iterations=1)
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
    parser.add_argument("--sides", action="store_true", help="print window sides at batch 1..256 and stop")
    args = parser.parse_args(argv)
    if args.sides:
        window_sides()
        return 0
    ROWS = args.rows
    if DEVICE == "cpu":
        torch.set_num_threads(1)  # as bench/conftest.py does for pytest runs
    print(f"device {DEVICE}, {torch.get_num_threads()} thread(s), torch {torch.__version__}, batch {ROWS}")
    runs = {impl: make_runner(impl, ROWS, spread(args.rounds)) for impl in IMPLS}
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
    for impl in IMPLS[1:]:
        print(f"{impl} / full: {rate[impl] / rate['full']:.2f}x examples per CPU-second")
    return 0


def window_sides(batch_sizes: tuple[int, ...] = (1, 4, 16, 64, 256), examples: int = 8192,
                 pools: tuple[int, ...] = (0, 16, 128), max_segments: int = 16) -> None:
    """Mean pad-aware window side (step 4) and token fraction of the sampler's batches, plain and bucketed, and of
    an ACT carry fed by them: each row stays a uniform 1..max_segments segments (an assumption: hrm-paper's
    halt_max_steps, not a trained model's halting), then its slot takes the current batch's row (HRM's reset)."""
    ds = arc_dataset()
    gen = torch.Generator().manual_seed(0)

    def side(data: dict[str, torch.Tensor]) -> int:
        return row_windows(data["inputs"], data["labels"], ds.canvas, 4)[0]

    def line(what: str, sides: list[int]) -> str:
        return (f"{what} mean window side {statistics.mean(sides):4.1f}, "
                f"{statistics.mean(s * s for s in sides) / ds.canvas**2:.2f} of the grid tokens")

    for rows in batch_sizes:
        for bucket in pools:
            batches = iter(TrainSampler(ds, rows, seed=0, bucket_batches=bucket))
            batch_sides, carry_sides = [], []
            carry = {k: v.clone() for k, v in next(batches).items()}
            left = torch.randint(1, max_segments + 1, (rows,), generator=gen)
            for _ in range(examples // rows):
                batch = next(batches)
                batch_sides.append(side(batch))
                halted = left == 0
                for k in ("inputs", "labels"):
                    carry[k][halted] = batch[k][halted]
                left[halted] = torch.randint(1, max_segments + 1, (int(halted.sum()),), generator=gen)
                carry_sides.append(side(carry))
                left -= 1
            print(f"batch {rows:4d}, bucket_batches {bucket:3d}: {line('batches', batch_sides)}; "
                  f"{line('carry', carry_sides)}")


if __name__ == "__main__":
    raise SystemExit(main())
