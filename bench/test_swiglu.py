"""swiglu benchmark: reference vs torch.compile(reference) vs Triton (harness: bench/ops_common.py).

FLOP model: 6 FLOPs per element forward, twice that backward.
"""

from __future__ import annotations

import math

import pytest
import torch

from bench.ops_common import DEVICE, DTYPE, MODES, PROVIDERS, ROW_SHAPES, Cost, measure, pick
from hrm_fast.ops.swiglu import fused, reference


def swiglu_inner(hidden: int) -> int:
    return 256 * math.ceil(round(4 * hidden * 2 / 3) / 256)  # HRM's rule: 512 -> 1536


def swiglu_cost(rows: int, inner: int, mode: str) -> Cost:
    n, e = rows * inner, torch.finfo(DTYPE).bits // 8
    return Cost(6.0 * n, 3 * n * e) if mode == "fwd" else Cost(18.0 * n, 8 * n * e)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("shape", list(ROW_SHAPES), ids=str)
def test_swiglu(benchmark, shape, provider, mode):
    rows, hidden = ROW_SHAPES[shape]
    inner = swiglu_inner(hidden)
    op = pick(provider, reference, fused)
    gate_up = torch.randn(rows, 2 * inner, device=DEVICE, dtype=DTYPE, requires_grad=mode == "fwd+bwd")
    cost = swiglu_cost(rows, inner, mode)
    benchmark.group = f"swiglu {shape} {mode}"
    measure(benchmark, f"swiglu {shape} I{inner} {provider} {mode}", op, [gate_up], mode, cost, provider)
