"""Kaggle ``submission.json``: ``{task_id: [{"attempt_1": grid, "attempt_2": grid}, ...]}``, one dict per
test input in order, every task present (ARC Prize rules; docs/hrm.md §5)."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hrm_fast.eval.grids import grid_problem, to_json_grid
from hrm_fast.fs import kill_point, owner_tag, remove_stale

ATTEMPT_KEYS = ("attempt_1", "attempt_2")
# Written when no view produced a non-empty grid: submission.json must hold a grid for every attempt.
PLACEHOLDER = np.zeros((1, 1), dtype=np.uint8)


class SubmissionError(ValueError):
    """A malformed submission; the message names the task (and test input / attempt) at fault."""


def build_submission(answers: Mapping[str, Sequence[Sequence[np.ndarray]]]) -> dict[str, list[dict]]:
    """``answers[task_id][test_index]`` = ranked candidate grids (best first, any length) -> submission dict.

    attempt_1 = best, attempt_2 = second best, or attempt_1 repeated when there is no second.
    """
    sub: dict[str, list[dict]] = {}
    for tid, per_test in answers.items():
        entries = []
        for ranked in per_test:
            a1 = ranked[0] if len(ranked) > 0 else PLACEHOLDER
            a2 = ranked[1] if len(ranked) > 1 else a1
            entries.append({"attempt_1": to_json_grid(a1), "attempt_2": to_json_grid(a2)})
        sub[tid] = entries
    return sub


def validate_submission(
    sub: Any, num_tests: Mapping[str, int], *, allow_missing: bool = False, max_errors: int = 20
) -> None:
    """Raise SubmissionError listing every problem (up to ``max_errors``), each naming its task.

    ``num_tests[task_id]`` = number of test inputs of each task in the solutions. With ``allow_missing``
    the submission may hold a subset of the tasks (never tasks the solutions lack).
    """
    if not isinstance(sub, dict):
        raise SubmissionError(f"submission is a JSON {type(sub).__name__}, expected an object of task ids")
    errors: list[str] = []
    if not allow_missing:
        errors += [f"task {tid}: missing from the submission" for tid in num_tests if tid not in sub]
    for tid, entries in sub.items():
        if tid not in num_tests:
            errors.append(f"task {tid}: not in the solutions (wrong --solutions set?)")
            continue
        if not isinstance(entries, list):
            kind = type(entries).__name__
            errors.append(f"task {tid}: expected a list of {{attempt_1, attempt_2}} objects, got {kind}")
            continue
        if len(entries) != num_tests[tid]:
            errors.append(f"task {tid}: {len(entries)} entries, expected {num_tests[tid]} (one per test input)")
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or sorted(entry) != list(ATTEMPT_KEYS):
                keys = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
                errors.append(f"task {tid}, test input {i}: keys {keys}, expected exactly {list(ATTEMPT_KEYS)}")
                continue
            for name in ATTEMPT_KEYS:
                problem = grid_problem(entry[name])
                if problem is not None:
                    errors.append(f"task {tid}, test input {i}, {name}: grid {problem}")
    if errors:
        more = f"\n  ... and {len(errors) - max_errors} more" if len(errors) > max_errors else ""
        raise SubmissionError(
            f"malformed submission ({len(errors)} problems):\n  " + "\n  ".join(errors[:max_errors]) + more
        )


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int | None = None) -> None:
    """Write JSON to a temporary file beside ``path``, fsync, then rename (no half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(obj, indent=indent))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Atomically replace ``path`` with ``text`` (UTF-8). The temporary file ``.NAME.<pid>@<host>.<random>.tmp``
    names its writer, so that :func:`remove_stale_writes` can tell a killed writer's leftover."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{owner_tag()}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text[: len(text) // 2])
            kill_point(f"write {path.name}")  # test hook: dies with half the file written
            f.write(text[len(text) // 2 :])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


_PARTIAL = re.compile(r"\.(?P<name>.+?)\.(?P<tag>\d+@[A-Za-z0-9._-]+)\.[A-Za-z0-9_]+\.tmp")


def remove_stale_writes(folder: str | os.PathLike, say: Callable[[str], None] | None = None) -> list[Path]:
    """Remove the temporary files of :func:`write_text_atomic` calls whose process died (kill -9) in ``folder``."""
    return remove_stale(Path(folder), _PARTIAL, say)
