"""Eval episodes as one program: :class:`EvalStep` (one segment, compiled, CUDA-graph captured on CUDA) and
:class:`EvalRunner` (whole episodes, with the eager loop as fallback), used by validation, ``train.evaluate``
and the solver."""

from __future__ import annotations

import contextlib
import warnings

import torch

from hrm_fast.faults import fault_point, first_line
from hrm_fast.graphs import capture, cuda_graphs_default
from hrm_fast.model.hrm import BATCH_KEYS, HRM
from hrm_fast.model.losses import act_loss
from hrm_fast.model.precision import no_grad_region


class EvalStep:
    """One eval segment (model in eval mode: halts only at halt_max_steps) on a persistent carry.

    ``start(batch)`` loads a new batch (every row restarts); each ``segment()`` advances every row by one
    segment and returns (outputs, metric sums) -- static tensors under CUDA graphs. Runs in
    inference mode (``no_grad`` when compiled); compiled with ``fullgraph=True`` when ``compile``; captured on CUDA.
    """

    def __init__(self, model: HRM, batch_size: int, device: torch.device | str, *, compile: bool = True,
                 cuda_graph: bool | None = None, loss_type: str | None = None) -> None:
        self.model = model
        self.device = torch.device(device)
        self.carry = model.initial_carry(batch_size, self.device)
        self.batch = {k: torch.zeros_like(v) for k, v in self.carry.current_data.items()}
        self.loss_type = loss_type or model.config.loss_type
        self.cuda_graph = cuda_graphs_default(self.device) if cuda_graph is None else cuda_graph
        self._fn = torch.compile(self._body, fullgraph=True) if compile else self._body
        self._graph: torch.cuda.CUDAGraph | None = None
        self._out: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]] | None = None

    def _body(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        with no_grad_region(True):  # inference mode eager, no_grad while compiling
            carry, outputs = self.model(self.carry, self.batch)
            _, metrics = act_loss(carry, outputs, self.loss_type)
        return outputs, metrics

    def start(self, batch: dict[str, torch.Tensor]) -> None:
        """New rows: copy ``batch`` into the static buffers and mark every row halted (restarts next segment)."""
        for k in BATCH_KEYS:
            self.batch[k].copy_(batch[k], non_blocking=True)
        self.carry.halted.fill_(True)

    def segment(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        if self.model.training:
            raise ValueError("EvalStep: call model.eval() first")
        if not self.cuda_graph:
            return self._fn()
        if self._graph is None:
            c = self.carry
            self._graph, self._out = capture(self._fn, [c.z_H, c.z_L, c.steps, c.halted, *c.current_data.values()],
                                             self.device)
        assert self._out is not None
        self._graph.replay()
        return self._out

    def run(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """All halt_max_steps segments of ``batch``; returns the last segment's (outputs, metrics)."""
        self.start(batch)
        out = None
        for _ in range(self.model.config.halt_max_steps):
            out = self.segment()
        assert out is not None
        return out


class EvalRunner:
    """Whole eval episodes (all ``halt_max_steps`` segments) of fixed-size batches, the way validation and
    ``train.evaluate`` run them: an :class:`EvalStep` (compiled; CUDA graph on CUDA) when ``compile``, else
    the eager loop (a fresh carry per batch). Build one per model and batch size and reuse it: each new
    EvalStep compiles again.

    If the EvalStep fails at its first batch (compilation or capture), a warning names the error and the
    runner continues with the eager loop, which computes the same episode. ``amp_dtype``: autocast dtype
    on CUDA (None = the model's own dtype).
    """

    def __init__(self, model: HRM, batch_size: int, device: torch.device | str, *, compile: bool,
                 cuda_graph: bool | None = None, loss_type: str | None = None,
                 amp_dtype: torch.dtype | None = None) -> None:
        self.model, self.batch_size, self.device = model, batch_size, torch.device(device)
        self.compile, self.cuda_graph = compile, cuda_graph
        self.loss_type = loss_type or model.config.loss_type
        self.amp_dtype = amp_dtype
        self._step: EvalStep | None = None
        self._proven = False  # the EvalStep has completed one batch

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        # no weight-cast cache: it would hold tensors from before a CUDA-graph capture
        return torch.autocast(self.device.type, dtype=self.amp_dtype, cache_enabled=False)

    def __call__(self, batch: dict[str, torch.Tensor], metrics: bool = True
                 ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(last segment's outputs, metric sums of :func:`act_loss` or {} without ``metrics``) for ``batch``
        ([batch_size] rows on the device). Under CUDA graphs both are static buffers: read them before the next
        call."""
        if self.compile:
            try:
                if self._step is None:
                    self._step = EvalStep(self.model, self.batch_size, self.device, compile=True,
                                          cuda_graph=self.cuda_graph, loss_type=self.loss_type)
                with self._autocast():
                    out = self._step.run(batch)
                if not self._proven:
                    fault_point("first_eval_step")
                self._proven = True
                return out
            except Exception as err:  # noqa: BLE001 -- any failure of the compiled path falls back to eager
                if self._proven:
                    raise
                warnings.warn(f"the compiled eval step failed at its first batch ({first_line(err)}); evaluating with "
                              "the eager loop (same results, slower). Set compile=false to choose it; please report "
                              "the error.",
                              RuntimeWarning, stacklevel=2)
                self.compile, self._step = False, None
        carry = self.model.initial_carry(self.batch_size, self.device)
        with no_grad_region(True):
            for _ in range(self.model.config.halt_max_steps):
                with self._autocast():
                    carry, outputs = self.model(carry, batch)
            sums = act_loss(carry, outputs, self.loss_type)[1] if metrics else {}
        return outputs, sums


__all__ = ["EvalRunner", "EvalStep"]
