"""A model running the Triton kernels (interpreter on CPU) computes what the reference-op model computes."""

from __future__ import annotations

import importlib
import os

import pytest
import torch
from test_model_hrm import batch, make

from hrm_fast import ops

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1",
    reason="Triton needs a GPU or TRITON_INTERPRET=1 (set by tests/conftest.py)",
)


def run(model, backend: str, segments: int = 2):
    """Logits and Q of ``segments`` training segments, plus the parameter gradients of their summed loss."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(123)  # the same exploration draws for both backends
    with ops.backend(backend):
        carry = model.initial_carry(3)
        outs, total = [], 0.0
        for _ in range(segments):
            carry, out = model(carry, batch(3))
            outs.append({k: v.detach().clone() for k, v in out.items()})
            total = total + out["logits"].square().mean() + out["q_halt_logits"].sum()
        total.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return outs, grads


def test_triton_ops_match_reference_ops_fp32(monkeypatch):
    calls = {"rope_attention": 0, "swiglu": 0, "add_rms_norm": 0}
    for name in calls:
        module = importlib.import_module(f"hrm_fast.ops.{name}")  # hrm_fast.ops.<name> is the dispatcher
        original = module.fused

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, "fused", counted)
    model = make(seed=3)
    ref_outs, ref_grads = run(model, "reference")
    assert sum(calls.values()) == 0
    tri_outs, tri_grads = run(model, "triton")
    assert all(n > 0 for n in calls.values()), calls  # the kernels really ran
    for ref, tri in zip(ref_outs, tri_outs):
        for key in ("logits", "q_halt_logits", "q_continue_logits"):
            torch.testing.assert_close(tri[key], ref[key], rtol=1e-4, atol=1e-4, msg=key)
    assert ref_grads.keys() == tri_grads.keys() and ref_grads
    for name, g in ref_grads.items():
        torch.testing.assert_close(tri_grads[name], g, rtol=1e-3, atol=1e-5, msg=name)
