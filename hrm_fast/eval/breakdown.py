"""Per test output facts (``tasks.csv``) and scores broken down by source, concept, grid size and shape.

One :class:`OutputRow` per test output: where its task came from (the dataset's ``metadata.json``: the
source spec and, for tasks read from a folder of group folders such as ConceptARC's ``corpus``, the
concept = the group folder), its sizes, how many demonstrations and views it had, and how the vote went
(rank of the right answer, the winner's votes and mean sigmoid(q_halt), distinct candidates).
:func:`breakdowns` scores every group with the same ``pass_at_k`` as the totals, so the group counts add
up to the totals; ``python -m hrm_fast.eval.compare`` rebuilds the rows from ``tasks.csv``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from hrm_fast.data.sources import concept_of
from hrm_fast.eval.score import pass_at_k
from hrm_fast.eval.submission import write_text_atomic
from hrm_fast.eval.views import EvalDataError

NO_CONCEPT = "(none)"
SIZE_BUCKETS = ((5, "1-5"), (10, "6-10"), (15, "11-15"), (20, "16-20"), (30, "21-30"))  # (largest side, name)
GROUPINGS = ("source", "concept", "size", "shape")  # scores.json keys by_<grouping>


@dataclass(frozen=True)
class TaskInfo:
    """Where a task came from: the build's source spec and its concept ("" when the source has none)."""

    source: str = ""
    concept: str = ""


@dataclass
class OutputRow:
    """One test output of one task and how the evaluation did on it (one line of ``tasks.csv``)."""

    task: str
    test_index: int
    source: str
    concept: str
    input_h: int
    input_w: int
    output_h: int
    output_w: int
    demos: int  # demonstration (train) pairs of the task
    views: int  # views voted for this test input (empty crops included)
    empty_crops: int
    candidates: int  # distinct non-empty answers
    correct_rank: int | None  # 0-based rank of the right answer among the candidates, None if absent
    winner_votes: int  # votes of the top candidate (0 when there is none)
    winner_q_halt: float | None  # its mean sigmoid(q_halt), None when there is no candidate

    @property
    def same_shape(self) -> bool:
        return (self.input_h, self.input_w) == (self.output_h, self.output_w)

    @property
    def size_bucket(self) -> str:
        """Bucket of the larger side of the test input and expected output."""
        side = max(self.input_h, self.input_w, self.output_h, self.output_w)
        return next(name for top, name in SIZE_BUCKETS if side <= top)

    @property
    def winner_vote_share(self) -> float | None:
        return self.winner_votes / self.views if self.views and self.candidates else None

    def solved_at(self, k: int) -> bool:
        return self.correct_rank is not None and self.correct_rank < k

    def group(self, grouping: str) -> str:
        """This row's group under ``grouping`` (one of GROUPINGS)."""
        if grouping == "source":
            return self.source or NO_CONCEPT
        if grouping == "concept":
            return self.concept or NO_CONCEPT
        if grouping == "size":
            return self.size_bucket
        if grouping == "shape":
            return "same shape" if self.same_shape else "shape changes"
        raise ValueError(f"unknown grouping {grouping!r} (expected one of {GROUPINGS})")


_STORED = [f.name for f in fields(OutputRow)]
CSV_COLUMNS = (
    "task", "test_index", "source", "concept", "input_h", "input_w", "output_h", "output_w", "same_shape",
    "size_bucket", "demos", "views", "empty_crops", "candidates", "correct_rank", "solved_pass1", "solved_pass2",
    "winner_votes", "winner_vote_share", "winner_q_halt",
)  # fmt: skip


def load_task_info(data_path: str | Path) -> dict[str, TaskInfo]:
    """``{task_id: TaskInfo}`` from a built dataset's ``metadata.json`` ({} without one: original HRM builder).

    Datasets built before the builder recorded ``source``/``concept`` get them from each task's ``origin``
    and the build's source specs."""
    path = Path(data_path) / "metadata.json"
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise EvalDataError(f"{path}: cannot read JSON ({e})") from e
    args = meta.get("build_args", {})
    specs = [str(s) for s in list(args.get("sources", [])) + list(args.get("eval_sources", []))]
    out: dict[str, TaskInfo] = {}
    for tid, info in meta.get("tasks", {}).items():
        origin = str(info.get("origin", ""))
        source = info.get("source") or _spec_of(origin, specs)
        concept = info["concept"] if "concept" in info else concept_of(origin, source)
        out[tid] = TaskInfo(source, concept)
    return out


