"""Fit puzzle-table rows (and, in ``full`` mode, the network) on demonstration rows: HRM's training loop in
small (persistent ACT carry, the same loss and optimizers), with its own seeded random streams.

Nothing global changes: torch's RNG is forked for the duration (dropout draws), and the exploration draws
and the row sampling come from a local generator.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from hrm_fast.config import TrainConfig
from hrm_fast.eval.predict import make_batch
from hrm_fast.eval.views import EvalSplit
from hrm_fast.model.hrm import HRM
from hrm_fast.model.losses import act_loss
from hrm_fast.solve.init import freeze, optimizers_for


@dataclass
class FitLog:
    """Per optimizer step: mean LM loss of the batch's rows, token accuracy of the rows that halted (NaN if none)."""

    lm_loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)


def _autocast(device: torch.device, amp_dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()


def fit(
    model: HRM,
    demos: EvalSplit,
    train_cfg: TrainConfig,
    *,
    steps: int,
    batch_size: int,
    mode: str,
    seed: int = 0,
    device: torch.device | None = None,
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
    desc: str = "fit",
    pools: list[np.ndarray] | None = None,
) -> FitLog:
    """Train ``model`` in place for ``steps`` optimizer steps on rows of ``demos`` drawn at random:
    ``batch_size`` rows from each of ``pools`` (row-index arrays, e.g. one per task; None = all rows).

    mode ``embedding``: the network is frozen (its Parameters get requires_grad False; restored after),
    only the puzzle rows of the demos' ids move (SparseSignSGD, ``train_cfg.puzzle_emb_lr``); ``full``: the
    network trains too (the run's optimizer, ``train_cfg.lr``, constant: no warmup). The model is left in
    eval mode."""
    device = device or next(model.parameters()).device
    frozen = {"embedding": "network", "full": "none"}[mode]
    grads_before = [p.requires_grad for p in model.parameters()]
    freeze(model, frozen)
    optimizers = optimizers_for(model, train_cfg, frozen)  # at their base lr: no schedule
    params = [p for p in model.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(seed)
    pools = pools if pools is not None else [np.arange(demos.num_rows)]
    hms, rows_per_step = model.config.halt_max_steps, batch_size * len(pools)
    log = FitLog()
    devices = [device] if device.type == "cuda" else []
    bar = tqdm(total=steps, desc=desc, unit="step", disable=not progress, dynamic_ncols=True, leave=False)
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            model.train()
            carry = model.initial_carry(rows_per_step, device)
            for _ in range(steps):
                picks = [p[torch.randint(0, len(p), (batch_size,), generator=gen).numpy()] for p in pools]
                rows = np.concatenate(picks)
                batch = make_batch(demos, rows, rows_per_step, device)
                explore = torch.rand(rows_per_step, generator=gen).to(device)
                min_steps = torch.randint(2, max(hms, 2) + 1, (rows_per_step,), generator=gen, dtype=torch.int32)
                for opt in optimizers:
                    opt.zero_grad(set_to_none=True)
                with _autocast(device, amp_dtype):
                    carry, outputs = model(carry, batch, explore, min_steps.to(device))
                    loss, metrics = act_loss(carry, outputs, model.config.loss_type)
                (loss / rows_per_step).backward()
                if params and train_cfg.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, train_cfg.grad_clip, foreach=True)
                for opt in optimizers:
                    opt.step()
                count = float(metrics["count"])
                log.lm_loss.append(float(metrics["lm_loss"]) / rows_per_step)
                log.accuracy.append(float(metrics["accuracy"]) / count if count else float("nan"))
                bar.update(1)
                bar.set_postfix(loss=f"{log.lm_loss[-1]:.3f}", refresh=False)
    finally:
        bar.close()
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        model.eval()
        for p, g in zip(model.parameters(), grads_before):
            p.requires_grad_(g)
    return log


@torch.no_grad()
def demo_metrics(model: HRM, demos: EvalSplit, batch_size: int, device: torch.device | None = None,
                 amp_dtype: torch.dtype | None = None) -> dict[str, float]:
    """Eval-mode episodes (all halt_max_steps segments) over every demo row: mean LM loss per row,
    token accuracy and exact (whole grid) accuracy. Deterministic; the model's mode is restored."""
    from hrm_fast.eval.runner import EvalRunner

    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    runner = EvalRunner(model, batch_size, device, compile=False, amp_dtype=amp_dtype)
    sums = {"lm_loss": 0.0, "accuracy": 0.0, "exact_accuracy": 0.0, "count": 0.0}
    try:
        for start in range(0, demos.num_rows, batch_size):
            rows = np.arange(start, min(start + batch_size, demos.num_rows))
            _, metrics = runner(make_batch(demos, rows, batch_size, device))
            for k in sums:
                sums[k] += float(metrics[k])
    finally:
        model.train(was_training)
    n = max(sums.pop("count"), 1.0)
    return {"lm_loss": sums["lm_loss"] / n, "accuracy": sums["accuracy"] / n, "exact": sums["exact_accuracy"] / n}
