"""A whole training segment step (ACT update, inner forward, loss, backward, optimizer) per preset and path.

Groups ``train_step <preset> <device>``; ``impl``:
- ``reference``: eager, reference ops, model fast paths off, the plain loop (model, act_loss,
  backward, torch optimizers) -- the baseline every speed-up is measured against;
- ``fast``: :class:`hrm_fast.training.step.TrainStep` eager (fast paths: inference-mode no-grad cycles,
  weights cast once per segment, Q-only bootstrap pass, tensor-lr foreach optimizers);
- ``fast-compiled``: the same step as one ``torch.compile(fullgraph=True)`` program (and a CUDA graph on CUDA);
- ``fast-noboot`` / ``fast-noboot-compiled``: as above with ``model.bootstrap_q=false`` (TRM-style, other semantics).

CPU shapes are cut down (docs/hrm.md §7: a full seed-4090 segment is ~2.5 TFLOP per row): seed-4090
keeps its layer shapes (hidden 512, 16 heads, H6/L4 blocks, S=901) with H_cycles 1, L_cycles 2,
halt_max_steps 2, batch 1; cpu-tiny runs as configured with batch 16; both in fp32. On CUDA: the presets'
cycles and dtype, batch 8 (seed-4090) / 64 (cpu-tiny). ``flops`` = model FLOPs per call from hrm_fast.flops.
"""

from __future__ import annotations

import time

import pytest
import torch

from hrm_fast import ops
from hrm_fast.config import Config, load_config
from hrm_fast.flops import config_flops
from hrm_fast.hardware import current_peak
from hrm_fast.model.hrm import HRM
from hrm_fast.model.losses import act_loss
from hrm_fast.training.optim import build_optimizers
from hrm_fast.training.step import TrainStep

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
VOCAB, IDS = 12, 64
CPU_CUT = ["model.forward_dtype=float32", "model.H_cycles=1", "model.L_cycles=2", "model.halt_max_steps=2"]
SHAPES = {  # preset -> (overrides, batch) per device
    "cpu": {"cpu-tiny": (["model.forward_dtype=float32"], 16), "seed-4090": (CPU_CUT, 1)},
    "cuda": {"cpu-tiny": ([], 64), "seed-4090": ([], 8)},
}
ROUNDS = {"cpu": 3, "cuda": 10}


def bench_config(preset: str, bootstrap: bool = True) -> tuple[Config, int]:
    overrides, rows = SHAPES[DEVICE][preset]
    cfg = load_config(preset, [*overrides, f"model.bootstrap_q={str(bootstrap).lower()}"])
    return cfg, rows


def make_model(cfg: Config, fast: bool) -> HRM:
    torch.manual_seed(0)
    model = HRM(cfg.model, VOCAB, cfg.data.seq_len, IDS).to(DEVICE).train()
    model.fast_paths = fast
    return model


