"""Optimizers and the LR schedule (as the HRM paper's code trains: arXiv:2506.21734).

- :class:`AdamATan2`: Adam without epsilon, theta <- theta (1 - lr wd) - lr/bc1 * atan2(m, sqrt(v / bc2)).
- :class:`SparseSignSGD`: the puzzle-embedding table; for every row id in the batch (all ranks),
  w <- w (1 - lr wd) - lr sign(sum of that id's gradients). Rows not in the batch are untouched.
- :class:`AdamW`: ``torch.optim.AdamW`` (amsgrad and maximize off) whose update is :func:`adam_update`.
- :class:`Muon`: ``torch.optim.Muon`` (Nesterov, 5 Newton-Schulz steps, the update RMS matched to AdamW's)
  whose update is :func:`muon_update`; ``train.matrix_optimizer=muon`` gives it the blocks' 2-D weights.
- :func:`build_optimizers`: [SparseSignSGD, AdamATan2 | AdamW, Muon (opt-in)], HRM's order plus Muon.

Each update is written once, as a function of tensors (:func:`adam_update`, :func:`muon_update`,
:func:`sign_sgd_update`),
called both by the optimizers' ``step()`` and by the compiled training step
(:class:`hrm_fast.training.step.TrainStep`), which passes the learning rate as a 0-d tensor (a CUDA graph
cannot take a new Python float each step).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer

from hrm_fast.config import TrainConfig
from hrm_fast.distributed import all_gather_rows
from hrm_fast.model.hrm import HRM, PuzzleEmbedding


def adam_update(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    steps: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    lr: float | torch.Tensor,
    betas: tuple[float, float],
    weight_decay: float,
    eps: float | None = None,
) -> None:
    """One update of an Adam parameter group, in place: :class:`AdamATan2` when ``eps`` is None, else AdamW.

    Both: t <- t + 1; p <- p (1 - lr wd); m <- lerp(m, g, 1 - b1); v <- b2 v + (1 - b2) g^2. Then
    AdamATan2: p <- p - lr / (1 - b1^t) * atan2(m, sqrt(v) / sqrt(1 - b2^t)) (per parameter);
    AdamW: p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps) (torch.optim.AdamW's formula, t of the
    group's first parameter). ``lr`` may be a 0-d tensor (the compiled step keeps it in a static buffer);
    ``steps`` are fp32 0-d tensors, one per parameter.
    """
    beta1, beta2 = betas
    torch._foreach_add_(steps, 1.0)
    if weight_decay != 0:
        torch._foreach_mul_(params, 1 - lr * weight_decay)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    denoms = torch._foreach_sqrt(exp_avg_sqs)  # the only temporary
    if eps is None:
        for p, m, denom, t in zip(params, exp_avgs, denoms, steps):
            bias1 = 1 - beta1**t
            bias2_sqrt = (1 - beta2**t).sqrt()
            p.sub_(torch.atan2(m, denom.div_(bias2_sqrt)) * (lr / bias1))
        return
    t = steps[0]
    step_size = lr / (1 - beta1**t)
    torch._foreach_div_(denoms, (1 - beta2**t).sqrt())
    torch._foreach_add_(denoms, eps)
    torch._foreach_div_(denoms, -step_size)
    torch._foreach_addcdiv_(params, exp_avgs, denoms)


def adam_state(opt: Optimizer, p: torch.Tensor) -> dict[str, torch.Tensor]:
    """``opt.state[p]``, created as an Adam-style optimizer's first step would (``step`` fp32 on ``p``'s device)."""
    st = opt.state[p]
    if not st:
        st["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
        st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    else:
        st["step"] = st["step"].to(device=p.device, dtype=torch.float32)
    return st


def _closure_loss(closure: Callable[[], Any] | None) -> Any:
    """The optimizer-``step`` convention: re-evaluate the loss with grad enabled if a closure is given."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


@torch.no_grad()
def _adam_step(opt: Optimizer, closure: Callable[[], Any] | None, atan2: bool) -> Any:
    """``step()`` of :class:`AdamATan2` / :class:`AdamW`: :func:`adam_update` on the params that have a gradient."""
    loss = _closure_loss(closure)
    for group in opt.param_groups:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            continue
        states = [adam_state(opt, p) for p in params]
        adam_update(params, [p.grad for p in params], [st["step"] for st in states], [st["exp_avg"] for st in states],
                    [st["exp_avg_sq"] for st in states], group["lr"], group["betas"], group["weight_decay"],
                    None if atan2 else group["eps"])
    return loss


