"""What a run folder holds: its preset, how far its metrics go, its best validation score and the step of its
checkpoints (``python -m hrm_fast.runs list``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from hrm_fast.training.run_dir import existing_checkpoint
from hrm_fast.training.runlog import read_metrics

BEST_KEY = "val/exact_accuracy"  # the metric the trainer keeps `best` by


def checkpoint_step(ckpt: str | Path) -> int | None:
    """The training step saved in a checkpoint folder's ``state.pt``; None without one (or unreadable).

    Memory-maps the file: only the step is read, not the optimizer state (GBs for large runs)."""
    file = Path(ckpt) / "state.pt"
    if not file.is_file():
        return None
    try:
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        return int(state["step"])
    except Exception:  # noqa: BLE001 (torch raises many kinds on corrupt files)
        return None


def run_of(ckpt: str | Path) -> Path | None:
    """The run folder of a checkpoint folder: its parent when that holds a metrics.jsonl or config.yaml, else None."""
    parent = Path(ckpt).resolve().parent
    return parent if any((parent / f).is_file() for f in ("metrics.jsonl", "config.yaml")) else None


def finite(value: Any) -> float | None:
    """A metrics.jsonl value as a float, None when missing or non-finite (stored as "nan"/"inf")."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


@dataclass
class RunSummary:
    """One line of ``runs list``."""

    path: Path
    preset: str
    steps: int | None  # last step in metrics.jsonl
    max_steps: int | None  # train.max_steps of the config (None: set by epochs)
    best_val: float | None  # highest val/exact_accuracy
    best_val_step: int | None
    last_step: int | None  # step of the `last` checkpoint
    best_step: int | None  # step of the `best` checkpoint


def is_run(path: Path) -> bool:
    return path.is_dir() and ((path / "metrics.jsonl").is_file() or (path / "config.yaml").is_file())


def summarize(run: str | Path) -> RunSummary:
    """The facts of one run folder (missing files give None/"?")."""
    run = Path(run)
    preset, max_steps = "?", None
    if (run / "config.yaml").is_file():
        try:
            cfg = yaml.safe_load((run / "config.yaml").read_text()) or {}
            preset = str(cfg.get("preset") or "?")
            max_steps = (cfg.get("train") or {}).get("max_steps")
        except yaml.YAMLError:
            preset = "? (unreadable config.yaml)"
    records = read_metrics(run / "metrics.jsonl") if (run / "metrics.jsonl").is_file() else []
    steps = max((int(r["step"]) for r in records if r.get("step") is not None), default=None)
    best_val, best_step = None, None
    for r in records:
        v = finite(r.get(BEST_KEY))
        if v is not None and (best_val is None or v > best_val):
            best_val, best_step = v, int(r["step"])
    ckpts = {name: existing_checkpoint(run / name) for name in ("last", "best")}
    return RunSummary(run, preset, steps, max_steps, best_val, best_step,
                      checkpoint_step(ckpts["last"]) if ckpts["last"] else None,
                      checkpoint_step(ckpts["best"]) if ckpts["best"] else None)


def find_runs(root: str | Path) -> list[Path]:
    """Run folders directly under ``root`` (or ``root`` itself when it is one), sorted by name."""
    root = Path(root)
    if is_run(root):
        return [root]
    return sorted(p for p in root.iterdir() if is_run(p)) if root.is_dir() else []


def format_table(summaries: list[RunSummary]) -> str:
    """The ``runs list`` table: run, preset, steps (of max), best val exact accuracy (at step), checkpoints."""
    def num(x: int | None) -> str:
        return "-" if x is None else str(x)

    lines = [("run", "preset", "steps", "best val exact (step)", "last ckpt", "best ckpt")]
    for s in summaries:
        steps = num(s.steps) + (f"/{s.max_steps}" if s.max_steps else "")
        best = "-" if s.best_val is None else f"{s.best_val:.4f} ({s.best_val_step})"
        lines.append((str(s.path), s.preset, steps, best, num(s.last_step), num(s.best_step)))
    widths = [max(len(row[i]) for row in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in lines)
