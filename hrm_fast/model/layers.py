"""HRM's building blocks: casted linear/embedding, RoPE tables, attention, SwiGLU, the post-norm block.

Weights are fp32 "master" parameters cast to the activation dtype at every call (HRM's
``CastedLinear``); there are no biases (except where asked) and no norm gains. The hot math goes
through :mod:`hrm_fast.ops`, which picks the reference PyTorch or a fused kernel.

Fast paths (same values, less work): :func:`cast_weights_once` casts every master weight once for a
whole segment instead of at each of the recurrence's dozens of calls, and ``rows=k`` on
:class:`Block` / :class:`ReasoningModule` computes only the first k output positions of the last
block (its keys and values still see every position), which is all the Q head needs.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from hrm_fast import ops


def trunc_normal_init_(tensor: torch.Tensor, std: float = 1.0, lower: float = -2.0, upper: float = 2.0) -> torch.Tensor:
    """Fill ``tensor`` with a normal truncated to [lower*std, upper*std] whose *actual* std is ``std``.

    JAX-style: the underlying normal's scale is enlarged so that, after truncation, the standard
    deviation equals ``std`` (PyTorch's ``trunc_normal_`` does not correct for truncation). std 0
    gives zeros. Sampled by inverse CDF from a uniform draw.
    """
    with torch.no_grad():
        if std == 0:
            return tensor.zero_()
        sqrt2 = math.sqrt(2.0)
        cdf_lo = 0.5 * (1 + math.erf(lower / sqrt2))
        cdf_hi = 0.5 * (1 + math.erf(upper / sqrt2))
        mass = cdf_hi - cdf_lo
        pdf_lo = math.exp(-0.5 * lower * lower) / math.sqrt(2 * math.pi)
        pdf_hi = math.exp(-0.5 * upper * upper) / math.sqrt(2 * math.pi)
        # variance of a standard normal truncated to [lower, upper]
        var = 1 - (upper * pdf_hi - lower * pdf_lo) / mass - ((pdf_hi - pdf_lo) / mass) ** 2
        scale = std / math.sqrt(var)
        tensor.uniform_(2 * cdf_lo - 1, 2 * cdf_hi - 1)
        tensor.erfinv_().mul_(sqrt2 * scale).clamp_(lower * scale, upper * scale)
    return tensor


class CastedLinear(nn.Module):
    """y = x @ W^T (+ b) with W [out, in] fp32, truncated LeCun normal init, cast to x.dtype per call.

    Inside :func:`cast_weights_once` the cast copies made on entry are used instead (same values).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(trunc_normal_init_(torch.empty(out_features, in_features), std=in_features**-0.5))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.cast_cache: tuple[torch.Tensor, torch.Tensor | None] | None = None

    def weights_for(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(weight, bias) in ``dtype``: the once-per-segment copies when present, else a fresh cast."""
        cached = self.cast_cache
        if cached is not None and cached[0].dtype == dtype:
            return cached
        return self.weight.to(dtype), (self.bias.to(dtype) if self.bias is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weights_for(x.dtype)
        return F.linear(x, weight, bias)


class CastedEmbedding(nn.Module):
    """Lookup in an fp32 table [num, dim] (truncated normal, ``init_std``), result cast to ``cast_to``."""

    def __init__(self, num_embeddings: int, embedding_dim: int, init_std: float, cast_to: torch.dtype) -> None:
        super().__init__()
        self.cast_to = cast_to
        self.weight = nn.Parameter(trunc_normal_init_(torch.empty(num_embeddings, embedding_dim), std=init_std))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight.to(self.cast_to))


@contextlib.contextmanager
def cast_weights_once(module: nn.Module, dtype: torch.dtype) -> Iterator[None]:
    """Within the block, every :class:`CastedLinear` under ``module`` uses one ``dtype`` copy of its weights.

    The copies are made under the caller's grad mode, so with grad on their backward still reaches the
    fp32 masters. A no-op when the weights already have ``dtype`` (``.to`` returns them unchanged) and
    while ``torch.compile`` traces (Inductor de-duplicates the casts itself; module attribute writes
    would only add guards).
    """
    linears = [m for m in module.modules() if isinstance(m, CastedLinear)]
    if torch.compiler.is_compiling() or all(m.weight.dtype == dtype for m in linears):
        yield
        return
    for m in linears:
        m.cast_cache = (m.weight.to(dtype), m.bias.to(dtype) if m.bias is not None else None)
    try:
        yield
    finally:
        for m in linears:
            m.cast_cache = None


def rope_tables(head_dim: int, positions: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [positions, head_dim] fp32 with the frequency vector duplicated [f, f] (rotate-half RoPE)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    freqs = torch.outer(torch.arange(positions, dtype=torch.float32), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def identity_rope_tables(head_dim: int, positions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos = 1, sin = 0: RoPE becomes the identity (used with learned positions)."""
    return torch.ones(positions, head_dim), torch.zeros(positions, head_dim)


class Attention(nn.Module):
    """Non-causal multi-head self-attention with RoPE: fused QKV projection, no biases."""

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv_proj = CastedLinear(hidden_size, 3 * hidden_size, bias=False)
        self.o_proj = CastedLinear(hidden_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rows: int | None = None) -> torch.Tensor:
        """x [B, S, D] -> [B, S, D] (or [B, rows, D]: only the first ``rows`` queries); cos/sin [S, head_dim] fp32."""
        if rows is None:
            return self.o_proj(ops.rope_attention(self.qkv_proj(x), cos, sin, self.num_heads))
        weight, _ = self.qkv_proj.weights_for(x.dtype)
        width = x.shape[-1]
        q = F.linear(x[:, :rows], weight[:width])
        kv = F.linear(x, weight[width:])
        return self.o_proj(ops.rope_attention(q, cos, sin, self.num_heads, kv=kv))


class SwiGLU(nn.Module):
    """down(silu(gate) * up) with one fused gate/up projection [D -> 2I]."""

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_up_proj = CastedLinear(hidden_size, 2 * intermediate_size, bias=False)
        self.down_proj = CastedLinear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(ops.swiglu(self.gate_up_proj(x)))


class Block(nn.Module):
    """Post-norm transformer block: h <- norm(h + attn(h)); h <- norm(h + mlp(h)). Norms have no weights."""

    def __init__(self, hidden_size: int, num_heads: int, intermediate_size: int, eps: float, dropout: float) -> None:
        super().__init__()
        self.self_attn = Attention(hidden_size, num_heads)
        self.mlp = SwiGLU(hidden_size, intermediate_size)
        self.eps = eps
        self.dropout = dropout

    def forward(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rows: int | None = None) -> torch.Tensor:
        """h [B, S, D] in the forward dtype -> same ([B, rows, D]: only the first ``rows`` positions)."""
        attn = self.self_attn(h, cos, sin, rows)
        if rows is not None:
            h = h[:, :rows]
        if self.dropout:
            attn = F.dropout(attn, self.dropout, self.training)
        h = ops.add_rms_norm(h, attn, self.eps)
        mlp = self.mlp(h)
        if self.dropout:
            mlp = F.dropout(mlp, self.dropout, self.training)
        return ops.add_rms_norm(h, mlp, self.eps)


class ReasoningModule(nn.Module):
    """One HRM level (H or L): add the injection once, then run the blocks in order."""

    def __init__(self, blocks: list[Block]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(blocks)
        self.grad_checkpoint = False

    def forward(
        self, h: torch.Tensor, injection: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rows: int | None = None
    ) -> torch.Tensor:
        """h, injection [B, S, D] -> [B, S, D]. With ``grad_checkpoint`` (and grad on), blocks recompute in backward.

        ``rows``: the last block computes only the first ``rows`` positions -> [B, rows, D].
        """
        h = h + injection
        recompute = self.grad_checkpoint and torch.is_grad_enabled()
        last = len(self.layers) - 1
        for i, block in enumerate(self.layers):
            block_rows = rows if i == last else None
            if recompute:
                h = checkpoint(block, h, cos, sin, block_rows, use_reentrant=False)
            else:
                h = block(h, cos, sin, block_rows)
        return h
