"""rope_attention: the Triton kernel vs the reference (forward and d qkv, 2x-reference-error rule), the dispatcher.

On CPU the kernel runs in Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1; its
test-only bf16 tl.dot fix makes the bf16 cases meaningful). Shapes are tiny: the interpreter is slow.
"""

from __future__ import annotations

import pytest
import torch

from hrm_fast import ops
from hrm_fast.ops.rope_attention import fused, reference
from kernels.testing import assert_ok, compare

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def rope_tables(seq: int, head_dim: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """HRM's RoPE tables: frequencies duplicated [f, f], fp32 [S, Dh]."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(seq, dtype=torch.float32), inv_freq)
    emb = torch.cat((angles, angles), dim=-1)
    return emb.cos().to(DEVICE), emb.sin().to(DEVICE)


# (batch, heads, seq, head_dim): several key tiles with a ragged last one, a single partial tile,
# each tuned head size, and two padded ones (16: half-tiles narrower than tl.dot's minimum; 48: not a power of 2).
SHAPES = [(1, 2, 70, 32), (2, 2, 40, 64), (1, 1, 37, 128), (1, 2, 33, 16), (1, 1, 50, 48)]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}H{}S{}D{}".format(*s))
def test_rope_attention_matches_reference(shape, dtype):
    batch, heads, seq, head_dim = shape
    gen = torch.Generator().manual_seed(seq * head_dim)
    qkv = torch.randn(batch, seq, 3 * heads * head_dim, generator=gen).to(DEVICE, dtype)
    cos, sin = rope_tables(seq, head_dim)
    rows = compare(
        fused,
        reference,
        (qkv, cos, sin, heads),
        grad_mask=(True, False, False, False),
        fp64_args=(qkv.double(), cos.double(), sin.double(), heads),
    )
    assert_ok(rows, f"rope_attention {dtype} B{batch}H{heads}S{seq}D{head_dim}".replace("torch.", ""))


def test_strided_qkv_random_tables_and_expanded_grad_out():
    """qkv as a slice of a wider buffer (row stride != width), random cos/sin, expanded grad_out."""
    batch, heads, seq, head_dim = 2, 2, 45, 32
    width = 3 * heads * head_dim
    gen = torch.Generator().manual_seed(7)
    buffer = torch.randn(batch, seq, width + 16, generator=gen).to(DEVICE)
    qkv = buffer[:, :, 8 : 8 + width]
    assert qkv.stride(1) == width + 16
    cos = torch.randn(seq, head_dim, generator=gen).to(DEVICE)  # non-duplicated halves: checks c1/c2, s1/s2
    sin = torch.randn(seq, head_dim, generator=gen).to(DEVICE)

    q_fast = qkv.detach().clone().requires_grad_()
    q_ref = qkv.detach().double().requires_grad_()
    out = fused(q_fast, cos, sin, heads)
    expect = reference(q_ref, cos.double(), sin.double(), heads)
    torch.testing.assert_close(out.double(), expect, rtol=1e-5, atol=1e-5)
    out.sum().backward()  # grad_out is an expanded (stride-0) tensor
    expect.sum().backward()
    torch.testing.assert_close(q_fast.grad.double(), q_ref.grad, rtol=1e-5, atol=1e-5)

    # the strided view itself, not a copy, goes into the op
    view_leaf = buffer.detach().clone().requires_grad_()
    out_view = fused(view_leaf[:, :, 8 : 8 + width], cos, sin, heads)
    torch.testing.assert_close(out_view.double(), expect.detach(), rtol=1e-5, atol=1e-5)
    out_view.sum().backward()
    torch.testing.assert_close(view_leaf.grad[:, :, 8 : 8 + width].double(), q_ref.grad, rtol=1e-5, atol=1e-5)
    assert view_leaf.grad[:, :, :8].abs().max() == 0 and view_leaf.grad[:, :, 8 + width :].abs().max() == 0


def test_rope_attention_rejects_bad_input():
    cos, sin = rope_tables(10, 32)
    with pytest.raises(ValueError, match="3\\*H\\*Dh"):
        fused(torch.randn(1, 10, 100, device=DEVICE), cos, sin, 2)
    with pytest.raises(ValueError, match="head_dim 15"):
        fused(torch.randn(1, 10, 90, device=DEVICE), *rope_tables(10, 16), 2)
    with pytest.raises(ValueError, match="cos must be fp32"):
        fused(torch.randn(1, 10, 192, device=DEVICE), cos.double(), sin, 2)


def test_table_edited_in_place_is_rechecked():
    """The duplicated-halves fast path is cached per table; an in-place edit must invalidate it."""
    batch, heads, seq, head_dim = 1, 1, 20, 32
    qkv = torch.randn(batch, seq, 3 * heads * head_dim, device=DEVICE)
    cos, sin = rope_tables(seq, head_dim)
    torch.testing.assert_close(fused(qkv, cos, sin, heads), reference(qkv, cos, sin, heads))
    with torch.no_grad():
        cos[:, 3] += 0.5  # halves differ now
        sin[:, head_dim - 2] -= 0.5
    torch.testing.assert_close(fused(qkv, cos, sin, heads), reference(qkv, cos, sin, heads))


def test_inference_mode_tables():
    """Tables created under torch.inference_mode (no version counter) still work."""
    with torch.inference_mode():
        cos, sin = rope_tables(20, 32)
        qkv = torch.randn(1, 20, 3 * 32, device=DEVICE)
        torch.testing.assert_close(fused(qkv, cos, sin, 1), reference(qkv, cos, sin, 1))


@pytest.mark.parametrize("seq", [901, pytest.param(916, marks=pytest.mark.slow)])
def test_hrm_sequence_lengths(seq):
    """HRM's real sequence lengths (900 + 1 or 16 prefix tokens): many tiles, ragged last tile."""
    gen = torch.Generator().manual_seed(seq)
    qkv = torch.randn(1, seq, 3 * 64, generator=gen).to(DEVICE)
    cos, sin = rope_tables(seq, 64)
    rows = compare(fused, reference, (qkv, cos, sin, 1), grad_mask=(True, False, False, False),
                   fp64_args=(qkv.double(), cos.double(), sin.double(), 1))  # fmt: skip
    assert_ok(rows, f"rope_attention float32 B1H1S{seq}D64")


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_first_rows_form_equals_the_first_rows_of_the_full_op(backend):
    """q of the first R positions with k/v of all S (the Q head's fast path): the first R rows of the full op.

    The dispatcher runs the reference for this form on every backend (the kernel reads packed qkv)."""
    batch, heads, seq, head_dim, rows = 2, 2, 30, 16, 3
    width = heads * head_dim
    gen = torch.Generator().manual_seed(5)
    qkv = torch.randn(batch, seq, 3 * width, generator=gen).to(DEVICE)
    cos, sin = rope_tables(seq, head_dim)
    q, kv = qkv[:, :rows, :width].contiguous(), qkv[:, :, width:].contiguous()
    with ops.backend(backend):
        out = ops.rope_attention(q, cos, sin, heads, kv=kv)
    assert out.shape == (batch, rows, width)
    torch.testing.assert_close(out, reference(qkv, cos, sin, heads)[:, :rows], rtol=1e-6, atol=1e-6)
    assert torch.equal(out, reference(q, cos, sin, heads, kv=kv))