def _spec_of(origin: str, specs: Sequence[str]) -> str:
    """The source spec a task ``origin`` came from (old metadata without ``source``), else the origin."""
    for spec in specs:
        name = spec.partition(":")[0]
        if origin == spec or origin.startswith(spec.rstrip("/") + "/") or f":{name}/" in origin:
            return spec
    return origin


def breakdown(rows: Sequence[OutputRow], grouping: str, ks: Sequence[int]) -> dict[str, dict[str, Any]]:
    """``{group: {"tasks", "test_outputs", "solved_outputs": {"pass@k": n}, "solved_tasks": {...},
    "kaggle": {"pass@k": fraction}, "arc_prize": {...}, "all_or_nothing": {...}}}``, groups sorted.

    A task whose test outputs fall into several groups (size, shape) counts in each, with the outputs there;
    ``solved_tasks`` counts the tasks with every one of their outputs in the group solved."""
    by_group: dict[str, dict[str, list[int | None]]] = {}
    for r in rows:
        by_group.setdefault(r.group(grouping), {}).setdefault(r.task, []).append(r.correct_rank)
    order = [name for _, name in SIZE_BUCKETS] if grouping == "size" else sorted(by_group)
    out: dict[str, dict[str, Any]] = {}
    for name in order:
        ranks = by_group.get(name)
        if ranks is None:
            continue
        entry: dict[str, Any] = {
            "tasks": len(ranks),
            "test_outputs": sum(len(v) for v in ranks.values()),
            "solved_outputs": {f"pass@{k}": sum(r is not None and r < k for v in ranks.values() for r in v)
                               for k in ks},
            "solved_tasks": {f"pass@{k}": sum(all(r is not None and r < k for r in v) for v in ranks.values())
                             for k in ks},
        }
        entry.update(pass_at_k(ranks, ks))
        out[name] = entry
    return out


def breakdowns(rows: Sequence[OutputRow], ks: Sequence[int]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{"by_source": ..., "by_concept": ..., "by_size": ..., "by_shape": ...}`` (see :func:`breakdown`)."""
    return {f"by_{g}": breakdown(rows, g, ks) for g in GROUPINGS}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def rows_csv(rows: Iterable[OutputRow]) -> str:
    """The rows as CSV text with a header line (columns CSV_COLUMNS; empty cell = none)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        derived = {"same_shape": r.same_shape, "size_bucket": r.size_bucket, "solved_pass1": r.solved_at(1),
                   "solved_pass2": r.solved_at(2), "winner_vote_share": r.winner_vote_share}
        writer.writerow([_cell(derived[c] if c in derived else getattr(r, c)) for c in CSV_COLUMNS])
    return buf.getvalue()


def write_rows_csv(path: str | Path, rows: Iterable[OutputRow]) -> None:
    """``tasks.csv``, written atomically."""
    write_text_atomic(path, rows_csv(rows))


def _int_or_none(text: str) -> int | None:
    return None if text == "" else int(text)


def _float_or_none(text: str) -> float | None:
    return None if text == "" else float(text)


_PARSERS: dict[str, Callable[[str], Any]] = {name: int for name in _STORED}
_PARSERS.update(task=str, source=str, concept=str, correct_rank=_int_or_none, winner_q_halt=_float_or_none)


def read_rows_csv(path: str | Path) -> list[OutputRow]:
    """The rows of a ``tasks.csv`` written by :func:`write_rows_csv`; EvalDataError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise EvalDataError(f"{path}: missing (an evaluation folder from before tasks.csv? run train.evaluate again)")
    rows = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in _STORED if c not in (reader.fieldnames or [])]
        if missing:
            raise EvalDataError(f"{path}: no column(s) {', '.join(missing)}")
        for line, rec in enumerate(reader, start=2):
            try:
                rows.append(OutputRow(**{c: _PARSERS[c](rec[c]) for c in _STORED}))
            except (TypeError, ValueError) as e:
                raise EvalDataError(f"{path}, line {line}: {e}") from e
    return rows