class AdamATan2(Optimizer):
    """Adam-atan2 (Everett et al. 2024): Adam without epsilon, with decoupled weight decay (:func:`adam_update`).

    ``lr`` may be a float or a 0-d tensor (for CUDA graphs).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float | torch.Tensor = 1e-4,
        betas: tuple[float, float] = (0.9, 0.95),
        weight_decay: float = 0.0,
    ) -> None:
        if not 0.0 <= betas[0] < 1.0 or not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"AdamATan2: betas must be in [0, 1), got {betas}")
        if weight_decay < 0:
            raise ValueError(f"AdamATan2: weight_decay must be >= 0, got {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        return _adam_step(self, closure, atan2=True)


class AdamW(torch.optim.AdamW):
    """``torch.optim.AdamW`` (same hyper-parameters and state layout) whose step is :func:`adam_update`."""

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict], **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        for group in self.param_groups:
            if group["amsgrad"] or group["maximize"]:
                raise ValueError("AdamW: amsgrad and maximize are not supported")

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        return _adam_step(self, closure, atan2=False)


# The quintic Newton-Schulz coefficients of K. Jordan's Muon (kellerjordan.github.io/posts/muon), torch.optim.Muon's.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
MUON_MOMENTUM = 0.95
MUON_NS_STEPS = 5


def orthogonalize(g: torch.Tensor, steps: int = MUON_NS_STEPS, eps: float = 1e-7) -> torch.Tensor:
    """g [A, B] -> roughly U V^T of g = U S V^T ([A, B] bf16), by ``steps`` quintic Newton-Schulz iterations in bf16.

    The singular values come out in about [0.7, 1.2], not exactly 1 (the coefficients trade accuracy for speed).
    The iteration runs on the wide orientation, so its Gram matrix is min(A, B) square.
    """
    a, b, c = NS_COEFFICIENTS
    x = g.bfloat16()
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)  # spectral norm <= Frobenius norm = 1
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


def muon_update(params: list[torch.Tensor], grads: list[torch.Tensor], momentum_buffers: list[torch.Tensor],
                lr: float | torch.Tensor, weight_decay: float, momentum: float = MUON_MOMENTUM,
                ns_steps: int = MUON_NS_STEPS) -> None:
    """One Muon update of 2-D parameters, in place (torch.optim.Muon with ``adjust_lr_fn="match_rms_adamw"``).

    Per parameter p [A, B] with gradient g: buf <- lerp(buf, g, 1 - mu); u <- lerp(g, buf, mu) (Nesterov);
    p <- p (1 - lr wd) - lr * 0.2 sqrt(max(A, B)) * orthogonalize(u). The 0.2 sqrt(max(A, B)) factor gives the
    update the RMS of a typical AdamW update (Liu et al. 2025, "Muon is Scalable for LLM Training",
    arXiv 2502.16982), so Muon takes the Adam learning rate and schedule. ``lr`` may be a 0-d tensor.
    """
    torch._foreach_lerp_(momentum_buffers, grads, 1 - momentum)
    for p, g, buf in zip(params, grads, momentum_buffers):
        u = orthogonalize(g.lerp(buf, momentum), ns_steps).to(p.dtype)
        p.mul_(1 - lr * weight_decay)
        p.sub_(u * (lr * (0.2 * math.sqrt(max(p.shape)))))


def muon_state(opt: Optimizer, p: torch.Tensor) -> dict[str, torch.Tensor]:
    """``opt.state[p]`` of a :class:`Muon`, created as its first step would (``momentum_buffer`` zeros)."""
    st = opt.state[p]
    if not st:
        st["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    return st


class Muon(torch.optim.Muon):
    """``torch.optim.Muon`` (same state layout) with Nesterov momentum 0.95, 5 Newton-Schulz steps and the
    AdamW-matched learning-rate scale, whose step is :func:`muon_update` (so ``lr`` may be a 0-d tensor)."""

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict], lr: float | torch.Tensor = 1e-3,
                 weight_decay: float = 0.1) -> None:
        super().__init__(params, lr=lr, weight_decay=weight_decay, momentum=MUON_MOMENTUM, nesterov=True,
                         ns_steps=MUON_NS_STEPS, adjust_lr_fn="match_rms_adamw")

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = _closure_loss(closure)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                muon_update(params, [p.grad for p in params], [muon_state(self, p)["momentum_buffer"] for p in params],
                            group["lr"], group["weight_decay"])
        return loss


def matrix_parameters(model: HRM) -> list[torch.Tensor]:
    """The trainable 2-D weights inside the blocks (attention and MLP projections), Muon's share.

    Token embedding, LM head and Q head stay with Adam, as Muon's authors advise for input and output layers."""
    return [p for name, p in model.named_parameters() if p.requires_grad and p.ndim == 2 and ".layers." in name]


