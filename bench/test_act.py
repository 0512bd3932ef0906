"""ACT carry update: the C++/CUDA op vs its eager PyTorch reference at HRM-paper sizes.

B=32 rows, S=901 tokens, D=512 hidden, fp32 and bf16. ``halted`` is the fraction of rows that restart
this segment (early in training about 1/halt_max_steps of rows halt per step; at eval start all do).
The ratio reference/op of the same group is the number to read.
"""

from __future__ import annotations

import pytest
import torch

from hrm_fast.ops import act as act_ops
from hrm_fast.ops.act import reference_halt, reference_reset

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
B, S, D, L = 32, 901, 512, 900


def make_carry(dtype: torch.dtype, halted_fraction: float) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    halted = torch.zeros(B, dtype=torch.bool)
    halted[torch.randperm(B, generator=g)[: round(B * halted_fraction)]] = True
    args = dict(
        z_H=torch.randn(B, S, D, generator=g).to(dtype), z_L=torch.randn(B, S, D, generator=g).to(dtype),
        steps=torch.zeros(B, dtype=torch.int32),
        inputs=torch.zeros(B, L, dtype=torch.int32), labels=torch.zeros(B, L, dtype=torch.int32),
        puzzle_identifiers=torch.zeros(B, dtype=torch.int32), halted=halted,
        H_init=torch.randn(D, generator=g).to(dtype), L_init=torch.randn(D, generator=g).to(dtype),
        new_inputs=torch.ones(B, L, dtype=torch.int32), new_labels=torch.ones(B, L, dtype=torch.int32),
        new_puzzle_identifiers=torch.ones(B, dtype=torch.int32),
    )
    return {k: v.to(DEVICE) for k, v in args.items()}


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("impl", ["reference", "extension"])
@pytest.mark.parametrize("halted_fraction", [0.125, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_act_reset(benchmark, impl, halted_fraction, dtype):
    if impl == "extension" and not act_ops.extension_available(DEVICE):
        pytest.skip(f"hrm_fast._C has no {DEVICE} kernel")
    fn = reference_reset if impl == "reference" else torch.ops.hrm_fast.act_reset
    args = make_carry(dtype, halted_fraction)
    benchmark.group = f"act_reset {DEVICE} {str(dtype)[6:]} halted={halted_fraction}"
    state_bytes = 2 * B * S * D * args["z_H"].element_size()
    benchmark.extra_info.update(device=DEVICE, impl=impl, bytes_carry=state_bytes)

    def run():
        fn(**args)
        _sync()

    benchmark.pedantic(run, rounds=15, warmup_rounds=2, iterations=1)


@pytest.mark.parametrize("impl", ["reference", "extension"])
def test_act_halt(benchmark, impl):
    if impl == "extension" and not act_ops.extension_available(DEVICE):
        pytest.skip(f"hrm_fast._C has no {DEVICE} kernel")
    fn = reference_halt if impl == "reference" else torch.ops.hrm_fast.act_halt
    g = torch.Generator().manual_seed(0)
    args = [torch.zeros(B, dtype=torch.int32), torch.zeros(B, dtype=torch.bool), torch.randn(B, generator=g),
            torch.randn(B, generator=g), torch.rand(B, generator=g), torch.randint(2, 17, (B,), dtype=torch.int32)]
    args = [a.to(DEVICE) for a in args]
    benchmark.group = f"act_halt {DEVICE}"
    benchmark.extra_info.update(device=DEVICE, impl=impl)

    def run():
        args[0].zero_()
        fn(*args, 16, 0.1, True)
        _sync()

    benchmark.pedantic(run, rounds=200, warmup_rounds=5, iterations=1)
