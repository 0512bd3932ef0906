"""The Triton custom ops inside torch.compile(fullgraph=True), and torch.library.opcheck on each op.

On CPU the ops launch their kernels in Triton's interpreter; ``custom_op`` keeps them opaque to
Inductor, so the compiled graph is one graph with no breaks.
"""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import pytest
import torch
from torch import nn

OPS = [importlib.import_module(f"hrm_fast.ops.{op}") for op in ("rope_attention", "swiglu", "add_rms_norm")]
fused = SimpleNamespace(**{m.__name__.rsplit(".", 1)[1]: m.fused for m in OPS})
reference = SimpleNamespace(**{m.__name__.rsplit(".", 1)[1]: m.reference for m in OPS})

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# torch.compile/opcheck internals still touch torch.jit.script_method
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.script_method.*:DeprecationWarning")


class TinyBlock(nn.Module):
    """qkv projection -> rope_attention -> out projection -> add+RMSNorm -> SwiGLU MLP -> add+RMSNorm."""

    def __init__(self, hidden: int, heads: int, inner: int, ops) -> None:
        super().__init__()
        self.heads, self.ops = heads, ops
        self.qkv = nn.Linear(hidden, 3 * hidden, bias=False)
        self.out = nn.Linear(hidden, hidden, bias=False)
        self.gate_up = nn.Linear(hidden, 2 * inner, bias=False)
        self.down = nn.Linear(inner, hidden, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        h = self.ops.add_rms_norm(x, self.out(self.ops.rope_attention(self.qkv(x), cos, sin, self.heads)), 1e-5)
        return self.ops.add_rms_norm(h, self.down(self.ops.swiglu(self.gate_up(h))), 1e-5)


def _tables(seq: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    emb = torch.outer(torch.arange(seq, dtype=torch.float32), inv_freq).repeat(1, 2)
    return emb.cos().to(DEVICE), emb.sin().to(DEVICE)


def test_tiny_block_compiles_fullgraph_and_matches_reference():
    torch.manual_seed(0)
    hidden, heads, seq = 64, 2, 37
    fast = TinyBlock(hidden, heads, 96, fused).to(DEVICE)
    ref = TinyBlock(hidden, heads, 96, reference).to(DEVICE)
    ref.load_state_dict(fast.state_dict())
    cos, sin = _tables(seq, hidden // heads)
    x = torch.randn(2, seq, hidden, device=DEVICE)

    explained = torch._dynamo.explain(fast)(x, cos, sin)
    assert explained.graph_count == 1 and explained.graph_break_count == 0, explained.break_reasons

    compiled = torch.compile(fast, fullgraph=True)
    y = compiled(x, cos, sin)
    y.square().sum().backward()
    y_ref = ref(x, cos, sin)
    y_ref.square().sum().backward()
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
    for (name, p), p_ref in zip(fast.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-4, atol=1e-4, msg=f"grad of {name}")


@pytest.mark.parametrize("op", ["rope_attention", "swiglu", "add_rms_norm"])
def test_opcheck(op):
    gen = torch.Generator().manual_seed(3)
    if op == "rope_attention":
        cos, sin = _tables(20, 32)
        args = (torch.randn(1, 20, 3 * 2 * 32, generator=gen).to(DEVICE).requires_grad_(), cos, sin, 2)
        target = torch.ops.hrm_fast.rope_attention.default
    elif op == "swiglu":
        args = (torch.randn(3, 4, 64, generator=gen).to(DEVICE).requires_grad_(),)
        target = torch.ops.hrm_fast.swiglu.default
    else:
        x = torch.randn(5, 32, generator=gen).to(DEVICE).requires_grad_()
        args = (x, torch.randn(5, 32, generator=gen).to(DEVICE).requires_grad_(), 1e-6)
        target = torch.ops.hrm_fast.add_rms_norm.default
    torch.library.opcheck(target, args)
