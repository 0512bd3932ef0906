"""A TRM training step vs an HRM one at the same hidden size, batch and grid sequence (``cpu-tiny`` shapes).

Group ``trm_vs_hrm cpu-tiny <device>``; ``impl``:
- ``hrm`` / ``hrm-compiled``: ``cpu-tiny`` as configured (H 2 / L 2 blocks, 2 x 2 cycles, 1-step gradient,
  bootstrap target-Q pass), :class:`hrm_fast.training.step.TrainStep` eager / compiled;
- ``trm`` / ``trm-compiled``: the same hidden size (128), heads, batch and grids with TRM's ARC layout
  (``model.arch=trm``: 2 blocks, H_cycles 3, L_cycles 4, the whole last cycle back-propagated, no
  bootstrap pass, 16 prefix tokens) and its EMA update inside the step.
CPU: fp32, batch 16; CUDA: the preset's dtype, batch 64. ``flops`` = model FLOPs per call (hrm_fast.flops):
TRM's step does 50 block-pass equivalents per row (S = 116) against HRM's 32 (S = 101).

``python -m bench.test_trm_step [--rounds N]`` measures the four paths interleaved in one process and prints
CPU and wall time with the TRM / HRM ratio.
"""

from __future__ import annotations

import statistics
import time

import pytest

from bench.test_train_step import DEVICE, ROUNDS, SHAPES, interleaved, make_batch, make_draws, make_model, record
from hrm_fast.config import Config, load_config
from hrm_fast.flops import config_flops
from hrm_fast.training.ema import EMA
from hrm_fast.training.optim import build_optimizers
from hrm_fast.training.step import TrainStep

PRESET = "cpu-tiny"
TRM_ARCH = ["model.arch=trm", "model.L_layers=2", "model.H_cycles=3", "model.L_cycles=4",
            "model.puzzle_emb_tokens=16", "model.bootstrap_q=false", "train.ema=true"]
IMPLS = ["hrm", "hrm-compiled", "trm", "trm-compiled"]


def bench_config(impl: str) -> tuple[Config, int]:
    overrides, rows = SHAPES[DEVICE][PRESET]
    return load_config(PRESET, [*overrides, *(TRM_ARCH if impl.startswith("trm") else [])]), rows


def runner(_preset: str, impl: str):  # noqa: ANN201 -- the callable of bench.test_train_step.interleaved
    """A no-argument callable running one training step (TrainStep, EMA when the config has it) of ``impl``."""
    cfg, rows = bench_config(impl)
    model = make_model(cfg, fast=True)
    ema = EMA(model, cfg.train.ema_decay) if cfg.train.ema else None
    step = TrainStep(model, build_optimizers(model, cfg.train), [model.initial_carry(rows, DEVICE)],
                     loss_type=cfg.model.loss_type, global_batch_size=rows, grad_clip=cfg.train.grad_clip,
                     compile="compiled" in impl, cuda_graph="compiled" in impl and DEVICE == "cuda", ema=ema)
    batch, (explore, min_steps) = make_batch(cfg, rows), make_draws(cfg, rows)

    def run() -> None:
        step(batch, explore, min_steps)
        if DEVICE == "cuda":
            import torch

            torch.cuda.synchronize()

    return run


@pytest.mark.parametrize("impl", ["hrm", "trm"])  # compiled paths: the CLI (a TRM compile takes minutes on CPU)
def test_trm_step(benchmark, impl):
    cfg, rows = bench_config(impl)
    t0 = time.perf_counter()
    run = runner(PRESET, impl)
    run()  # compile / capture / allocator warm-up, outside the timed rounds
    benchmark.extra_info["first_call_s"] = time.perf_counter() - t0
    benchmark.group = f"trm_vs_hrm {PRESET} {DEVICE}"
    benchmark.pedantic(run, rounds=ROUNDS[DEVICE], warmup_rounds=1, iterations=1)
    record(benchmark, impl, cfg, rows, rows * config_flops(cfg).train_segment)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.test_trm_step [--rounds N] [--impl ...]``: TRM vs HRM step times, interleaved."""
    import argparse

    import torch

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--impl", nargs="+", default=IMPLS, choices=IMPLS)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    if DEVICE == "cpu":
        torch.set_num_threads(1)
    print(f"device {DEVICE}, {torch.get_num_threads()} thread(s), torch {torch.__version__}")
    for impl in args.impl:
        cfg, rows = bench_config(impl)
        f = config_flops(cfg)
        print(f"{impl}: S={f.seq_len}, {f.train_equivalents} block-pass equivalents per row, "
              f"{rows * f.train_segment / 1e9:.3g} GFLOP per step of {rows} rows")
    wall, cpu = interleaved(PRESET, args.impl, args.rounds, runner)
    for label, times in (("CPU time", cpu), ("wall", wall)):
        for impl, ts in times.items():
            med = statistics.median(ts)
            other = "hrm" + impl[3:] if impl.startswith("trm") else None
            ratio = f"  {med / statistics.median(times[other]):.2f}x the HRM step" if other in times else ""
            print(f"{label:8s} {impl:14s} median {med:.3f} s  (min {min(ts):.3f}, max {max(ts):.3f}){ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
