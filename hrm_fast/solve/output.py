"""What ``train.solve`` writes: ``predictions.json`` (Kaggle attempt format) for every task, a report page
per task (``<task>/report.html``; with known test outputs the evaluation's ``finalize`` writes it together
with that task's ``scores.json`` and ``submission.json``), and ``scores.json`` over the tasks with outputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hrm_fast.eval.report import ReportItem, write_report
from hrm_fast.eval.results import finalize
from hrm_fast.eval.score import SCORINGS, score_submission
from hrm_fast.eval.solutions import solutions_from_tasks
from hrm_fast.eval.submission import build_submission, write_json_atomic
from hrm_fast.solve.solver import TaskResult
from hrm_fast.solve.tasks import has_outputs, task_json


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "task"


def write_task_page(result: TaskResult, folder: Path, facts: Mapping[str, Any]) -> dict[str, Any] | None:
    """The task's report page in ``folder`` (+ scores.json when its outputs are known: returned)."""
    task, tid = result.task, result.task.task_id
    facts = {"task": f"{tid} ({task.origin})", "augmented copies": result.copies,
             "seconds": round(result.seconds, 2), **facts}
    if result.demo is not None:
        d = result.demo
        facts["demonstrations after fitting"] = (f"loss {d['lm_loss']:.4f}, token accuracy {100 * d['accuracy']:.1f}%, "
                                                 f"exact {100 * d['exact']:.1f}%")
    title = f"hrm_fast solve: task {tid}"
    if has_outputs(task):
        return finalize(result.votes, {tid: task_json(task)}, folder, ks=(1, 2), facts=facts, title=title)
    items = [ReportItem(tid, i, inp, out, result.votes.ranked(tid, i), result.votes.num_views(tid, i),
                        result.votes.num_empty(tid, i)) for i, (inp, out) in enumerate(task.test)]
    folder.mkdir(parents=True, exist_ok=True)
    write_report(folder / "report.html", items, {s: {} for s in SCORINGS}, {**facts, "scores": "no test outputs"},
                 title=title)
    return None


def write_outputs(results: Sequence[TaskResult], out: str | Path, facts: Mapping[str, Any] | None = None
                  ) -> dict[str, Any] | None:
    """Write every output into ``out``; returns the overall pass@2 scores (None if no task has outputs)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    answers: dict[str, list[list[np.ndarray]]] = {}
    per_task: dict[str, Any] = {}
    for r in results:
        tid = r.task.task_id
        answers[tid] = [[c.grid for c in r.votes.ranked(tid, i)[:2]] for i in range(len(r.task.test))]
        scores = write_task_page(r, out / _safe(tid), facts or {})
        per_task[tid] = {"seconds": round(r.seconds, 3), "correct": r.correct(),
                         **({"pass@2": scores["pass@2"]} if scores is not None else {})}
    predictions = build_submission(answers)
    write_json_atomic(out / "predictions.json", predictions)
    scored = {r.task.task_id: task_json(r.task) for r in results if has_outputs(r.task)}
    if not scored:
        write_json_atomic(out / "summary.json", {"tasks": per_task, **(facts or {})}, indent=2)
        return None
    solutions = solutions_from_tasks(scored)
    overall = score_submission({t: predictions[t] for t in scored}, solutions)
    summary = {**overall, "tasks": len(scored), "tasks_without_outputs": len(results) - len(scored),
               "per_task": per_task, **(facts or {})}
    write_json_atomic(out / "scores.json", summary, indent=2)
    return summary
