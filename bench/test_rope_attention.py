"""rope_attention benchmark: reference vs torch.compile(reference) vs Triton (harness: bench/ops_common.py).

FLOP model: forward 4*B*H*S^2*Dh, backward 2.5x forward (the FlashAttention convention; RoPE is not counted).
"""

from __future__ import annotations

import math

import pytest
import torch

from bench.ops_common import CUDA, DEVICE, DTYPE, MODES, PROVIDERS, Cost, measure, pick
from hrm_fast.ops.rope_attention import fused, reference

# name -> (batch, heads, seq, head_dim)
ATTN_SHAPES = {"seed": (16, 16, 901, 32), "hrm": (16, 8, 901, 64)}
if not CUDA:
    ATTN_SHAPES = {"seed-small": (1, 4, 96, 32), "hrm-small": (1, 2, 96, 64)}


def attention_cost(batch: int, heads: int, seq: int, head_dim: int, mode: str) -> Cost:
    e = torch.finfo(DTYPE).bits // 8
    width = heads * head_dim
    fwd = Cost(4.0 * batch * heads * seq * seq * head_dim,
               batch * seq * 4 * width * e + batch * heads * seq * 4 + 2 * seq * head_dim * 4)  # fmt: skip
    if mode == "fwd":
        return fwd
    # backward reads qkv, out, d_out, lse and writes d_qkv (+ the fp32 delta written and read)
    bwd_bytes = batch * seq * 8 * width * e + 3 * batch * heads * seq * 4
    return Cost(fwd.flops * 3.5, fwd.bytes + bwd_bytes)


def rope_tables(seq: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    emb = torch.outer(torch.arange(seq, dtype=torch.float32), inv_freq).repeat(1, 2)
    return emb.cos().to(DEVICE), emb.sin().to(DEVICE)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("shape", list(ATTN_SHAPES), ids=str)
def test_rope_attention(benchmark, shape, provider, mode):
    batch, heads, seq, head_dim = ATTN_SHAPES[shape]
    op = pick(provider, reference, fused)
    qkv = torch.randn(batch, seq, 3 * heads * head_dim, device=DEVICE, dtype=DTYPE) / math.sqrt(head_dim)
    qkv.requires_grad_(mode == "fwd+bwd")
    cos, sin = rope_tables(seq, head_dim)
    benchmark.group = f"rope_attention {shape} {mode}"
    measure(benchmark, f"rope_attention {shape} {provider} {mode}", lambda q: op(q, cos, sin, heads), [qkv], mode,
            attention_cost(batch, heads, seq, head_dim, mode), provider)  # fmt: skip
