"""Held-out measurements of the learning benchmark at one checkpoint (one split: ``val`` or ``test``).

Every view of the split (or at most ``views`` per test input) goes through the evaluation pipeline
(``predict_views`` -> ``decode_into`` a ``VoteBox`` -> ``finalize``: ARC Prize pass@1/pass@2 with voting
over views, scores.json, report.html). The same predicted boards give the cell metrics, pooled over all views and cells:

- ``token_accuracy``: labelled cells (colours and the EOS border) predicted right;
- ``exact_accuracy``: views whose every labelled cell is right (per view, before voting);
- ``changed_cell_accuracy``: the labelled cells whose token differs from the view's input token at the same
  canvas position, predicted right. Both grids sit at the top-left corner of the canvas, so when the shapes
  differ, the output cells outside the input grid (and the output's EOS border where it falls on input
  colours) count as changed, and input cells outside the output are not labelled. Copying the input scores 0;
- ``copy_token_accuracy``: what copying the input would score on ``token_accuracy`` (a reference line);
- ``black_token_accuracy`` / ``black_changed_cell_accuracy``: what predicting colour 0 (black, the most
  frequent colour) in every cell would score (the plateau an undertrained model sits on).

``lm_loss`` is validation's per-row mean token loss (``hrm_fast.eval.validate.evaluate_split``) on the
un-augmented view of each test input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from hrm_fast.config import Config
from hrm_fast.data.encode import COLOUR_OFFSET
from hrm_fast.distributed import DistInfo
from hrm_fast.eval.predict import predict_views
from hrm_fast.eval.results import decode_into, finalize
from hrm_fast.eval.validate import evaluate_split
from hrm_fast.eval.views import load_eval_split
from hrm_fast.eval.vote import VoteBox
from hrm_fast.model.precision import autocast_dtype


class CellCounts:
    """Running sums of the cell metrics over batches of views (all arrays uint8 [B, S] canvas tokens)."""

    def __init__(self) -> None:
        self.labelled = self.correct = self.changed = self.changed_correct = self.copy_correct = 0
        self.views = self.exact = self.black_correct = self.black_changed_correct = 0

    def add(self, predicted: np.ndarray, inputs: np.ndarray, labels: np.ndarray) -> None:
        """``labels``: on-disk labels (0 = PAD, not labelled)."""
        labelled = labels != 0
        right = labelled & (predicted == labels)
        changed = labelled & (inputs != labels)
        self.labelled += int(labelled.sum())
        self.correct += int(right.sum())
        self.changed += int(changed.sum())
        self.changed_correct += int((right & changed).sum())
        self.copy_correct += int((labelled & ~changed).sum())
        black = labels == COLOUR_OFFSET
        self.black_correct += int(black.sum())
        self.black_changed_correct += int((black & changed).sum())
        self.views += len(labels)
        self.exact += int((right.sum(-1) == labelled.sum(-1)).sum())

    def metrics(self) -> dict[str, float]:
        def ratio(a: int, b: int) -> float:
            return a / b if b else float("nan")

        return {
            "token_accuracy": ratio(self.correct, self.labelled),
            "exact_accuracy": ratio(self.exact, self.views),
            "changed_cell_accuracy": ratio(self.changed_correct, self.changed),
            "copy_token_accuracy": ratio(self.copy_correct, self.labelled),
            "changed_cell_fraction": ratio(self.changed, self.labelled),
            "black_token_accuracy": ratio(self.black_correct, self.labelled),
            "black_changed_cell_accuracy": ratio(self.black_changed_correct, self.changed),
        }


def measure_split(model: torch.nn.Module, config: Config, dist: DistInfo, split: str, out_dir: Path,
                  views: str | int = "all") -> dict[str, Any]:
    """Metrics of ``model`` on ``split`` of ``config.data.path``; writes finalize's files to ``out_dir``.

    views: ``"all"`` augmented views, or at most N per test input (the un-augmented one first).
    Returns {"arc_prize@1", "arc_prize@2", "kaggle@2", cell metrics, "lm_loss", "views", "test_outputs", "tasks"}."""
    device = dist.device
    data = load_eval_split(config.data.path, split)
    rows = data.select(views)
    votes, cells = VoteBox(), CellCounts()
    for chunk, tokens, q in predict_views(model, data, rows, config.eval.batch_size, config.model.halt_max_steps,
                                          device, autocast_dtype(config.model.forward_dtype, device), progress=False):
        decode_into(votes, tokens, [data.task_ids[r] for r in chunk], [data.augs[r] for r in chunk],
                    data.test_index[chunk], q, data.canvas, rows=chunk)
        cells.add(tokens, np.asarray(data.inputs[chunk]), np.asarray(data.labels[chunk]))
    scores = finalize(votes, data.tasks, out_dir, [1, 2], facts={"split": split},
                      title=f"learning benchmark: {split}")
    identity = config.model_copy(update={"eval": config.eval.model_copy(update={"val_views": 1})})
    loss = evaluate_split(model, identity, dist, split, show_progress=False)
    return {
        "arc_prize@1": scores["arc_prize"]["pass@1"],
        "arc_prize@2": scores["arc_prize"]["pass@2"],
        "kaggle@2": scores["kaggle"]["pass@2"],
        **cells.metrics(),
        "lm_loss": loss["val/lm_loss"],
        "views": int(len(rows)),
        "test_outputs": int(scores["test_outputs"]),
        "tasks": int(scores["tasks"]),
    }
