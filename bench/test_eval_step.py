"""One eval segment (forward of every cycle, LM and Q heads, metric sums) per preset and path.

Groups ``eval_segment <preset> <device>``; ``impl``: ``reference`` (eager, reference ops, fast paths
off, ``torch.no_grad``), ``fast`` (:class:`hrm_fast.eval.runner.EvalStep` eager: inference mode, weights cast
once), ``fast-compiled`` (one ``torch.compile(fullgraph=True)`` program, a CUDA graph on CUDA).
Shapes as in ``bench/test_train_step.py`` (cut down on CPU).
"""

from __future__ import annotations

import time

import pytest
import torch

from bench.test_train_step import (
    DEVICE,
    ROUNDS,
    VOCAB,
    bench_config,
    make_batch,
    make_model,
    record,
    reset_cpu_peak,
    sync,
)
from bench.test_train_step import main as _main
from hrm_fast import ops
from hrm_fast.eval.runner import EvalStep
from hrm_fast.flops import config_flops
from hrm_fast.model.losses import act_loss

IMPLS = ["reference", "fast", "fast-compiled"]


def eval_runner(preset: str, impl: str):
    """A no-argument callable running one eval segment of ``impl`` at the bench shapes of ``preset``."""
    cfg, rows = bench_config(preset)
    model = make_model(cfg, fast=impl != "reference").eval()
    batch = make_batch(cfg, rows)
    if impl == "reference":
        carry = model.initial_carry(rows, DEVICE)

        def run() -> None:
            with ops.backend("reference"), torch.no_grad():
                _, out = model(carry, batch)
                act_loss(carry, out, cfg.model.loss_type)
            sync()

        return run
    compiled = impl == "fast-compiled"
    step = EvalStep(model, rows, DEVICE, compile=compiled, cuda_graph=compiled and DEVICE == "cuda")
    step.start(batch)

    def run() -> None:
        step.segment()
        sync()

    return run


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("preset", ["cpu-tiny", "seed-4090"])
def test_eval_segment(benchmark, preset, impl):
    cfg, rows = bench_config(preset)
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()
    run = eval_runner(preset, impl)
    reset_cpu_peak()
    t0 = time.perf_counter()
    run()  # compile / capture / warm-up outside the timed rounds
    benchmark.extra_info["first_call_s"] = time.perf_counter() - t0
    benchmark.group = f"eval_segment {preset} {DEVICE}"
    benchmark.pedantic(run, rounds=ROUNDS[DEVICE], warmup_rounds=1, iterations=1)
    record(benchmark, impl, cfg, rows, rows * config_flops(cfg, VOCAB).eval_segment)


if __name__ == "__main__":  # python -m bench.test_eval_step [--rounds N]: interleaved eval-segment ratios
    raise SystemExit(_main(impls=IMPLS, runner=eval_runner))
