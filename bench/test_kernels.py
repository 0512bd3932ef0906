"""Kernel benchmarks: reference vs torch.compile(reference) vs Triton, forward and forward+backward.

    pytest bench/test_kernels.py -s --benchmark-columns=median,iqr,rounds

On CUDA: bf16 at the seed (16 heads x 32) and HRM (8 heads x 64) attention shapes, S = 901, and the
HRM SwiGLU/RMSNorm widths; each result records FLOPs and bytes per call in ``extra_info`` and prints
achieved TFLOP/s, GB/s and % of the device's peak (when the device is in PEAKS). Without CUDA the
Triton kernels cannot run natively (the interpreter's timings say nothing about a GPU), so only the
reference and the compiled reference are timed, in fp32 at small shapes, on one thread.
FLOP model: attention forward 4*B*H*S^2*Dh, backward 2.5x forward (the FlashAttention convention;
RoPE is not counted); SwiGLU 6 and add+RMSNorm 4 FLOPs per element forward, twice that backward.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

from hrm_fast.ops import reference

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

# name -> (batch, heads, seq, head_dim)
ATTN_SHAPES = {"seed": (16, 16, 901, 32), "hrm": (16, 8, 901, 64)}
if not CUDA:
    ATTN_SHAPES = {"seed-small": (1, 4, 96, 32), "hrm-small": (1, 2, 96, 64)}
# name -> (rows, inner) for SwiGLU and (rows, width) for add+RMSNorm
ROW_SHAPES = {"hrm": (16 * 901, 512)} if CUDA else {"small": (2 * 96, 512)}
MODES = ("fwd", "fwd+bwd")
PROVIDERS = ("reference", "compiled", "triton")


@dataclass(frozen=True)
class Cost:
    flops: float
    bytes: float


def _provider(name: str, ref_fn: Callable, fused_name: str) -> Callable:
    if name == "reference":
        return ref_fn
    if name == "compiled":
        return _compiled(ref_fn)
    if not CUDA:
        pytest.skip("Triton kernels need a CUDA GPU; the CPU interpreter's timings say nothing about GPU speed")
    from hrm_fast.ops import fused

    return getattr(fused, fused_name)


_COMPILED: dict[Callable, Callable] = {}


def _compiled(fn: Callable) -> Callable:
    if fn not in _COMPILED:
        _COMPILED[fn] = torch.compile(fn, fullgraph=True, dynamic=False)
    return _COMPILED[fn]


def _run(benchmark, label: str, op: Callable, inputs: list[torch.Tensor], mode: str, cost: Cost,
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


def _attention_cost(batch: int, heads: int, seq: int, head_dim: int, mode: str) -> Cost:
    e = torch.finfo(DTYPE).bits // 8
    width = heads * head_dim
    fwd = Cost(4.0 * batch * heads * seq * seq * head_dim,
               batch * seq * 4 * width * e + batch * heads * seq * 4 + 2 * seq * head_dim * 4)  # fmt: skip
    if mode == "fwd":
        return fwd
    # backward reads qkv, out, d_out, lse and writes d_qkv (+ the fp32 delta written and read)
    bwd_bytes = batch * seq * 8 * width * e + 3 * batch * heads * seq * 4
    return Cost(fwd.flops * 3.5, fwd.bytes + bwd_bytes)


def _swiglu_inner(hidden: int) -> int:
    return 256 * math.ceil(round(4 * hidden * 2 / 3) / 256)  # HRM's rule: 512 -> 1536


def _swiglu_cost(rows: int, inner: int, mode: str) -> Cost:
    n, e = rows * inner, torch.finfo(DTYPE).bits // 8
    return Cost(6.0 * n, 3 * n * e) if mode == "fwd" else Cost(18.0 * n, 8 * n * e)


def _rms_cost(rows: int, width: int, mode: str) -> Cost:
    n, e = rows * width, torch.finfo(DTYPE).bits // 8
    return Cost(4.0 * n, 3 * n * e + 4 * rows) if mode == "fwd" else Cost(12.0 * n, 8 * n * e + 8 * rows)


def _rope_tables(seq: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    emb = torch.outer(torch.arange(seq, dtype=torch.float32), inv_freq).repeat(1, 2)
    return emb.cos().to(DEVICE), emb.sin().to(DEVICE)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("shape", list(ATTN_SHAPES), ids=str)
def test_rope_attention(benchmark, shape, provider, mode):
    batch, heads, seq, head_dim = ATTN_SHAPES[shape]
    op = _provider(provider, reference.rope_attention, "rope_attention")
    qkv = torch.randn(batch, seq, 3 * heads * head_dim, device=DEVICE, dtype=DTYPE) / math.sqrt(head_dim)
    qkv.requires_grad_(mode == "fwd+bwd")
    cos, sin = _rope_tables(seq, head_dim)
    benchmark.group = f"rope_attention {shape} {mode}"
    _run(benchmark, f"rope_attention {shape} {provider} {mode}", lambda q: op(q, cos, sin, heads), [qkv], mode,
         _attention_cost(batch, heads, seq, head_dim, mode), provider)  # fmt: skip


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("shape", list(ROW_SHAPES), ids=str)
def test_swiglu(benchmark, shape, provider, mode):
    rows, hidden = ROW_SHAPES[shape]
    inner = _swiglu_inner(hidden)
    op = _provider(provider, reference.swiglu, "swiglu")
    gate_up = torch.randn(rows, 2 * inner, device=DEVICE, dtype=DTYPE, requires_grad=mode == "fwd+bwd")
    cost = _swiglu_cost(rows, inner, mode)
    benchmark.group = f"swiglu {shape} {mode}"
    _run(benchmark, f"swiglu {shape} I{inner} {provider} {mode}", op, [gate_up], mode, cost, provider)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("shape", list(ROW_SHAPES), ids=str)
def test_add_rms_norm(benchmark, shape, provider, mode):
    rows, width = ROW_SHAPES[shape]
    op = _provider(provider, reference.add_rms_norm, "add_rms_norm")
    x = torch.randn(rows, width, device=DEVICE, dtype=DTYPE, requires_grad=mode == "fwd+bwd")
    delta = torch.randn(rows, width, device=DEVICE, dtype=DTYPE, requires_grad=mode == "fwd+bwd")
    cost = _rms_cost(rows, width, mode)
    benchmark.group = f"add_rms_norm {shape} {mode}"
    _run(benchmark, f"add_rms_norm {shape} D{width} {provider} {mode}", lambda a, b: op(a, b, 1e-5), [x, delta],
         mode, cost, provider)  # fmt: skip
