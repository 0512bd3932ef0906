"""HRM's losses and metrics (HRM paper, arXiv:2506.21734): stablemax/softmax CE, Q-halt and Q-continue BCE.

Everything is returned as *sums* over the batch (plus ``count``, the number of rows the metrics
cover) so that ranks and micro-batches can be added up before dividing; nothing calls ``.item()``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hrm_fast.data.encode import IGNORE_LABEL
from hrm_fast.model.hrm import Carry

LOSS_TYPES = ("stablemax", "softmax")


def stablemax(x: torch.Tensor) -> torch.Tensor:
    """s(x) = x + 1 for x >= 0, 1 / (1 - x) for x < 0 (elementwise, positive, continuous at 0)."""
    return torch.where(x < 0, 1 / (1 - x + 1e-30), x + 1)


def log_stablemax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    s = stablemax(x)
    return torch.log(s / s.sum(dim=dim, keepdim=True))


def stablemax_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_LABEL
) -> torch.Tensor:
    """Per-token -log(s(x_label) / sum_j s(x_j)) in float64 (float32 on MPS); 0 at ignored positions.

    logits [..., V], labels [...] int -> loss [...] float64.
    """
    dtype = torch.float32 if logits.device.type == "mps" else torch.float64
    logp = log_stablemax(logits.to(dtype), dim=-1)
    valid = labels != ignore_index
    safe = torch.where(valid, labels, 0).to(torch.long)
    picked = torch.gather(logp, -1, safe.unsqueeze(-1)).squeeze(-1)
    return -torch.where(valid, picked, 0)


def softmax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_LABEL) -> torch.Tensor:
    """Per-token softmax CE in float32; 0 at ignored positions. logits [..., V], labels [...] -> [...]."""
    flat = F.cross_entropy(
        logits.to(torch.float32).reshape(-1, logits.shape[-1]),
        labels.to(torch.long).reshape(-1),
        ignore_index=ignore_index,
        reduction="none",
    )
    return flat.view(labels.shape)


def token_loss(logits: torch.Tensor, labels: torch.Tensor, loss_type: str) -> torch.Tensor:
    if loss_type == "stablemax":
        return stablemax_cross_entropy(logits, labels)
    if loss_type == "softmax":
        return softmax_cross_entropy(logits, labels)
    raise ValueError(f"loss_type {loss_type!r}: expected one of {', '.join(LOSS_TYPES)}")


def act_loss(
    carry: Carry, outputs: dict[str, torch.Tensor], loss_type: str = "stablemax"
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """HRM's ACT loss for one segment; call it right after ``model(carry, batch)``.

    Returns (loss_sum, metrics). loss_sum = lm_loss + 0.5 (q_halt_loss + q_continue_loss), summed
    over rows (divide by the global batch size before backward). lm_loss is per row the mean token
    loss over its valid labels. metrics (detached sums): ``count`` (halted rows with >= 1 valid
    label), ``accuracy`` (sum of per-row token accuracy), ``exact_accuracy``, ``q_halt_accuracy``,
    ``steps`` over those rows, and the loss sums ``lm_loss``, ``q_halt_loss``, ``q_continue_loss``
    (0 when there is no target, e.g. in eval).
    """
    labels = carry.current_data["labels"]
    logits = outputs["logits"]
    q_halt = outputs["q_halt_logits"]
    with torch.no_grad():
        mask = labels != IGNORE_LABEL
        counts = mask.sum(-1)
        divisor = counts.clamp_min(1).unsqueeze(-1)
        correct = mask & (logits.argmax(-1) == labels)
        seq_correct = correct.sum(-1) == counts
        valid = carry.halted & (counts > 0)
        metrics = {
            "count": valid.sum(),
            "accuracy": torch.where(valid, (correct.to(torch.float32) / divisor).sum(-1), 0).sum(),
            "exact_accuracy": (valid & seq_correct).sum(),
            "q_halt_accuracy": (valid & ((q_halt >= 0) == seq_correct)).sum(),
            "steps": torch.where(valid, carry.steps, 0).sum(),
        }

    lm_loss = (token_loss(logits, labels, loss_type) / divisor).sum()
    q_halt_loss = F.binary_cross_entropy_with_logits(q_halt, seq_correct.to(q_halt.dtype), reduction="sum")
    total = lm_loss + 0.5 * q_halt_loss
    metrics["lm_loss"] = lm_loss.detach()
    metrics["q_halt_loss"] = q_halt_loss.detach()
    if "target_q_continue" in outputs:
        q_continue_loss = F.binary_cross_entropy_with_logits(
            outputs["q_continue_logits"], outputs["target_q_continue"], reduction="sum"
        )
        total = total + 0.5 * q_continue_loss
        metrics["q_continue_loss"] = q_continue_loss.detach()
    else:  # same keys in every mode, so metric dicts can be stacked and reduced without branching
        metrics["q_continue_loss"] = torch.zeros_like(metrics["q_halt_loss"])
    return total, metrics


LOSS_KEYS = ("lm_loss", "q_halt_loss", "q_continue_loss")


def metric_means(sums: dict[str, float], prefix: str, loss_rows: float, steps: float = 1.0) -> dict[str, float]:
    """``{prefix}/name`` means of :func:`act_loss` metric sums (over ``steps`` steps): the losses per row
    (``loss_rows``), the other metrics per counted row (``sums["count"]``; NaN when none), ``count`` per step."""
    count = float(sums.get("count", 0.0))
    out = {}
    for k, v in sums.items():
        if k == "count":
            out[f"{prefix}/count"] = float(v) / steps
        elif k in LOSS_KEYS:
            out[f"{prefix}/{k}"] = float(v) / loss_rows
        else:
            out[f"{prefix}/{k}"] = float(v) / count if count > 0 else float("nan")
    return out
