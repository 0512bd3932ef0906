"""The training and eval segment steps, each as one program: compiled, and on CUDA captured in a CUDA graph.

:class:`TrainStep` runs one optimizer step of one rank: for every micro-batch slot, the ACT update
(halted rows take the new batch's rows), the inner forward, the loss and its gradient; then the
gradient norm (and clipping), and the optimizer updates of every parameter group (AdamATan2 or
AdamW for the weights, sparse SignSGD for the puzzle table). :class:`EvalStep` runs one eval
segment (forward + metric sums) on a persistent carry.

How it runs:
- ``compile=True``: the whole step is ``torch.compile(fullgraph=True)``: one Dynamo graph with the
  backward traced in (``torch._dynamo.config.trace_autograd_ops``), so there is no host sync and no
  Python between the forward, the backward and the optimizer. On CPU that is all.
- ``cuda_graph`` (default: on when the model is on a CUDA device): the step is additionally captured
  in a CUDA graph (explicit ``torch.cuda.graph``) after warm-up steps whose effect on the weights,
  optimizer state, carries and RNG is undone. Inputs go through static buffers (batch, exploration
  draws, learning rates, a loss multiplier); outputs (losses, metric sums, grad norm) are static
  device tensors, overwritten by the next call: read them asynchronously or every N steps, clone
  what you keep.
- With ``ema``, the weights' moving average (:class:`hrm_fast.training.ema.EMA`) is updated after the optimizers.
- The optimizer updates are the documented updates of :class:`hrm_fast.training.optim.AdamATan2`,
  ``torch.optim.AdamW`` and :class:`hrm_fast.training.optim.SparseSignSGD`, written with tensors for the
  learning rate (a CUDA graph cannot take a new Python float each step). They use and update the
  optimizers' own ``state`` tensors, so ``optimizer.state_dict()`` checkpoints stay valid. The
  learning rate is read from each param group's ``lr`` at every call (``hrm_fast.training.optim.set_lr``
  keeps working).

Limits: one rank (``torch.distributed`` runs keep the trainer's eager loop); no host-side
``grad_clip``/NaN checks inside (the step returns the loss and grad norm for the caller's
device-side tracker). NVTX ranges belong around calls of these objects, never inside.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.optim import Optimizer

from hrm_fast.eval.runner import cuda_graphs_default
from hrm_fast.model.hrm import BATCH_KEYS, HRM, Carry
from hrm_fast.model.losses import act_loss
from hrm_fast.training.ema import EMA
from hrm_fast.training.optim import AdamATan2, SparseSignSGD, adam_atan2_update


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


# --------------------------------------------------------------------------- optimizer updates
def _adamw_update(params, grads, steps, m, v, lr, betas, wd, eps) -> None:  # noqa: ANN001
    """torch.optim.AdamW (amsgrad off, maximize off) with a tensor lr."""
    beta1, beta2 = betas
    torch._foreach_add_(steps, 1.0)
    if wd != 0:
        torch._foreach_mul_(params, 1 - lr * wd)
    torch._foreach_lerp_(m, grads, 1 - beta1)
    torch._foreach_mul_(v, beta2)
    torch._foreach_addcmul_(v, grads, grads, 1 - beta2)
    t = steps[0]
    step_size = lr / (1 - beta1**t)
    bias2_sqrt = (1 - beta2**t).sqrt()
    denoms = torch._foreach_sqrt(v)  # the only temporary: p -= m / ((sqrt(v) / bc2_sqrt + eps) / step_size)
    torch._foreach_div_(denoms, bias2_sqrt)
    torch._foreach_add_(denoms, eps)
    torch._foreach_div_(denoms, -step_size)
    torch._foreach_addcdiv_(params, m, denoms)


def _sign_sgd_update(weights: torch.Tensor, ids: torch.Tensor, grads: torch.Tensor, lr: torch.Tensor,
                     wd: float) -> None:
    """SparseSignSGD.step for one rank: rows sharing an id get the sign of their summed gradient."""
    ids = ids.to(torch.int64)
    same = (ids.unsqueeze(0) == ids.unsqueeze(1)).to(grads.dtype)
    summed = same @ grads
    rows = weights[ids] * (1 - lr * wd) - lr * torch.sign(summed)
    weights.index_put_((ids,), rows)


# --------------------------------------------------------------------------- training step
class TrainStep:
    """One optimizer step of one rank as one program (see the module docstring).

    ``carries``: one persistent :class:`Carry` per micro-batch (``grad_accum`` of them, equal sizes);
    they are updated in place. Call with this rank's batch (``grad_accum * micro_batch`` rows, micro-batch
    ``i`` = rows ``i*micro .. (i+1)*micro``) and, in training with exploration, the exploration draws of
    those rows.
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
    ) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized() and \
                torch.distributed.get_world_size() > 1:
            raise ValueError("TrainStep runs one rank; multi-rank training uses the trainer's eager loop")
        self.model, self.optimizers, self.carries = model, optimizers, carries
        self.ema = ema  # updated after the optimizers, inside the program
        self.loss_type, self.global_batch_size, self.grad_clip = loss_type, global_batch_size, grad_clip
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
        self._check_optimizers()
        self._init_optimizer_state()
        self._plan = self._optimizer_plan()
        # static inputs
        self.batch = {k: torch.zeros_like(torch.cat([c.current_data[k] for c in carries])) for k in BATCH_KEYS}
        self.explore = torch.zeros(rows, dtype=torch.float32, device=self.device)
        self.min_steps = torch.zeros(rows, dtype=torch.int32, device=self.device)
        self.loss_mult = torch.ones((), dtype=torch.float32, device=self.device)
        self.lrs = [torch.zeros((), dtype=torch.float32, device=self.device)
                    for opt in optimizers for _ in opt.param_groups]
        if compile and not hasattr(torch._dynamo.config, "trace_autograd_ops"):
            warnings.warn(f"torch {torch.__version__} cannot compile a backward inside a graph: the training step runs "
                          "eager (CUDA graphs still apply on CUDA)", stacklevel=2)
            compile = False
        self.compile = compile
        self.cuda_graph = cuda_graphs_default(self.device) if cuda_graph is None else cuda_graph
        if self.cuda_graph and self.device.type != "cuda":
            raise ValueError("TrainStep: cuda_graph=True needs the model and carries on a CUDA device")
        self.warmup_steps = warmup_steps
        self._fn: Callable[[], StepOutputs] = torch.compile(self._body, fullgraph=True) if compile else self._body
        self._graph: torch.cuda.CUDAGraph | None = None
        self._out: StepOutputs | None = None

    # ------------------------------------------------------------------ set-up
    def _check_optimizers(self) -> None:
        for opt in self.optimizers:
            if isinstance(opt, SparseSignSGD):
                if opt.embedding is not self.emb:
                    raise ValueError("TrainStep: the SparseSignSGD optimizer is not for this model's puzzle table")
            elif isinstance(opt, AdamATan2):
                pass
            elif type(opt) is torch.optim.AdamW:
                for g in opt.param_groups:
                    if g["amsgrad"] or g["maximize"]:
                        raise ValueError("TrainStep: AdamW with amsgrad/maximize is not supported")
            else:
                raise ValueError(f"TrainStep: unsupported optimizer {type(opt).__name__}")

    def _init_optimizer_state(self) -> None:
        """Create missing Adam states (as the optimizers' first step would) and put ``step`` on the device."""
        for opt in self.optimizers:
            if isinstance(opt, SparseSignSGD):
                continue
            for group in opt.param_groups:
                for p in group["params"]:
                    st = opt.state[p]
                    if not st:
                        st["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                        st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                        st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    else:
                        st["step"] = st["step"].to(device=p.device, dtype=torch.float32)
                if type(opt) is torch.optim.AdamW and self.device.type == "cuda":
                    group["capturable"] = True  # its own step() then also accepts the device-side step counts

    def _optimizer_plan(self) -> list[tuple]:
        """Per param group: (kind, lr index, param indices, params, steps, exp_avg, exp_avg_sq, hyper-parameters).

        Fixed at construction, so the compiled program never reads ``param_groups`` (Dynamo would guard on
        every value there, ``lr`` included, and recompile when the schedule moves) nor ``optimizer.state``.
        Hence: build the TrainStep after loading an optimizer checkpoint.
        """
        index = {id(p): i for i, p in enumerate(self.params)}
        plan: list[tuple] = []
        k = 0
        for opt in self.optimizers:
            for group in opt.param_groups:
                if isinstance(opt, SparseSignSGD):
                    plan.append(("sign", k, float(group["weight_decay"])))
                else:
                    params = [p for p in group["params"] if id(p) in index]
                    states = [opt.state[p] for p in params]
                    hyper = (tuple(float(b) for b in group["betas"]), float(group["weight_decay"]),
                             float(group.get("eps", 0.0)))
                    kind = "atan2" if isinstance(opt, AdamATan2) else "adamw"
                    plan.append((kind, k, [index[id(p)] for p in params], params, [st["step"] for st in states],
                                 [st["exp_avg"] for st in states], [st["exp_avg_sq"] for st in states], hyper))
                k += 1
        return plan

    # ------------------------------------------------------------------ the program
    def _body(self) -> StepOutputs:
        """Everything between the static inputs and the static outputs; no host syncs, no data-dependent Python."""
        model = self.model
        n_params = len(self.params)
        grads: list[torch.Tensor] | None = None
        loss_total = torch.zeros((), dtype=torch.float32, device=self.device)
        metrics_total: dict[str, torch.Tensor] = {}
        for i, carry in enumerate(self.carries):
            rows = slice(i * self.micro, (i + 1) * self.micro)
            batch = {k: v[rows] for k, v in self.batch.items()}
            carry, outputs = model(carry, batch, self.explore[rows], self.min_steps[rows])
            loss_sum, metrics = act_loss(carry, outputs, self.loss_type)
            loss_sum = loss_sum * self.loss_mult
            wrt = list(self.params)
            if self.emb is not None:
                wrt.append(self.emb.local_weights)
            got = torch.autograd.grad(loss_sum / self.global_batch_size, wrt, allow_unused=True,
                                      materialize_grads=True)
            if self.emb is not None:
                self.stash_ids[rows].copy_(self.emb.local_ids)
                self.stash_grads[rows].copy_(got[n_params])
            got = list(got[:n_params])
            grads = got if grads is None else torch._foreach_add(grads, got)
            loss_total = loss_total + loss_sum.detach().float()
            for k, v in metrics.items():
                v = v.detach().float()
                metrics_total[k] = v if k not in metrics_total else metrics_total[k] + v
        assert grads is not None
        with torch.no_grad():
            grad_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
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
                    _sign_sgd_update(self.emb.weights, self.stash_ids, self.stash_grads, lr, entry[2])
                continue
            _, _, idx, params, steps, m, v, (betas, wd, eps) = entry
            if not params:
                continue
            group_grads = [grads[i] for i in idx]
            if kind == "atan2":
                adam_atan2_update(params, group_grads, steps, m, v, lr, betas, wd)
            else:
                _adamw_update(params, group_grads, steps, m, v, lr, betas, wd, eps)

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
        k = 0
        for opt in self.optimizers:
            for group in opt.param_groups:
                self.lrs[k].fill_(float(group["lr"]))
                k += 1

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
        """Warm up (compile, allocator, cuBLAS) on a side stream, undo the warm-up's effects, capture."""
        tensors = self.state_tensors()
        with torch.no_grad():
            saved = [t.clone() for t in tensors]
        rng = torch.cuda.get_rng_state(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup_steps):
                self._run()
        torch.cuda.current_stream(self.device).wait_stream(side)
        with torch.no_grad():
            for t, s in zip(tensors, saved):
                t.copy_(s)
        del saved
        torch.cuda.set_rng_state(rng, self.device)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._out = self._run()
        self._graph = graph


__all__ = ["StepOutputs", "TrainStep"]
