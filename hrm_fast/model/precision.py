"""Precision and grad-mode helpers shared by the model, training and evaluation."""

from __future__ import annotations

import contextlib

import torch


def dtype_of(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def autocast_dtype(forward_dtype: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``model.forward_dtype`` on ``device``: bf16/fp16 on CUDA, None (no autocast) for
    float32 or off CUDA."""
    return None if forward_dtype == "float32" or device.type != "cuda" else dtype_of(forward_dtype)


def no_grad_region(fast: bool) -> contextlib.AbstractContextManager:
    """``inference_mode`` for the fast eager path, ``no_grad`` for the reference path and under torch.compile
    (a compiled graph has no per-op autograd bookkeeping anyway, and Dynamo traces ``no_grad`` without a break)."""
    if fast and not torch.compiler.is_compiling():
        return torch.inference_mode()
    return torch.no_grad()
