"""The training step: one optimizer step of one rank as one program, for one rank or under ``torchrun``.

:class:`TrainStep` runs, for every micro-batch slot, the ACT update (halted rows take the new batch's
rows), the inner forward, the loss and its gradient; then, with several ranks, the gradient all-reduce
and the puzzle-gradient gather; the gradient norm (and clipping); the optimizer updates of every
parameter group (:mod:`hrm_fast.training.optim`: AdamATan2 or AdamW for the weights, opt-in Muon for the
blocks' matrices, sparse SignSGD for the puzzle table), and the EMA of the weights.

How it runs:
- ``compile=False``: eagerly; the learning rates are the param groups' Python floats, so the updates are
  exactly those of the optimizers' own ``step()``.
- ``compile=True`` on one rank: the whole step is ``torch.compile(fullgraph=True)``: one Dynamo graph with
  the backward traced in (``torch._dynamo.config.trace_autograd_ops``), no host sync, no Python between the
  forward, the backward and the optimizer. The learning rates are 0-d tensors, refilled each call from
  each group's ``lr`` (``hrm_fast.training.optim.set_lr`` keeps working, without recompiles).
- ``compile=True`` with several ranks: each slot's forward and loss are compiled; the rest runs eagerly.
- ``cuda_graph`` (default: on when the model is on a CUDA device; one rank, compiled): the step is also
  captured in a CUDA graph after warm-up steps whose effect on weights, optimizer state, carries and RNG
  is undone. Inputs go through static buffers; outputs are static device tensors, overwritten by the next
  call: clone what you keep.

The optimizers' ``state`` tensors are used and updated in place, so ``optimizer.state_dict()`` checkpoints
stay valid. Build the step after loading an optimizer checkpoint. No host-side checks inside: the step
returns the loss and grad norm for the caller's device-side tracker. NVTX ranges belong around calls.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.optim import Optimizer

from hrm_fast import distributed as D
from hrm_fast.graphs import capture, cuda_graphs_default
from hrm_fast.model.hrm import BATCH_KEYS, HRM, Carry
from hrm_fast.model.losses import act_loss
from hrm_fast.training.ema import EMA
from hrm_fast.training.optim import (
    AdamATan2,
    AdamW,
    Muon,
    SparseSignSGD,
    adam_state,
    adam_update,
    muon_state,
    muon_update,
    sign_sgd_update,
)


def _trace_autograd() -> contextlib.AbstractContextManager:
    """Dynamo config that lets a compiled function contain ``torch.autograd.grad`` without a graph break."""
    return torch._dynamo.config.patch(trace_autograd_ops=True)


@dataclass
class StepOutputs:
    """Device tensors of one training step (static buffers under CUDA graphs: clone what you keep).

    loss_sum: [] fp32, the loss summed over this rank's rows; grad_norm: [] fp32, before clipping;
    metrics: the summed metric dict of :func:`hrm_fast.model.losses.act_loss` over the micro-batches.
    """

    loss_sum: torch.Tensor
    grad_norm: torch.Tensor
    metrics: dict[str, torch.Tensor]


class TrainStep:
    """One optimizer step of one rank (see the module docstring).

    ``carries``: one persistent :class:`Carry` per micro-batch (``grad_accum`` of them, equal sizes), updated
    in place. Call with this rank's batch (``grad_accum * micro_batch`` rows, micro-batch ``i`` = rows
    ``i*micro .. (i+1)*micro``) and, in training with exploration, the exploration draws of those rows.
    ``dist``: this rank's place under ``torchrun`` (None: one process).
    """

    def __init__(
        self,
        model: HRM,
        optimizers: list[Optimizer],
        carries: list[Carry],
        *,
        loss_type: str,
        global_batch_size: int,
        grad_clip: float | None = None,
        compile: bool = True,
        cuda_graph: bool | None = None,
        warmup_steps: int = 2,
        ema: EMA | None = None,
        dist: D.DistInfo | None = None,
    ) -> None:
        self.model, self.optimizers, self.carries = model, optimizers, carries
        self.ema = ema
        self.loss_type, self.global_batch_size, self.grad_clip = loss_type, global_batch_size, grad_clip
        self.dist = dist
        self.ranks = dist.world_size if dist is not None else 1
        first = carries[0]
        self.micro = first.steps.shape[0]
        self.device = first.steps.device
        rows = self.micro * len(carries)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.emb = model.puzzle_emb
        if self.emb is not None:
            self.emb.prepare(self.micro)
            ndim = self.emb.weights.shape[1]
            self.stash_ids = torch.zeros(rows, dtype=torch.int32, device=self.device)
            self.stash_grads = torch.zeros(rows, ndim, dtype=self.emb.weights.dtype, device=self.device)
        self._plan = self._optimizer_plan()
        # static inputs
        self.batch = {k: torch.zeros_like(torch.cat([c.current_data[k] for c in carries])) for k in BATCH_KEYS}
        self.explore = torch.zeros(rows, dtype=torch.float32, device=self.device)
        self.min_steps = torch.zeros(rows, dtype=torch.int32, device=self.device)
        self.loss_mult = torch.ones((), dtype=torch.float32, device=self.device)
        self.lr_buffers = [torch.zeros((), dtype=torch.float32, device=self.device)
                           for opt in optimizers for _ in opt.param_groups]
        self.lrs: list[float | torch.Tensor] = list(self.lr_buffers)
        self.compile = compile
        self.cuda_graph = cuda_graphs_default(self.device) if cuda_graph is None else cuda_graph
        if self.cuda_graph and (self.device.type != "cuda" or not compile or self.ranks > 1):
            raise ValueError("TrainStep: cuda_graph=True needs compile=True, one rank and the model on a CUDA device")
        self.warmup_steps = warmup_steps
        whole = compile and self.ranks == 1
        self._forward_loss = (torch.compile(self._slot_forward_loss, dynamic=False) if compile and not whole
                              else self._slot_forward_loss)
        self._fn: Callable[[], StepOutputs] = torch.compile(self._body, fullgraph=True) if whole else self._body
        self._graph: torch.cuda.CUDAGraph | None = None
        self._out: StepOutputs | None = None

    # ------------------------------------------------------------------ set-up
    def _optimizer_plan(self) -> list[tuple]:
        """Per param group: (kind, lr index, param indices, params, steps, exp_avg, exp_avg_sq, hyper-parameters).

        Fixed at construction, so the compiled program never reads ``param_groups`` (Dynamo would guard on
        every value there, ``lr`` included, and recompile when the schedule moves) nor ``optimizer.state``.
        Missing Adam states are created here, as the optimizers' first step would.
        """
        index = {id(p): i for i, p in enumerate(self.params)}
        plan: list[tuple] = []
        k = 0
        for opt in self.optimizers:
            for group in opt.param_groups:
                if isinstance(opt, SparseSignSGD):
                    if opt.embedding is not self.emb:
                        raise ValueError("TrainStep: the SparseSignSGD optimizer is not for this model's puzzle table")
                    plan.append(("sign", k, float(group["weight_decay"])))
                elif isinstance(opt, (AdamATan2, AdamW)):
                    params = [p for p in group["params"] if id(p) in index]
                    states = [adam_state(opt, p) for p in params]
                    hyper = (tuple(float(b) for b in group["betas"]), float(group["weight_decay"]),
                             None if isinstance(opt, AdamATan2) else float(group["eps"]))
                    plan.append(("adam", k, [index[id(p)] for p in params], params, [st["step"] for st in states],
                                 [st["exp_avg"] for st in states], [st["exp_avg_sq"] for st in states], hyper))
                elif isinstance(opt, Muon):
                    params = [p for p in group["params"] if id(p) in index]
                    plan.append(("muon", k, [index[id(p)] for p in params], params,
                                 [muon_state(opt, p)["momentum_buffer"] for p in params], float(group["weight_decay"])))
                else:
                    raise ValueError(f"TrainStep: unsupported optimizer {type(opt).__name__} (hrm_fast.training.optim "
                                     "has AdamATan2, AdamW, Muon and SparseSignSGD)")
                k += 1
        return plan

    # ------------------------------------------------------------------ the program
    def _slot_forward_loss(self, carry: Carry, batch: dict[str, torch.Tensor], explore: torch.Tensor,
                           min_steps: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One ACT segment of one micro-batch slot: model forward + loss (loss multiplied by ``loss_mult``)."""
        carry, outputs = self.model(carry, batch, explore, min_steps)
        loss_sum, metrics = act_loss(carry, outputs, self.loss_type)
        return loss_sum * self.loss_mult, metrics

    def _body(self) -> StepOutputs:
        """Everything between the static inputs and the static outputs; no host syncs, no data-dependent Python."""
        n_params = len(self.params)
        grads: list[torch.Tensor] | None = None
        loss_total = torch.zeros((), dtype=torch.float32, device=self.device)
        metrics_total: dict[str, torch.Tensor] = {}
        for i, carry in enumerate(self.carries):
            rows = slice(i * self.micro, (i + 1) * self.micro)
            loss_sum, metrics = self._forward_loss(carry, {k: v[rows] for k, v in self.batch.items()},
                                                   self.explore[rows], self.min_steps[rows])
            wrt = list(self.params)
            if self.emb is not None:
                wrt.append(self.emb.local_weights)
            got = torch.autograd.grad(loss_sum / self.global_batch_size, wrt, allow_unused=True,
                                      materialize_grads=True)
            if self.emb is not None:
                self.stash_ids[rows].copy_(self.emb.local_ids)
                self.stash_grads[rows].copy_(got[n_params])
            got = list(got[:n_params])
            grads = got if grads is None or not got else torch._foreach_add(grads, got)
            loss_total = loss_total + loss_sum.detach().float()
            for k, v in metrics.items():
                v = v.detach().float()
                metrics_total[k] = v if k not in metrics_total else metrics_total[k] + v
        assert grads is not None
        with torch.no_grad():
            if self.ranks > 1:
                D.all_reduce_(grads, self.dist)
            grad_norm = (torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))) if grads  # none: only
                         else torch.zeros((), dtype=torch.float32, device=self.device))  # the puzzle table trains
            if self.grad_clip is not None:
                coef = torch.clamp(self.grad_clip / (grad_norm + 1e-6), max=1.0)
                torch._foreach_mul_(grads, coef)  # the grads are this step's own tensors
            self._apply_optimizers(grads)
            if self.ema is not None:
                self.ema.update()
        return StepOutputs(loss_total, grad_norm, metrics_total)

    def _apply_optimizers(self, grads: list[torch.Tensor]) -> None:
        for entry in self._plan:
            kind, k = entry[0], entry[1]
            lr = self.lrs[k]
            if kind == "sign":
                if self.emb is not None:
                    ids, sign_grads = self.stash_ids, self.stash_grads
                    if self.ranks > 1:
                        ids, sign_grads = D.all_gather_rows(ids), D.all_gather_rows(sign_grads)
                    sign_sgd_update(self.emb.weights, ids, sign_grads, lr, entry[2])
                continue
            if kind == "muon":
                _, _, idx, params, bufs, wd = entry
                if params:
                    muon_update(params, [grads[i] for i in idx], bufs, lr, wd)
                continue
            _, _, idx, params, steps, m, v, (betas, wd, eps) = entry
            if not params:
                continue
            adam_update(params, [grads[i] for i in idx], steps, m, v, lr, betas, wd, eps)

    # ------------------------------------------------------------------ calling
    def _load_inputs(self, batch: dict[str, torch.Tensor], explore: torch.Tensor | None,
                     min_steps: torch.Tensor | None, loss_mult: float) -> None:
        for k in BATCH_KEYS:
            self.batch[k].copy_(batch[k], non_blocking=True)
        if explore is not None:
            self.explore.copy_(explore, non_blocking=True)
        if min_steps is not None:
            self.min_steps.copy_(min_steps, non_blocking=True)
        elif self.model.training and self.model.config.halt_max_steps > 1:
            raise ValueError("TrainStep: pass explore and min_steps (the exploration draws of this rank's rows)")
        self.loss_mult.fill_(loss_mult)
        lrs = [float(group["lr"]) for opt in self.optimizers for group in opt.param_groups]
        if self.compile and self.ranks == 1:  # the program reads tensors: a new float would recompile
            for buffer, lr in zip(self.lr_buffers, lrs):
                buffer.fill_(lr)
        else:
            self.lrs = lrs

    def _run(self) -> StepOutputs:
        with _trace_autograd():
            return self._fn()

    def __call__(self, batch: dict[str, torch.Tensor], explore: torch.Tensor | None = None,
                 min_steps: torch.Tensor | None = None, loss_mult: float = 1.0) -> StepOutputs:
        """One optimizer step. ``loss_mult`` multiplies the loss (a test hook: NaN injection)."""
        self._load_inputs(batch, explore, min_steps, loss_mult)
        if not self.cuda_graph:
            return self._run()
        if self._graph is None:
            self._capture()
        assert self._graph is not None and self._out is not None
        self._graph.replay()
        return self._out

    # ------------------------------------------------------------------ CUDA graph capture
    def state_tensors(self) -> list[torch.Tensor]:
        """Every tensor a step mutates: weights, buffers, optimizer state, carries, puzzle stash, EMA."""
        out = [p.data for p in self.model.parameters()] + list(self.model.buffers())
        for opt in self.optimizers:
            for st in opt.state.values():
                out.extend(v for v in st.values() if isinstance(v, torch.Tensor))
        for c in self.carries:
            out.extend([c.z_H, c.z_L, c.steps, c.halted, *c.current_data.values()])
        if self.ema is not None:
            out.extend(self.ema.shadow)
        return out

    def _capture(self) -> None:
        self._graph, self._out = capture(self._run, self.state_tensors(), self.device, self.warmup_steps)


__all__ = ["StepOutputs", "TrainStep"]
