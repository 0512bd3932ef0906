"""add_rms_norm: the Triton kernel vs the reference (forward and both gradients), 2x-reference-error rule.

Runs in Triton's interpreter on CPU (see tests/conftest.py); tiny shapes.
"""

from __future__ import annotations

import pytest
import torch

from hrm_fast.ops.add_rms_norm import fused, reference
from kernels.testing import assert_ok, compare

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DTYPE_IDS = [str(d).split(".")[-1] for d in DTYPES]


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
        lambda a, b: fused(a, b, eps),
        lambda a, b: reference(a, b, eps),
        (x, delta),
        grad_mask=(True, True),
        truth_op=lambda a, b: _rms_fp64(a + b, eps),  # the reference's statistics are fp32 even for fp64 input
    )
    assert_ok(rows, f"add_rms_norm {dtype} {tuple(shape)}".replace("torch.", ""))


def test_add_rms_norm_gradients_are_separate_buffers():
    x = torch.randn(6, 64, device=DEVICE, requires_grad=True)
    delta = torch.randn(6, 64, device=DEVICE, requires_grad=True)
    fused(x, delta, 1e-6).pow(2).sum().backward()
    torch.testing.assert_close(x.grad, delta.grad, rtol=0, atol=0)
    assert x.grad.data_ptr() != delta.grad.data_ptr()


def test_add_rms_norm_promotes_and_broadcasts_like_the_reference():
    x = torch.randn(4, 5, 32, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
    delta = torch.randn(5, 32, device=DEVICE, requires_grad=True)  # fp32, broadcast over the batch
    y = fused(x, delta, 1e-5)
    y_ref = reference(x, delta, 1e-5)
    assert y.dtype == y_ref.dtype == torch.float32
    torch.testing.assert_close(y, y_ref)
    grads = torch.autograd.grad(y.sum(), (x, delta))
    grads_ref = torch.autograd.grad(y_ref.sum(), (x, delta))
    for g, g_ref in zip(grads, grads_ref):
        assert g.shape == g_ref.shape and g.dtype == g_ref.dtype
        torch.testing.assert_close(g, g_ref, rtol=1e-3, atol=1e-3)


def test_bad_input_is_refused():
    with pytest.raises(RuntimeError):  # not broadcastable, as for the reference's x + delta
        fused(torch.randn(3, 8, device=DEVICE), torch.randn(3, 4, device=DEVICE), 1e-5)
