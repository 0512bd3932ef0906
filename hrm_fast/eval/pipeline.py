"""The ARC evaluation pipeline: load a checkpoint, predict every selected view, vote, score and write.

``evaluate_checkpoint`` runs predict -> crop/invert -> vote -> ``finalize`` (scores.json, submission.json,
report.html). Under ``torchrun`` (a ``DistInfo`` with several ranks) the views are dealt out over the
ranks in blocks of one per-rank batch; each rank votes over its share, rank 0 gathers the vote boxes,
merges them and writes the same files one process would have written (see ``hrm_fast.eval.vote``: the
merged vote is bit-identical). The command line is ``python -m train.evaluate``.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hrm_fast import distributed as D
from hrm_fast.config import Config, ConfigError
from hrm_fast.data.identity import DatasetIdentity, dataset_identity
from hrm_fast.eval.breakdown import load_task_info
from hrm_fast.eval.predict import check_compatible, predict_views
from hrm_fast.eval.results import decode_into, finalize, flat_metrics
from hrm_fast.eval.submission import remove_stale_writes
from hrm_fast.eval.views import EvalSplit, load_eval_split
from hrm_fast.eval.vote import VoteBox
from hrm_fast.fs import FsError, check_writable
from hrm_fast.model.precision import autocast_dtype


def load_for_eval(checkpoint: str | Path, device: torch.device, hrm_config: str | Path | None = None
                  ) -> tuple[torch.nn.Module, Config, Path]:
    """(model on ``device``, its config, the checkpoint folder or file evaluated).

    ``checkpoint``: an hrm_fast checkpoint folder, a run folder (its ``best``, else ``last``), or an original
    HRM checkpoint file together with its ``all_config.yaml`` as ``hrm_config`` (converted on the fly)."""
    from hrm_fast.checkpoint import import_hrm, load_checkpoint

    ckpt = Path(checkpoint)
    if ckpt.is_file():
        if hrm_config is None:
            raise ConfigError(f"{ckpt} is a file (original HRM checkpoint?): pass its all_config.yaml as hrm_config=")
        with tempfile.TemporaryDirectory() as tmp:
            import_hrm(ckpt, hrm_config, Path(tmp) / "ckpt")
            model, config = load_checkpoint(Path(tmp) / "ckpt", device=device)
        return model, config, ckpt
    if ckpt.is_dir() and not (ckpt / "model.safetensors").exists():
        # A run folder: evaluate its best checkpoint (else the last one).
        for name in ("best", "last"):
            if (ckpt / name / "model.safetensors").exists():
                ckpt = ckpt / name
                break
    model, config = load_checkpoint(ckpt, device=device)
    return model, config, ckpt


def _check_out_dir(out: Path, dist: D.DistInfo, say: Callable[[str], None]) -> None:
    """Rank 0 proves ``out`` writable (and removes the temporary files of a killed earlier evaluation there);
    every rank raises the same FsError if it is not."""
    problem = None
    if dist.is_main:
        try:
            check_writable(out, "evaluation output folder")
            remove_stale_writes(out, say)
        except FsError as e:
            problem = str(e)
    problem = D.broadcast_object(problem, dist)
    if problem is not None:
        raise FsError(problem)


def _map_puzzles(data: EvalSplit, data_path: str | Path, trained_on: DatasetIdentity | None,
                 say: Callable[[str], None]) -> tuple[EvalSplit, dict[str, Any]]:
    """``data`` renumbered to the puzzle table of a model trained on ``trained_on`` (by name) when ``data_path``
    is another build; facts for scores.json / the report. ``trained_on`` None: unchanged (the same build)."""
    here = dataset_identity(data_path)
    if trained_on is None or (here is not None and here.fingerprint == trained_on.fingerprint):
        return data, ({"dataset fingerprint": here.fingerprint} if here is not None else {})
    mapped = data.mapped_to(trained_on.identifiers)
    assert mapped.unknown is not None
    unknown = np.unique(data.puzzle_ids[mapped.unknown])
    found = here.fingerprint if here is not None else "none"
    line = (f"note: {data_path} is another dataset build (fingerprint {found}) than the checkpoint's "
            f"({trained_on.fingerprint}): puzzles mapped by name; {len(unknown)} of {len(np.unique(data.puzzle_ids))} "
            f"{data.path.name} puzzles are unknown to the checkpoint, their {int(mapped.unknown.sum())} views are "
            "not run")  # fmt: skip
    say(line)
    return mapped, {
        "dataset fingerprint": f"{found} (checkpoint trained on {trained_on.fingerprint}; puzzles mapped by name)",
        "unknown_puzzles": int(len(unknown)),
    }


def shard_rows(rows: np.ndarray, batch_size: int, rank: int, world_size: int) -> tuple[np.ndarray, int]:
    """(this rank's rows, its batch size). ``batch_size`` counts all ranks, as in validation: each rank runs
    batches of ceil(batch_size / world_size) rows (a static shape), and consecutive blocks of that many rows go
    to ranks 0, 1, ..., 0, 1, ... so the shares differ by at most one batch. One rank: (rows, batch_size)."""
    local = -(-batch_size // world_size)
    block = np.arange(len(rows)) // local
    return rows[block % world_size == rank], local


def gather_votes(votes: VoteBox, dist: D.DistInfo) -> VoteBox | None:
    """Every rank's box merged on rank 0 (None on the other ranks); the box itself on one process."""
    if not dist.enabled:
        return votes
    boxes = D.gather_objects(votes, dist)
    return VoteBox.merged(boxes) if boxes is not None else None


def evaluate_checkpoint(
    model: torch.nn.Module,
    config: Config,
    split: str,
    out_dir: str | Path,
    views: str | int | None = None,
    *,
    batch_size: int | None = None,
    device: torch.device | None = None,
    metrics_path: str | Path | None = None,
    step: int | None = None,
    facts: Mapping[str, Any] | None = None,
    progress: bool = True,
    dist: D.DistInfo | None = None,
    trained_on: DatasetIdentity | None = None,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Score ``model`` on ``split`` of ``config.data.path``; write scores.json, submission.json, report.html
    into ``out_dir`` and return the scores dict (as in scores.json).

    views: ``"all"``, an int (at most N views per test input), or None for ``config.eval.views``.
    batch_size: None = ``config.eval.batch_size`` (all ranks together). device: None = the model's device.
    metrics_path: append ``{"step", "time", "eval/<scoring>@<k>": ...}`` as one line to this JSONL file
    (a run's ``metrics.jsonl``). dist: None = one process. With several ranks every rank must call this
    (same arguments, same weights); each predicts its share of the views, rank 0 alone shows progress and
    writes, and every rank returns rank 0's scores. The model is left in its previous train/eval mode.
    trained_on: the identity of the build the model was trained on (its checkpoint's); when ``config.data.path``
    is another build, puzzles are mapped by name and views of puzzles the model does not know are not run
    (counted in scores.json, marked in the report). None = the model belongs to this build. ``out_dir`` is
    checked to be writable before anything is computed (FsError). ``say``: where notes go (rank 0).
    """
    t0 = time.perf_counter()
    views = config.eval.views if views is None else views
    batch_size = batch_size or config.eval.batch_size
    device = device or next(model.parameters()).device
    dist = dist or D.DistInfo(rank=0, world_size=1, local_rank=0, device=device)
    amp_dtype = autocast_dtype(config.model.forward_dtype, device)
    say = say if say is not None and dist.is_main else (lambda line: None)
    _check_out_dir(Path(out_dir), dist, say)
    data = load_eval_split(config.data.path, split)
    data, mapping_facts = _map_puzzles(data, config.data.path, trained_on, say)
    check_compatible(model, data)
    rows = data.select(views)
    mine, local_batch = shard_rows(rows, batch_size, dist.rank, dist.world_size)
    desc = f"eval views (rank 0's share, {dist.world_size} ranks)" if dist.enabled else "eval views"
    votes = VoteBox()
    compile = config.compile if config.compile is not None else device.type == "cuda"
    for chunk, tokens, q in predict_views(
        model, data, mine, local_batch, config.model.halt_max_steps, device, amp_dtype, progress and dist.is_main,
        desc=desc, compile=compile, cuda_graph=config.cuda_graph,
    ):
        decode_into(votes, tokens, [data.task_ids[r] for r in chunk], [data.augs[r] for r in chunk],
                    data.test_index[chunk], q, data.canvas, rows=chunk)  # fmt: skip
    merged = gather_votes(votes, dist)
    scores = None
    if merged is not None:
        n_voted = sum(merged.num_views(*key) for key in merged.keys())
        assert n_voted == len(rows), f"{n_voted} views voted, {len(rows)} selected"
        seconds = time.perf_counter() - t0
        device_fact = f"{device} (autocast {amp_dtype})" if amp_dtype else str(device)
        all_facts: dict[str, Any] = {
            "data": f"{config.data.path} ({split} split, {data.canvas}x{data.canvas} canvas)",
            "views setting": str(views),
            "model": f"{sum(p.numel() for p in model.parameters()):,} parameters, halt_max_steps "
            f"{config.model.halt_max_steps}, {config.model.forward_dtype}",
            "device": device_fact + (f" x {dist.world_size} ranks" if dist.enabled else ""),
            "seconds": round(seconds, 2),
            "views per second": round(len(rows) / seconds, 1) if seconds > 0 else None,
            **({"step": step} if step is not None else {}),
            **mapping_facts,
            **(facts or {}),
        }
        if data.tasks_rebuilt:
            all_facts["tasks"] = "rebuilt from the rows (no tasks.json): test inputs may be numbered differently"
        scores = finalize(merged, data.tasks, out_dir, config.eval.ks, facts=all_facts,
                          title=f"hrm_fast evaluation: {all_facts.get('checkpoint', split)}",
                          task_info=load_task_info(config.data.path), unknown=data.unknown_counts())  # fmt: skip
        if metrics_path is not None:
            record = {"step": step, "time": round(time.time(), 3), **flat_metrics(scores)}
            with open(metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
    return D.broadcast_object(scores, dist)
