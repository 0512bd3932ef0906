"""The evaluation split of a built dataset, row by row: which task, which test input and which
augmentation each row (view) is, plus the original tasks to score against.

Reads our builder's folders (``<split>/all__*.npy``, root ``identifiers.json``, and the extras
``<split>/tasks.json`` and ``<split>/all__test_index.npy``). A folder from the original HRM builder
lacks the extras; then the tasks are rebuilt from the rows themselves (every view's input and label
mapped back with the inverse augmentation; test inputs numbered in order of first appearance).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from hrm_fast.data.augment import Augmentation, parse_augmented_name
from hrm_fast.data.encode import decode_grid
from hrm_fast.data.identity import map_by_name
from hrm_fast.eval.grids import grid_key, read_json, to_json_grid


class EvalDataError(ValueError):
    """The dataset folder cannot be evaluated; the message names the file."""


@dataclass
class EvalSplit:
    """Rows of one split with their provenance. N rows, S = canvas * canvas tokens."""

    path: Path  # the split folder
    inputs: np.ndarray  # uint8 [N, S] (memory-mapped)
    labels: np.ndarray  # uint8 [N, S] on-disk labels (0 = PAD/ignore), memory-mapped
    puzzle_ids: np.ndarray  # int32 [N] puzzle identifier of each row
    task_ids: list[str]  # [N] original task id of each row
    augs: list[Augmentation]  # [N] augmentation that made each row from the original task
    test_index: np.ndarray  # int32 [N] index of the row's test input within its original task
    tasks: dict[str, Any]  # {task_id: {"train": [...], "test": [{"input", "output"}, ...]}}
    canvas: int
    tasks_rebuilt: bool = False  # True when tasks.json was missing and the tasks came from the rows
    identifiers: tuple[str, ...] = ()  # the dataset's identifiers.json (identifier -> puzzle name)
    unknown: np.ndarray | None = None  # bool [N]: rows whose puzzle the checkpoint does not know (never run)

    @property
    def num_rows(self) -> int:
        return int(self.inputs.shape[0])

    def mapped_to(self, known: Sequence[str]) -> EvalSplit:
        """This split with ``puzzle_ids`` renumbered to the identifiers ``known`` (a checkpoint's, by name); rows
        whose puzzle name is not in ``known`` get identifier 0 and are marked in ``unknown``."""
        to_known = map_by_name(self.identifiers, known)
        ids = to_known[self.puzzle_ids]
        return replace(self, puzzle_ids=np.where(ids < 0, 0, ids).astype(np.int32), unknown=ids < 0)

    def unknown_counts(self) -> dict[tuple[str, int], int]:
        """{(task id, test index): rows of that test input marked unknown} (only those with any)."""
        counts: dict[tuple[str, int], int] = {}
        for r in np.flatnonzero(self.unknown) if self.unknown is not None else ():
            key = (self.task_ids[r], int(self.test_index[r]))
            counts[key] = counts.get(key, 0) + 1
        return counts

    def select(self, views: str | int) -> np.ndarray:
        """Row indices to evaluate (int64, ascending): every row for ``"all"``, else at most ``views`` rows
        per (task, test input), the un-augmented row first, then in dataset order; never ``unknown`` rows."""
        runnable = np.arange(self.num_rows) if self.unknown is None else np.flatnonzero(~self.unknown)
        if views == "all":
            return runnable
        n = int(views)
        if n < 1:
            raise ValueError(f"views must be 'all' or >= 1, got {views!r}")
        groups: dict[tuple[str, int], list[int]] = {}
        for i in runnable.tolist():
            groups.setdefault((self.task_ids[i], int(self.test_index[i])), []).append(i)
        chosen: list[int] = []
        for rows in groups.values():
            rows.sort(key=lambda r: (not self.augs[r].is_identity, r))
            chosen.extend(rows[:n])
        return np.asarray(sorted(chosen), dtype=np.int64)


def _load_npy(path: Path, mmap: bool = True) -> np.ndarray:
    if not path.exists():
        raise EvalDataError(f"{path}: missing (is this a built dataset split folder?)")
    try:
        return np.load(path, mmap_mode="r" if mmap else None)
    except (OSError, ValueError) as e:
        raise EvalDataError(f"{path}: cannot read ({e})") from e


def load_eval_split(data_path: str | Path, split: str = "test") -> EvalSplit:
    """Load ``<data_path>/<split>`` for evaluation (rows memory-mapped)."""
    root = Path(data_path)
    folder = root / split
    if not folder.is_dir():
        raise EvalDataError(f"{folder}: no such split folder (built with python -m hrm_fast.data.build?)")
    inputs = _load_npy(folder / "all__inputs.npy")
    labels = _load_npy(folder / "all__labels.npy")
    pid_per_puzzle = _load_npy(folder / "all__puzzle_identifiers.npy", mmap=False)
    puzzle_indices = _load_npy(folder / "all__puzzle_indices.npy", mmap=False)
    names = read_json(root / "identifiers.json", EvalDataError)
    n, seq_len = inputs.shape
    canvas = math.isqrt(seq_len)
    if canvas * canvas != seq_len:
        raise EvalDataError(f"{folder / 'all__inputs.npy'}: sequence length {seq_len} is not a square canvas")
    if labels.shape != inputs.shape:
        raise EvalDataError(f"{folder / 'all__labels.npy'}: shape {labels.shape}, inputs have {inputs.shape}")
    if len(puzzle_indices) != len(pid_per_puzzle) + 1 or int(puzzle_indices[-1]) != n:
        raise EvalDataError(f"{folder / 'all__puzzle_indices.npy'}: does not match the puzzles and {n} rows")
    puzzle_ids = np.repeat(pid_per_puzzle.astype(np.int32), np.diff(puzzle_indices))

    parsed: dict[int, tuple[str, Augmentation]] = {}
    for pid in np.unique(puzzle_ids):
        if not 0 < pid < len(names):
            raise EvalDataError(f"{root / 'identifiers.json'}: puzzle identifier {pid} has no name")
        parsed[int(pid)] = parse_augmented_name(names[pid])
    task_ids = [parsed[int(p)][0] for p in puzzle_ids]
    augs = [parsed[int(p)][1] for p in puzzle_ids]

    tasks_file, index_file = folder / "tasks.json", folder / "all__test_index.npy"
    if tasks_file.exists() and index_file.exists():
        tasks = read_json(tasks_file, EvalDataError)
        test_index = np.asarray(_load_npy(index_file, mmap=False), dtype=np.int32)
        if test_index.shape != (n,):
            raise EvalDataError(f"{index_file}: shape {test_index.shape}, expected ({n},)")
        for i in range(n):
            task = tasks.get(task_ids[i])
            if task is None:
                raise EvalDataError(f"{tasks_file}: task {task_ids[i]} (row {i}) is missing")
            if not 0 <= test_index[i] < len(task["test"]):
                raise EvalDataError(f"{index_file}: row {i} of task {task_ids[i]} has test index {test_index[i]}")
        return EvalSplit(folder, inputs, labels, puzzle_ids, task_ids, augs, test_index, tasks, canvas,
                         identifiers=tuple(names))
    tasks, test_index = _rebuild_tasks(inputs, labels, task_ids, augs, canvas)
    return EvalSplit(folder, inputs, labels, puzzle_ids, task_ids, augs, test_index, tasks, canvas, True,
                     identifiers=tuple(names))


def _rebuild_tasks(
    inputs: np.ndarray, labels: np.ndarray, task_ids: list[str], augs: list[Augmentation], canvas: int
) -> tuple[dict[str, Any], np.ndarray]:
    """Tasks and per-row test indices from the rows alone (original HRM datasets without extras)."""
    tasks: dict[str, Any] = {}
    seen: dict[tuple[str, bytes], int] = {}
    test_index = np.empty(len(task_ids), dtype=np.int32)
    for i, (tid, aug) in enumerate(zip(task_ids, augs)):
        grid_in = aug.invert(decode_grid(np.asarray(inputs[i]), canvas))
        key = (tid, grid_key(grid_in))
        if key not in seen:
            grid_out = aug.invert(decode_grid(np.asarray(labels[i]), canvas))
            tests = tasks.setdefault(tid, {"train": [], "test": []})["test"]
            seen[key] = len(tests)
            tests.append({"input": to_json_grid(grid_in), "output": to_json_grid(grid_out)})
        test_index[i] = seen[key]
    return tasks, test_index
