"""The op benchmarks' shared harness: reference vs torch.compile(reference) vs Triton, fwd and fwd+bwd.

    pytest bench/test_rope_attention.py bench/test_swiglu.py bench/test_add_rms_norm.py -s \
        --benchmark-columns=median,iqr,rounds

On CUDA: bf16 at the seed (16 heads x 32) and HRM (8 heads x 64) attention shapes, S = 901, and the
HRM SwiGLU/RMSNorm widths; each result records FLOPs and bytes per call in ``extra_info`` and prints
achieved TFLOP/s, GB/s and % of the device's peak (when the device is in PEAKS). Without CUDA the
Triton kernels cannot run natively (the interpreter's timings say nothing about a GPU), so only the
reference and the compiled reference are timed, in fp32 at small shapes, on one thread.
Each op's FLOP model is in its benchmark file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
DTYPE = torch.bfloat16 if CUDA else torch.float32
DEVICE_NAME = torch.cuda.get_device_name() if CUDA else "cpu"
if not CUDA:
    torch.set_num_threads(1)  # this machine's CPU is slower with 2 OpenMP threads (toolchain.md §4)

# (dense bf16 TFLOP/s with fp32 accumulation, DRAM GB/s) by device-name substring
PEAKS = {"4090": (165.2, 1008.0), "H100 80GB HBM3": (989.0, 3350.0), "H100 PCIe": (756.0, 2000.0),
         "H200": (989.0, 4800.0), "A100": (312.0, 2039.0)}  # fmt: skip
PEAK = next((v for k, v in PEAKS.items() if k in DEVICE_NAME), None)

# name -> (rows, inner) for SwiGLU and (rows, width) for add+RMSNorm
ROW_SHAPES = {"hrm": (16 * 901, 512)} if CUDA else {"small": (2 * 96, 512)}
MODES = ("fwd", "fwd+bwd")
PROVIDERS = ("reference", "compiled", "triton")


@dataclass(frozen=True)
class Cost:
    flops: float
    bytes: float


def pick(name: str, reference: Callable, fused: Callable) -> Callable:
    """The op a benchmark times: ``reference``, its compiled twin, or ``fused`` (skips without CUDA)."""
    if name == "reference":
        return reference
    if name == "compiled":
        return compiled(reference)
    if not CUDA:
        pytest.skip("Triton kernels need a CUDA GPU; the CPU interpreter's timings say nothing about GPU speed")
    return fused


_COMPILED: dict[Callable, Callable] = {}


def compiled(fn: Callable) -> Callable:
    if fn not in _COMPILED:
        _COMPILED[fn] = torch.compile(fn, fullgraph=True, dynamic=False)
    return _COMPILED[fn]


def measure(benchmark, label: str, op: Callable, inputs: list[torch.Tensor], mode: str, cost: Cost,
         provider: str) -> None:
    grad_out = None

    def call():
        nonlocal grad_out
        out = op(*inputs)
        if mode == "fwd+bwd":
            if grad_out is None:
                grad_out = torch.randn_like(out)
            for t in inputs:
                if isinstance(t, torch.Tensor) and t.requires_grad:
                    t.grad = None
            out.backward(grad_out)
        if CUDA:
            torch.cuda.synchronize()

    with torch.set_grad_enabled(mode == "fwd+bwd"):
        call()  # compile / autotune / warm caches outside the timed rounds
        benchmark.pedantic(call, warmup_rounds=2, rounds=20 if CUDA else 5, iterations=1)
    seconds = benchmark.stats.stats.median
    tflops, gbs = cost.flops / seconds / 1e12, cost.bytes / seconds / 1e9
    # impl / flops / pct_of_peak are the keys `python -m bench.report` reads.
    info = {"device": DEVICE_NAME, "dtype": str(DTYPE), "impl": provider, "flops": cost.flops,
            "bytes_per_call": cost.bytes, "tflops": tflops, "gbs": gbs}  # fmt: skip
    line = f"{label:<44} {seconds * 1e3:9.3f} ms  {tflops * 1e3:9.2f} GFLOP/s  {gbs:8.2f} GB/s"
    if PEAK:
        info["pct_of_peak"], info["pct_peak_bw"] = 100 * tflops / PEAK[0], 100 * gbs / PEAK[1]
        line += f"  {info['pct_of_peak']:5.1f}% peak FLOP/s  {info['pct_peak_bw']:5.1f}% peak BW"
    benchmark.extra_info.update(info)
    print("\n" + line)
