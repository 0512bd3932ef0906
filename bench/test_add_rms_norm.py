"""add_rms_norm benchmark: reference vs torch.compile(reference) vs Triton (harness: bench/ops_common.py).

FLOP model: 4 FLOPs per element forward, twice that backward.
"""

from __future__ import annotations

import pytest
import torch

from bench.ops_common import DEVICE, DTYPE, MODES, PROVIDERS, ROW_SHAPES, Cost, measure, pick
from hrm_fast.ops.add_rms_norm import fused, reference


def add_rms_norm_cost(rows: int, width: int, mode: str) -> Cost:
    n, e = rows * width, torch.finfo(DTYPE).bits // 8
    return Cost(4.0 * n, 3 * n * e + 4 * rows) if mode == "fwd" else Cost(12.0 * n, 8 * n * e + 8 * rows)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("shape", list(ROW_SHAPES), ids=str)
def test_add_rms_norm(benchmark, shape, provider, mode):
    rows, width = ROW_SHAPES[shape]
    op = pick(provider, reference, fused)
    x = torch.randn(rows, width, device=DEVICE, dtype=DTYPE, requires_grad=mode == "fwd+bwd")
    delta = torch.randn(rows, width, device=DEVICE, dtype=DTYPE, requires_grad=mode == "fwd+bwd")
    cost = add_rms_norm_cost(rows, width, mode)
    benchmark.group = f"add_rms_norm {shape} {mode}"
    measure(benchmark, f"add_rms_norm {shape} D{width} {provider} {mode}", lambda a, b: op(a, b, 1e-5), [x, delta],
            mode, cost, provider)  # fmt: skip