def make_batch(cfg: Config, rows: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    seq = cfg.data.seq_len
    out = {"inputs": torch.randint(0, VOCAB, (rows, seq), generator=g, dtype=torch.int32),
           "labels": torch.randint(0, VOCAB, (rows, seq), generator=g, dtype=torch.int32),
           "puzzle_identifiers": torch.randint(1, IDS, (rows,), generator=g, dtype=torch.int32)}
    return {k: v.to(DEVICE) for k, v in out.items()}


def make_draws(cfg: Config, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    high = max(cfg.model.halt_max_steps, 2) + 1
    return (torch.rand(rows, generator=g).to(DEVICE),
            torch.randint(2, high, (rows,), generator=g, dtype=torch.int32).to(DEVICE))


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def record(benchmark, impl: str, cfg: Config, rows: int, flops_per_call: float, median: float | None = None) -> None:
    """Fill extra_info from the benchmark's median (called after the timed rounds)."""
    median = median if median is not None else benchmark.stats.stats.median
    tokens = rows * (cfg.data.seq_len + cfg.model.puzzle_emb_len)
    info = dict(device=DEVICE, impl=impl, rows=rows, tokens_per_s=tokens / median, examples_per_s=rows / median,
                flops=flops_per_call, tflops_per_s=flops_per_call / median / 1e12)
    if DEVICE == "cuda":
        info["peak_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
        peak = current_peak()
        if peak is not None:
            info["pct_of_peak"] = 100 * flops_per_call / median / (peak.bf16_tflops * 1e12)
    else:
        info["peak_mem_mb"] = cpu_peak_rss_mb()
    benchmark.extra_info.update(info)


def reset_cpu_peak() -> None:
    """Reset the process's peak RSS (Linux: ``/proc/self/clear_refs``), so the next reading covers only what follows."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def cpu_peak_rss_mb() -> float | None:
    """Peak resident memory of this process (VmHWM) since :func:`reset_cpu_peak`, in MiB: weights and all."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reference_step(model: HRM, cfg: Config, rows: int):
    """The plain eager loop with reference ops: returns a no-argument callable running one step."""
    opts = build_optimizers(model, cfg.train)
    carry = model.initial_carry(rows, DEVICE)
    batch, (explore, min_steps) = make_batch(cfg, rows), make_draws(cfg, rows)
    params = [p for p in model.parameters() if p.requires_grad]

    def run() -> None:
        with ops.backend("reference"):
            for o in opts:
                o.zero_grad(set_to_none=True)
            _, out = model(carry, batch, explore, min_steps)
            loss, _ = act_loss(carry, out, cfg.model.loss_type)
            (loss / rows).backward()
            if cfg.train.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip, foreach=True)
            for o in opts:
                o.step()
        sync()

    return run


def fast_step(model: HRM, cfg: Config, rows: int, compile: bool):
    step = TrainStep(model, build_optimizers(model, cfg.train), [model.initial_carry(rows, DEVICE)],
                     loss_type=cfg.model.loss_type, global_batch_size=rows, grad_clip=cfg.train.grad_clip,
                     compile=compile, cuda_graph=compile and DEVICE == "cuda")
    batch, (explore, min_steps) = make_batch(cfg, rows), make_draws(cfg, rows)

    def run() -> None:
        step(batch, explore, min_steps)
        sync()

    return run


IMPLS = ["reference", "fast", "fast-compiled", "fast-noboot", "fast-noboot-compiled"]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("preset", ["cpu-tiny", "seed-4090"])
def test_train_step(benchmark, preset, impl):
    if DEVICE == "cpu" and preset == "seed-4090" and impl == "fast-noboot-compiled":
        pytest.skip("a second ~3-minute CPU compile of the seed shapes; fast-noboot shows the effect")
    bootstrap = "noboot" not in impl
    cfg, rows = bench_config(preset, bootstrap)
    model = make_model(cfg, fast=impl != "reference")
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()
    reset_cpu_peak()
    t0 = time.perf_counter()
    run = reference_step(model, cfg, rows) if impl == "reference" else fast_step(model, cfg, rows, "compiled" in impl)
    run()  # compile / CUDA-graph capture / allocator warm-up, outside the timed rounds
    benchmark.extra_info["first_call_s"] = time.perf_counter() - t0
    benchmark.group = f"train_step {preset} {DEVICE}"
    benchmark.pedantic(run, rounds=ROUNDS[DEVICE], warmup_rounds=1, iterations=1)
    seg = config_flops(cfg, VOCAB)
    record(benchmark, impl, cfg, rows, rows * seg.train_segment)


def train_runner(preset: str, impl: str):
    """A no-argument callable running one training step of ``impl`` at the bench shapes of ``preset``."""
    cfg, rows = bench_config(preset, "noboot" not in impl)
    model = make_model(cfg, fast=impl != "reference")
    return reference_step(model, cfg, rows) if impl == "reference" else fast_step(model, cfg, rows, "compiled" in impl)


def interleaved(preset: str, impls: list[str], rounds: int, runner=train_runner  # noqa: ANN001
                ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """(wall, CPU) seconds per call of each impl, measured round-robin in one process.

    On a shared machine the wall time includes waiting for a core; with one thread the process CPU time
    does not, so it is the steadier number to compare (on CUDA only the wall time means anything).
    """
    runs = {}
    for impl in impls:
        run = runner(preset, impl)
        t0 = time.perf_counter()
        run()
        run()
        print(f"{preset} {impl}: warm-up (incl. compile) {time.perf_counter() - t0:.1f} s", flush=True)
        runs[impl] = run
    wall: dict[str, list[float]] = {impl: [] for impl in impls}
    cpu: dict[str, list[float]] = {impl: [] for impl in impls}
    for _ in range(rounds):
        for impl, run in runs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            run()
            wall[impl].append(time.perf_counter() - t0)
            cpu[impl].append(time.process_time() - c0)
    return wall, cpu


def main(argv: list[str] | None = None, impls: list[str] = IMPLS, runner=train_runner) -> int:  # noqa: ANN001
    """``python -m bench.test_train_step [--rounds N] [--preset P ...]``: the reference-vs-fast ratios, interleaved."""
    import argparse
    import statistics

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--preset", nargs="+", default=["cpu-tiny", "seed-4090"], choices=["cpu-tiny", "seed-4090"])
    parser.add_argument("--impl", nargs="+", default=impls, choices=impls)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    if DEVICE == "cpu":
        torch.set_num_threads(1)  # as bench/conftest.py does for pytest runs
    print(f"device {DEVICE}, {torch.get_num_threads()} thread(s), torch {torch.__version__}")
    for preset in args.preset:
        wall, cpu = interleaved(preset, args.impl, args.rounds, runner)
        for label, times in (("wall", wall), ("CPU time", cpu)):
            base = statistics.median(times["reference"]) if "reference" in times else None
            for impl, ts in times.items():
                med = statistics.median(ts)
                ratio = f"  {base / med:.2f}x vs reference" if base else ""
                print(f"{preset:10s} {label:8s} {impl:22s} median {med:.3f} s  (min {min(ts):.3f}, "
                      f"max {max(ts):.3f}){ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
