"""Step programs in CUDA graphs: when to capture, and how to undo the warm-up (or a failed step) first.

A step program mutates a known list of tensors (weights, optimizer state, carries, ...). Capturing it in
a CUDA graph needs warm-up calls (compilation, allocator, cuBLAS) whose effects must not count:
:class:`Snapshot` copies those tensors and the torch RNG, :meth:`Snapshot.restore` puts them back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def cuda_graphs_default(device: torch.device) -> bool:
    """CUDA graphs are on by default exactly when the tensors live on an available CUDA device."""
    return device.type == "cuda" and torch.cuda.is_available()


class Snapshot:
    """Copies of ``tensors`` and of the torch RNG (CPU and ``device``'s CUDA generator) taken now."""

    def __init__(self, tensors: list[torch.Tensor], device: torch.device) -> None:
        self.tensors, self.device = tensors, device
        with torch.no_grad():
            self.saved = [t.clone() for t in tensors]
        self.cpu_rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def restore(self) -> None:
        """Put every tensor (in place: addresses stay valid) and the RNG back; the copies are released."""
        with torch.no_grad():
            for t, s in zip(self.tensors, self.saved):
                t.copy_(s)
        self.saved = []
        torch.set_rng_state(self.cpu_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state(self.cuda_rng, self.device)


def capture(fn: Callable[[], T], state: list[torch.Tensor], device: torch.device,
            warmup_steps: int = 2) -> tuple[torch.cuda.CUDAGraph, T]:
    """Warm ``fn`` up on a side stream, undo the warm-up's effects on ``state``, capture one call.

    Returns the graph and the call's outputs (static tensors that each ``graph.replay()`` overwrites).
    """
    snapshot = Snapshot(state, device)
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup_steps):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    snapshot.restore()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out
