"""Tasks to solve -> their augmented copies as in-memory evaluation splits (demonstrations and test inputs).

Reuses the dataset builder's per-task work unit (:func:`hrm_fast.data.expand.expand_task`): the same
augmentation plan, the same encoding, translated demonstrations and top-left test inputs, so a solved task
looks to the model exactly like a task of its training set.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from hrm_fast.data.augment import parse_augmented_name
from hrm_fast.data.expand import TaskJob, expand_task
from hrm_fast.data.sources import ArcTask, DataError, load_file, parse_task
from hrm_fast.eval.views import EvalSplit


class SolveError(ValueError):
    """A task or checkpoint that cannot be solved with; the message names the task (or file) and the problem."""


@dataclass
class TaskCopies:
    """One task's augmented copies. ``names`` [G] (copy 0 = the original); ``demos`` / ``tests``: splits whose
    rows are every demonstration / test input of every copy, puzzle ids still 0 (see :func:`assign_ids`);
    ``demo_copy`` / ``test_copy``: int64 [rows], the copy each row belongs to."""

    task: ArcTask
    names: list[str]
    demos: EvalSplit
    tests: EvalSplit
    demo_copy: np.ndarray
    test_copy: np.ndarray


def read_task_paths(paths: list[str]) -> list[ArcTask]:
    """ARC tasks from files or folders (searched recursively); test outputs are optional."""
    tasks: list[ArcTask] = []
    for spec in paths:
        path = Path(spec)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*.json") if not any(s.startswith(".") for s in p.parts))
            if not files:
                raise DataError(f"{path}: folder holds no .json task files")
        elif path.is_file():
            files = [path]
        else:
            raise DataError(f"{spec}: no such task file or folder")
        for file in files:
            tasks.extend(load_file(file, spec, test_outputs_optional=True))
    seen: set[str] = set()
    for t in tasks:
        if t.task_id in seen:
            raise DataError(f"{t.origin}: task {t.task_id} appears twice among the tasks to solve")
        seen.add(t.task_id)
    return tasks


def task_from_dict(raw: Any, task_id: str = "task") -> ArcTask:
    """An ARC task dict (``{"train": [...], "test": [{"input": ...}, ...]}``) -> ArcTask; SolveError if malformed."""
    try:
        return parse_task(raw, task_id, "<python>", test_outputs_optional=True)
    except DataError as err:
        raise SolveError(str(err)) from None


def check_task(task: ArcTask, canvas: int) -> None:
    """Refuse a task the checkpoint cannot take (SolveError naming the task): no demonstrations, or a
    grid larger than the checkpoint's canvas."""
    where = f"task {task.task_id} ({task.origin})"
    if not task.train:
        raise SolveError(f"{where}: no demonstration pairs")
    if not task.test:
        raise SolveError(f"{where}: no test inputs")
    for part, pairs in (("train", task.train), ("test", task.test)):
        for i, (inp, out) in enumerate(pairs):
            for kind, grid in (("input", inp), ("output", out)):
                if grid is not None and max(grid.shape) > canvas:
                    raise SolveError(f"{where}: {part} pair {i} {kind} is {grid.shape[0]}x{grid.shape[1]}, larger "
                                     f"than the checkpoint's {canvas}x{canvas} canvas")


def has_outputs(task: ArcTask) -> bool:
    return all(out is not None for _, out in task.test)


def task_json(task: ArcTask) -> dict[str, Any]:
    """The task as JSON (test outputs only where known)."""
    test = [{"input": i.tolist(), **({"output": o.tolist()} if o is not None else {})} for i, o in task.test]
    return {"train": [{"input": i.tolist(), "output": o.tolist()} for i, o in task.train], "test": test}


def expand_for_solve(task: ArcTask, num_aug: int, canvas: int, seed: int) -> TaskCopies:
    """The original plus up to ``num_aug`` augmented copies of ``task``, encoded on ``canvas``.

    A test pair without an output is encoded with its input in the output's place (the builder needs a
    grid there); its label rows are then blanked (all PAD), so nothing reads it."""
    missing = [o is None for _, o in task.test]
    stand_in = replace(task, test=[(i, i if o is None else o) for i, o in task.test], _hash=None)
    rows = expand_task(TaskJob(stand_in, "eval", seed, num_aug, canvas))
    augs = [parse_augmented_name(n)[1] for n in rows.names]
    demo_copy = np.repeat(np.arange(len(augs)), rows.train_counts)
    test_copy = np.repeat(np.arange(len(augs)), rows.held_counts)
    test_labels = np.array(rows.held_labels)
    test_labels[np.asarray(missing, dtype=bool)[rows.held_test_index]] = 0
    tasks = {task.task_id: task_json(task)}

    def split(inputs: np.ndarray, labels: np.ndarray, copy: np.ndarray, test_index: np.ndarray, kind: str
              ) -> EvalSplit:
        return EvalSplit(Path(f"<{kind} of task {task.task_id}>"), inputs, labels, np.zeros(len(copy), np.int32),
                         [task.task_id] * len(copy), [augs[g] for g in copy], test_index.astype(np.int32), tasks,
                         canvas)

    demos = split(rows.train_inputs, rows.train_labels, demo_copy, np.zeros(len(demo_copy)), "demonstrations")
    tests = split(rows.held_inputs, test_labels, test_copy, rows.held_test_index, "test inputs")
    return TaskCopies(task, rows.names, demos, tests, demo_copy, test_copy)


def assign_ids(copies: TaskCopies, first_id: int) -> None:
    """Give copy g of the task the puzzle identifier ``first_id + g`` (in both splits)."""
    copies.demos.puzzle_ids = (first_id + copies.demo_copy).astype(np.int32)
    copies.tests.puzzle_ids = (first_id + copies.test_copy).astype(np.int32)


def concat_splits(splits: list[EvalSplit], kind: str) -> EvalSplit:
    """Several tasks' splits as one (rows in order), for batching them together."""
    tasks: dict[str, Any] = {}
    for s in splits:
        tasks.update(s.tasks)
    return EvalSplit(Path(f"<{kind} of {len(splits)} tasks>"), np.concatenate([s.inputs for s in splits]),
                     np.concatenate([s.labels for s in splits]), np.concatenate([s.puzzle_ids for s in splits]),
                     [t for s in splits for t in s.task_ids], [a for s in splits for a in s.augs],
                     np.concatenate([s.test_index for s in splits]), tasks, splits[0].canvas)
