"""Exponential moving average of the weights (``train.ema``; TRM's EMA, arXiv:2510.04871).

After every optimizer step: w_ema <- decay * w_ema + (1 - decay) * w, for every trainable Parameter
(the puzzle-embedding table is a buffer and is not averaged, as in TRM). The averages start as a
copy of the weights. Validation, ``train.evaluate`` and the checkpoints' ``ema.safetensors`` use them;
training continues on the online weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class EMA:
    """fp32 shadow copies of ``model``'s trainable parameters, in ``named_parameters`` order.

    ``update()`` is device-side only (no host sync), so it can run inside a compiled step or a CUDA graph;
    the shadow tensors keep their storage for the whole run.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = float(decay)
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.shadow = [torch.empty_like(p, memory_format=torch.contiguous_format) for p in self.params]
        self.reset()

    @torch.no_grad()
    def reset(self) -> None:
        """Averages <- the current weights."""
        torch._foreach_copy_(self.shadow, [p.detach() for p in self.params])

    @torch.no_grad()
    def update(self) -> None:
        """One EMA step from the current weights (call after the optimizer step)."""
        torch._foreach_mul_(self.shadow, self.decay)
        torch._foreach_add_(self.shadow, [p.detach() for p in self.params], alpha=1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """{parameter name: averaged weight} (CPU copies), the keys of ``model.state_dict()``."""
        return {n: s.detach().cpu().clone() for n, s in zip(self.names, self.shadow)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Copy saved averages in place (names and shapes checked by the caller, e.g.
        :func:`hrm_fast.checkpoint.check_fits`)."""
        with torch.no_grad():
            for n, s in zip(self.names, self.shadow):
                s.copy_(state[n].to(device=s.device, dtype=s.dtype))

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Within the block the model's parameters hold the averages (in place: compiled code stays valid)."""
        with torch.no_grad():
            online = [p.detach().clone() for p in self.params]
            for p, s in zip(self.params, self.shadow):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, o in zip(self.params, online):
                    p.copy_(o)


def maybe_applied(ema: EMA | None) -> contextlib.AbstractContextManager:
    """``ema.applied()``, or a no-op without EMA."""
    return ema.applied() if ema is not None else contextlib.nullcontext()
