"""Where a run lives: choosing the run folder and the checkpoint to resume from.

A run folder holds ``config.yaml`` (the resolved config), ``metrics.jsonl``, ``tensorboard/`` and
the checkpoints ``last/`` and ``best/``. ``run.resume``:
- ``none``: start fresh in ``run.dir`` (default ``runs/<preset>-<UTC timestamp>``);
- ``auto``: continue from ``<run.dir>/last`` when ``run.dir`` is given and has one; without
  ``run.dir``, the newest ``runs/<preset>-*/last``; start fresh when there is none;
- a path: a checkpoint folder (``.../last``, ``.../best``) or a run folder (its ``last``); the run
  continues in that checkpoint's run folder unless ``run.dir`` says otherwise.

:func:`open_run_dir` then makes the folder safe to use: an exclusive lock (``.lock``, one training process per
folder), the leftovers of a killed process recovered or removed, and a folder that already holds a run refused
unless the run continues it (``run.resume``) or ``run.overwrite=true`` moves it aside (nothing is deleted).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path

from hrm_fast.checkpoint import newest_copy, recover_checkpoint
from hrm_fast.fs import remove_stale

RUNS_ROOT = Path("runs")
LOCK = ".lock"
CHECKPOINTS = ("last", "best")
_RUN_ENTRIES = ("config.yaml", "metrics.jsonl", "tensorboard", *CHECKPOINTS)
_METRICS_TMP = re.compile(r"\.metrics\.jsonl\.tmp-(?P<tag>.+)")


class RunDirError(RuntimeError):
    """A run folder that cannot be used as asked; the message is one line saying what to do (exit code 2)."""


def is_checkpoint(path: Path) -> bool:
    return (path / "model.safetensors").is_file() and (path / "config.yaml").is_file()


def existing_checkpoint(path: Path) -> Path | None:
    """``path`` if it is a checkpoint; else the copy a crash mid-save left (``checkpoint.newest_copy``); else None."""
    if is_checkpoint(path):
        return path
    found = newest_copy(path)
    return found if found is not None and is_checkpoint(found) else None


def default_run_dir(preset: str) -> Path:
    base = RUNS_ROOT / f"{preset}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    path, n = base, 1
    while path.exists():  # two runs started in the same second
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


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


def checkpoint_name(path: Path) -> str:
    """``last`` for ``last`` and for the leftovers of its saves (``.last.tmp-*``, ``.last.old-*``)."""
    match = re.fullmatch(r"\.(.+?)\.(?:tmp|old)-.+", path.name)
    return match[1] if match else path.name


def holds_run(folder: Path) -> bool:
    """Whether ``folder`` holds (part of) a training run: its logs, config or checkpoints."""
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return any(n in _RUN_ENTRIES or n.startswith((".last.", ".best.")) for n in names)


def _last_logged_step(folder: Path) -> int | None:
    try:
        with open(folder / "metrics.jsonl", "rb") as f:
            lines = f.read().splitlines()
        return int(json.loads(lines[-1])["step"]) if lines else None
    except (OSError, ValueError, KeyError, IndexError):
        return None


def _describe(folder: Path) -> str:
    parts = [name for name in CHECKPOINTS if existing_checkpoint(folder / name) is not None]
    step = _last_logged_step(folder)
    if step is not None:
        parts.append(f"metrics up to step {step}")
    return ", ".join(parts) or "files of a run"


class RunLock:
    """An exclusive ``fcntl.flock`` on ``<folder>/.lock`` for the life of this object (or of the process: the
    kernel drops the lock when the process dies, also by ``kill -9``). The file names the holder's pid and host.

    Raises RunDirError when another process holds it; OSError when the folder cannot be made or written.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "a process that has not written its name"
            os.close(fd)
            raise RunDirError(f"{folder} is in use by another training run ({holder}): wait for it to end, stop it, "
                              "or choose another run.dir") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()}, since {since}\n".encode())
        self.fd: int | None = fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def replaced_name(folder: Path) -> Path:
    """Where ``run.overwrite=true`` moves an old run: ``<folder>.replaced-<UTC time>`` (never an existing path)."""
    base = folder.with_name(f"{folder.name}.replaced-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def open_run_dir(folder: Path, resume: Path | None, mode: str, overwrite: bool, say: Callable[[str], None]
                 ) -> tuple[RunLock, Path | None, bool]:
    """Lock ``folder`` and make it ready for this run: (lock, checkpoint to resume from, start over).

    ``resume`` / ``mode``: what :func:`resolve` chose and ``run.resume``. Leftovers of killed processes are
    recovered or removed first. ``start over`` is True when ``run.resume=auto`` finds a run that died before its
    first checkpoint: its logs are to be restarted. Raises RunDirError (one line) when the folder holds a run this
    one would overwrite, OSError when it cannot be written.
    """
    lock = RunLock(folder)
    try:
        for name in CHECKPOINTS:
            recover_checkpoint(folder / name, say)
        remove_stale(folder, _METRICS_TMP, say)
        inside = resume is not None and resume.parent.resolve() == folder.resolve()
        if inside:
            resume = existing_checkpoint(folder / checkpoint_name(resume))
        if overwrite and inside and resume is not None:
            raise RunDirError(f"run.overwrite=true would move aside {folder}, which holds the checkpoint to resume "
                              f"from ({resume}): drop run.overwrite to continue it, or run.resume to start anew")
        if not holds_run(folder) or (inside and resume is not None and resume.name == "last"):
            return lock, resume, False
        if overwrite:
            aside = replaced_name(folder)
            os.rename(folder, aside)
            lock.close()
            lock = RunLock(folder)
            say(f"run.overwrite=true: moved the previous run in {folder} to {aside}")
            return lock, resume, False
        if mode == "auto" and resume is None:
            say(f"{folder} holds a run that stopped before its first checkpoint ({_describe(folder)}): starting it "
                "over from step 0")
            return lock, None, True
        where = f"run.resume={resume} into " if resume is not None else ""
        raise RunDirError(f"{where}{folder}: the folder already holds a run ({_describe(folder)}); use "
                          "run.resume=auto to continue, or choose a new run.dir (or run.overwrite=true to move the "
                          f"old run aside to {folder}.replaced-<UTC time>)")
    except BaseException:
        lock.close()
        raise
