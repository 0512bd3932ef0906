"""Where a run lives: choosing the run folder and the checkpoint to resume from.

A run folder holds ``config.yaml`` (the resolved config), ``metrics.jsonl``, ``tensorboard/`` and
the checkpoints ``last/`` and ``best/``. ``run.resume``:
- ``none``: start fresh in ``run.dir`` (default ``runs/<preset>-<UTC timestamp>``);
- ``auto``: continue from ``<run.dir>/last`` when ``run.dir`` is given and has one; without
  ``run.dir``, the newest ``runs/<preset>-*/last``; start fresh when there is none;
- a path: a checkpoint folder (``.../last``, ``.../best``) or a run folder (its ``last``); the run
  continues in that checkpoint's run folder unless ``run.dir`` says otherwise.
"""

from __future__ import annotations

import time
from pathlib import Path

RUNS_ROOT = Path("runs")


def is_checkpoint(path: Path) -> bool:
    return (path / "model.safetensors").is_file() and (path / "config.yaml").is_file()


def existing_checkpoint(path: Path) -> Path | None:
    """``path`` if it is a checkpoint; else the copy a crash mid-replace left as ``.<name>.old-*``; else None."""
    if is_checkpoint(path):
        return path
    olds = sorted((p for p in path.parent.glob(f".{path.name}.old-*") if is_checkpoint(p)),
                  key=lambda p: p.stat().st_mtime)
    return olds[-1] if olds else None


def default_run_dir(preset: str) -> Path:
    return RUNS_ROOT / f"{preset}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"


def resolve(run_dir: str | None, resume: str, preset: str) -> tuple[Path, Path | None]:
    """(run folder, checkpoint to resume from or None). Raises FileNotFoundError for a bad resume path."""
    if resume == "none":
        return (Path(run_dir) if run_dir else default_run_dir(preset)), None
    if resume == "auto":
        if run_dir:
            return Path(run_dir), existing_checkpoint(Path(run_dir) / "last")
        found = [(p, c) for p in RUNS_ROOT.glob(f"{preset}-*") if (c := existing_checkpoint(p / "last"))]
        if found:
            return max(found, key=lambda pc: pc[1].stat().st_mtime)
        return default_run_dir(preset), None
    path = existing_checkpoint(Path(resume)) or existing_checkpoint(Path(resume) / "last")
    if path is None:
        raise FileNotFoundError(f"run.resume={resume}: no checkpoint there (expected model.safetensors and "
                                "config.yaml in it, or a run folder with last/)")
    return (Path(run_dir) if run_dir else path.parent), path