def sign_sgd_update(weights: torch.Tensor, ids: torch.Tensor, grads: torch.Tensor, lr: float | torch.Tensor,
                    weight_decay: float) -> None:
    """SparseSignSGD's update, in place: ids [N] int, grads [N, ndim] (all ranks' rows).

    Every row gets the sign of the summed gradient of all rows sharing its id (an id-equality matrix keeps shapes
    static: no ``unique``, no host sync); duplicates write identical rows.
    """
    ids = ids.to(torch.int64)
    same = (ids.unsqueeze(0) == ids.unsqueeze(1)).to(grads.dtype)
    summed = same @ grads
    rows = weights[ids] * (1 - lr * weight_decay) - lr * torch.sign(summed)
    weights.index_put_((ids,), rows)


class SparseSignSGD(Optimizer):
    """SignSGD with row-sparse decoupled weight decay for :class:`hrm_fast.model.hrm.PuzzleEmbedding`.

    Uses the gradient of the embedding's ``local_weights`` and the ids in ``local_ids`` (plus any
    micro-batches stashed by gradient accumulation). Under an initialised ``torch.distributed``
    with more than one rank the ids and gradients of every rank are all-gathered first, so every
    rank applies the same update. Duplicate ids have their gradients summed (via an id-equality
    matrix, which keeps shapes static: no ``unique``, no host sync).
    """

    def __init__(self, embedding: PuzzleEmbedding, lr: float | torch.Tensor = 1e-2, weight_decay: float = 0.1) -> None:
        if weight_decay < 0:
            raise ValueError(f"SparseSignSGD: weight_decay must be >= 0, got {weight_decay}")
        self.embedding = embedding
        super().__init__([embedding.weights], dict(lr=lr, weight_decay=weight_decay))

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.embedding.local_weights.grad = None
        self.embedding.pending.clear()

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201
        emb = self.embedding
        emb.stash_grad()
        if not emb.pending:
            return None
        ids = all_gather_rows(torch.cat([i for i, _ in emb.pending]))
        grads = all_gather_rows(torch.cat([g for _, g in emb.pending]))
        emb.pending.clear()
        group = self.param_groups[0]
        sign_sgd_update(emb.weights, ids, grads, group["lr"], group["weight_decay"])
        return None


def build_optimizers(model: HRM, train_cfg: TrainConfig) -> list[Optimizer]:
    """[SparseSignSGD for the puzzle table (if any), AdamATan2 or AdamW, Muon (``train.matrix_optimizer=muon``)].

    Adam gets every trainable Parameter, or with Muon all but :func:`matrix_parameters`, which Muon gets at the
    same ``train.lr`` and weight decay. Weight decay applies to every Parameter (as HRM). Each group stores
    ``base_lr`` for :func:`set_lr`.
    """
    optimizers: list[Optimizer] = []
    if model.puzzle_emb is not None:
        optimizers.append(
            SparseSignSGD(model.puzzle_emb, lr=train_cfg.puzzle_emb_lr, weight_decay=train_cfg.puzzle_emb_weight_decay)
        )
    matrices = matrix_parameters(model) if train_cfg.matrix_optimizer == "muon" else []
    to_muon = {id(p) for p in matrices}
    params = [p for p in model.parameters() if p.requires_grad and id(p) not in to_muon]
    betas = (train_cfg.beta1, train_cfg.beta2)
    if train_cfg.optimizer == "adam_atan2":
        optimizers.append(AdamATan2(params, lr=train_cfg.lr, betas=betas, weight_decay=train_cfg.weight_decay))
    else:
        optimizers.append(AdamW(params, lr=train_cfg.lr, betas=betas, weight_decay=train_cfg.weight_decay))
    if matrices:
        optimizers.append(Muon(matrices, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay))
    for opt in optimizers:
        for group in opt.param_groups:
            group["base_lr"] = group["lr"]
    return optimizers


def lr_at(step: int, total_steps: int, base_lr: float, warmup: int, min_ratio: float) -> float:
    """HRM's schedule: base * step / warmup during warmup, then cosine from base to base * min_ratio.

    Progress is clamped to [0, 1], so steps past ``total_steps`` stay at base * min_ratio.
    """
    if step < warmup:
        return base_lr * step / max(1, warmup)
    progress = min(1.0, max(0.0, (step - warmup) / max(1, total_steps - warmup)))
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def set_lr(optimizers: list[Optimizer], step: int, total_steps: int, train_cfg: TrainConfig) -> float:
    """Write the scheduled lr into every param group (from its ``base_lr``); returns the main optimizer's lr."""
    lr = 0.0
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, total_steps, group["base_lr"], train_cfg.lr_warmup_steps, train_cfg.lr_min_ratio)
            lr = group["lr"]
    return lr
