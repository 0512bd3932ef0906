"""Run a model over evaluation views: batched, fresh carry per batch, exactly halt_max_steps segments.

Yields, per batch, each real row's argmax token board and sigmoid(q_halt) of the last segment (eval
halts only at halt_max_steps, so every row runs all segments). The last batch is padded with blank
rows (puzzle id 0), which keeps the carry's shapes static; they are dropped from the output.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from tqdm import tqdm

from hrm_fast.data.encode import IGNORE_LABEL
from hrm_fast.eval.views import EvalSplit


def make_batch(split: EvalSplit, rows: np.ndarray, batch_size: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Rows -> model batch (inputs/labels int32 [batch_size, S], puzzle_identifiers int32 [batch_size]),
    padded with blank rows; on-disk label PAD 0 becomes IGNORE_LABEL."""
    n, seq_len = len(rows), split.inputs.shape[1]
    inputs = np.zeros((batch_size, seq_len), dtype=np.int32)
    labels = np.full((batch_size, seq_len), IGNORE_LABEL, dtype=np.int32)
    pids = np.zeros(batch_size, dtype=np.int32)
    inputs[:n] = split.inputs[rows]
    lab = np.asarray(split.labels[rows], dtype=np.int32)
    labels[:n] = np.where(lab == 0, IGNORE_LABEL, lab)
    pids[:n] = split.puzzle_ids[rows]
    return {
        "inputs": torch.from_numpy(inputs).to(device),
        "labels": torch.from_numpy(labels).to(device),
        "puzzle_identifiers": torch.from_numpy(pids).to(device),
    }


def check_compatible(model: torch.nn.Module, split: EvalSplit) -> None:
    """Refuse a model whose sequence length or puzzle table does not fit the split (clear message)."""
    seq_len = split.inputs.shape[1]
    if getattr(model, "seq_len", seq_len) != seq_len:
        raise ValueError(
            f"{split.path}: rows have {seq_len} tokens ({split.canvas}x{split.canvas} canvas) but the model was "
            f"built for seq_len {model.seq_len}; evaluate on the dataset the checkpoint was trained on (data.path=...)"
        )
    n_ids = getattr(model, "num_puzzle_identifiers", None)
    top = int(split.puzzle_ids.max(initial=0))
    if n_ids is not None and top >= n_ids:
        raise ValueError(
            f"{split.path}: puzzle identifier {top} is outside the model's table of {n_ids}; the checkpoint was "
            "trained on a different dataset build (its puzzle embeddings would not match)"
        )


@torch.no_grad()
def predict_views(
    model: torch.nn.Module,
    split: EvalSplit,
    rows: np.ndarray,
    batch_size: int,
    halt_max_steps: int,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    progress: bool = True,
    desc: str = "eval views",
    compile: bool = False,
    cuda_graph: bool | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (rows int64 [b], predicted tokens uint8 [b, S], sigmoid(q_halt) float32 [b]) per batch.

    ``compile``: run the segments as a compiled :class:`hrm_fast.eval.runner.EvalStep` (captured in a CUDA graph on
    CUDA unless ``cuda_graph=False``); the eager loop otherwise. The model is put in eval mode for the
    duration and restored afterwards."""
    from hrm_fast.eval.runner import EvalRunner

    if halt_max_steps != model.config.halt_max_steps:
        raise ValueError(f"halt_max_steps={halt_max_steps} but the model runs {model.config.halt_max_steps} segments")
    was_training = model.training
    model.eval()
    runner = EvalRunner(model, batch_size, device, compile=compile, cuda_graph=cuda_graph, amp_dtype=amp_dtype)
    bar = tqdm(total=len(rows), desc=desc, unit="view", disable=not progress, dynamic_ncols=True)
    try:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            outputs, _ = runner(make_batch(split, chunk, batch_size, device), metrics=False)
            n = len(chunk)
            tokens = outputs["logits"][:n].argmax(dim=-1).to(torch.uint8).cpu().numpy()
            q = torch.sigmoid(outputs["q_halt_logits"][:n].float()).cpu().numpy()
            bar.update(n)
            yield chunk, tokens, q
    finally:
        bar.close()
        model.train(was_training)
