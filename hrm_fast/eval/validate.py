"""Validation during training: HRM's eval metrics over a split (exact and token accuracy, steps, q-halt accuracy).

Each global batch of ``eval.batch_size`` rows is split over ranks; every rank runs a fresh carry
with the model in eval mode until all rows halt (always ``halt_max_steps`` segments in eval), and
the final segment's metric sums are reduced over ranks and batches. This is the seed's validation
metric on held-out pairs, not the ARC pass@k scoring (that is ``python -m train.evaluate``).

``eval.val_views = N`` keeps the first N puzzles of each group (the original task first, then its
augmented copies); ``"all"`` keeps every row. With 1000 augmentations a full val split is ~1000x the
held-out pairs, far too many to evaluate every ``eval.every`` steps, so set N on big datasets.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm import tqdm

from hrm_fast import distributed as D
from hrm_fast.config import Config
from hrm_fast.data.dataset import PuzzleDataset
from hrm_fast.model.losses import metric_means

if TYPE_CHECKING:
    from hrm_fast.eval.runner import EvalRunner


def select_rows(dataset: PuzzleDataset, views: int | str) -> np.ndarray:
    """Example indices (int64, ascending) of the first ``views`` puzzles of every group; all rows for "all"."""
    if views == "all":
        return np.arange(dataset.num_examples, dtype=np.int64)
    g = dataset.group_indices
    rows = [np.arange(dataset.puzzle_indices[g[i]], dataset.puzzle_indices[min(g[i] + int(views), g[i + 1])])
            for i in range(dataset.num_groups)]
    return np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, dtype=np.int64)


def rank_batches(dataset: PuzzleDataset, rows: np.ndarray, global_batch_size: int, dist: D.DistInfo
                 ) -> Iterator[dict[str, torch.Tensor]]:
    """Global batches of ``rows`` in order; this rank's contiguous slice, blank-padded to the local batch size."""
    local = global_batch_size // dist.world_size
    for start in range(0, len(rows), global_batch_size):
        mine = rows[start + dist.rank * local: start + (dist.rank + 1) * local]
        yield dataset.batch(mine, pad_to=local)


@torch.no_grad()
def evaluate_split(
    model: torch.nn.Module,
    cfg: Config,
    dist: D.DistInfo,
    split: str,
    runner: EvalRunner | None = None,
    show_progress: bool = True,
    max_batches: int | None = None,
) -> dict[str, float]:
    """Metrics ``val/<name>`` for ``split`` of ``cfg.data.path``: means over the split's real (non-padding) rows.

    ``runner``: how episodes run (keep one across calls: a compiled runner compiles once); None = the eager
    loop, with bf16/fp16 autocast on CUDA as ``model.forward_dtype`` says."""
    from hrm_fast.eval.runner import EvalRunner
    from hrm_fast.model.precision import autocast_dtype

    dataset = PuzzleDataset(Path(cfg.data.path), split)
    device = dist.device
    local = cfg.eval.batch_size // dist.world_size
    if runner is None:
        runner = EvalRunner(model, local, device, compile=False, loss_type=cfg.model.loss_type,
                            amp_dtype=autocast_dtype(cfg.model.forward_dtype, device))
    was_training = model.training
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    rows = select_rows(dataset, cfg.eval.val_views)
    bar = tqdm(rank_batches(dataset, rows, cfg.eval.batch_size, dist), desc=f"eval {split}", unit="batch",
               total=-(-len(rows) // cfg.eval.batch_size), leave=False, disable=not show_progress)
    try:
        for i, batch in enumerate(bar):
            if max_batches is not None and i >= max_batches:
                break
            _, metrics = runner({k: v.to(device) for k, v in batch.items()})
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0) + v.detach().double()
    finally:
        bar.close()
        model.train(was_training)
    reduced = D.all_reduce_sum(sums, dist)
    return metric_means(reduced, "val", loss_rows=max(float(reduced.get("count", 0.0)), 1.0))
