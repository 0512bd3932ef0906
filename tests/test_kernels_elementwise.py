"""SwiGLU and add+RMSNorm kernels vs the reference (forward and all gradients), 2x-reference-error rule.

Runs in Triton's interpreter on CPU (see tests/conftest.py); tiny shapes.
"""

from __future__ import annotations

import pytest
import torch

from hrm_fast.ops import reference
from hrm_fast.ops.fused import add_rms_norm, swiglu
from kernels.testing import compare

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DTYPE_IDS = [str(d).split(".")[-1] for d in DTYPES]


def _check(rows, case: str) -> None:
    for row in rows:
        print(row.line(case))
    bad = [row for row in rows if not row.ok]
    assert not bad, "\n".join(row.line(case) for row in bad)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", [(2, 37, 2 * 96), (3, 5, 2 * 300)], ids=["I96", "I300"])
def test_swiglu_matches_reference(shape, dtype):
    gen = torch.Generator().manual_seed(shape[-1])
    gate_up = (2 * torch.randn(shape, generator=gen)).to(DEVICE, dtype)
    rows = compare(swiglu, reference.swiglu, (gate_up,), grad_mask=(True,))
    _check(rows, f"swiglu {dtype} {tuple(shape)}".replace("torch.", ""))


def test_swiglu_strided_rows():
    """gate_up as a slice of a wider buffer: rows with a larger stride, no copy needed."""
    buffer = torch.randn(4, 9, 200, device=DEVICE)
    gate_up = buffer[..., 10:170]
    out = swiglu(gate_up)
    torch.testing.assert_close(out, reference.swiglu(gate_up), rtol=1e-6, atol=1e-6)


def _rms_fp64(h: torch.Tensor, eps: float) -> torch.Tensor:
    return h * torch.rsqrt(h.square().mean(-1, keepdim=True) + eps)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", [(2, 37, 128), (70, 200)], ids=["D128", "D200"])
def test_add_rms_norm_matches_reference(shape, dtype):
    gen = torch.Generator().manual_seed(shape[-1])
    x = (3 * torch.randn(shape, generator=gen)).to(DEVICE, dtype)
    delta = torch.randn(shape, generator=gen).to(DEVICE, dtype)
    eps = 1e-5
    rows = compare(
        lambda a, b: add_rms_norm(a, b, eps),
        lambda a, b: reference.add_rms_norm(a, b, eps),
        (x, delta),
        grad_mask=(True, True),
        truth_op=lambda a, b: _rms_fp64(a + b, eps),  # the reference's statistics are fp32 even for fp64 input
    )
    _check(rows, f"add_rms_norm {dtype} {tuple(shape)}".replace("torch.", ""))


def test_add_rms_norm_gradients_are_separate_buffers():
    x = torch.randn(6, 64, device=DEVICE, requires_grad=True)
    delta = torch.randn(6, 64, device=DEVICE, requires_grad=True)
    add_rms_norm(x, delta, 1e-6).pow(2).sum().backward()
    torch.testing.assert_close(x.grad, delta.grad, rtol=0, atol=0)
    assert x.grad.data_ptr() != delta.grad.data_ptr()


def test_add_rms_norm_promotes_and_broadcasts_like_the_reference():
    x = torch.randn(4, 5, 32, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
    delta = torch.randn(5, 32, device=DEVICE, requires_grad=True)  # fp32, broadcast over the batch
    y = add_rms_norm(x, delta, 1e-5)
    y_ref = reference.add_rms_norm(x, delta, 1e-5)
    assert y.dtype == y_ref.dtype == torch.float32
    torch.testing.assert_close(y, y_ref)
    grads = torch.autograd.grad(y.sum(), (x, delta))
    grads_ref = torch.autograd.grad(y_ref.sum(), (x, delta))
    for g, g_ref in zip(grads, grads_ref):
        assert g.shape == g_ref.shape and g.dtype == g_ref.dtype
        torch.testing.assert_close(g, g_ref, rtol=1e-3, atol=1e-3)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="even"):
        swiglu(torch.randn(3, 7, device=DEVICE))
    with pytest.raises(RuntimeError):  # not broadcastable, as for the reference's x + delta
        add_rms_norm(torch.randn(3, 8, device=DEVICE), torch.randn(3, 4, device=DEVICE), 1e-5)
    with pytest.raises(TypeError, match="not supported"):
        swiglu(torch.randn(3, 8, device=DEVICE, dtype=torch.float64))
