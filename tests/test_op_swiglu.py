"""swiglu: the Triton kernel vs the reference (forward and the gradient), 2x-reference-error rule.

Runs in Triton's interpreter on CPU (see tests/conftest.py); tiny shapes.
"""

from __future__ import annotations

import pytest
import torch

from hrm_fast.ops.swiglu import fused, reference
from kernels.testing import assert_ok, compare

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DTYPE_IDS = [str(d).split(".")[-1] for d in DTYPES]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", [(2, 37, 2 * 96), (3, 5, 2 * 300)], ids=["I96", "I300"])
def test_swiglu_matches_reference(shape, dtype):
    gen = torch.Generator().manual_seed(shape[-1])
    gate_up = (2 * torch.randn(shape, generator=gen)).to(DEVICE, dtype)
    rows = compare(fused, reference, (gate_up,), grad_mask=(True,))
    assert_ok(rows, f"swiglu {dtype} {tuple(shape)}".replace("torch.", ""))


def test_swiglu_strided_rows():
    """gate_up as a slice of a wider buffer: rows with a larger stride, no copy needed."""
    buffer = torch.randn(4, 9, 200, device=DEVICE)
    gate_up = buffer[..., 10:170]
    out = fused(gate_up)
    torch.testing.assert_close(out, reference(gate_up), rtol=1e-6, atol=1e-6)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="even"):
        fused(torch.randn(3, 7, device=DEVICE))
    with pytest.raises(TypeError, match="not supported"):
        fused(torch.randn(3, 8, device=DEVICE, dtype=torch.float64))
