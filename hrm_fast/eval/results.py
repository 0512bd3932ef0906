"""From predicted token boards to scores: crop -> inverse augmentation -> vote -> scores.json (totals and
breakdowns by source, concept, grid size and shape), tasks.csv (one line per test output), submission.json
and report.html. Model-free, so the oracle test runs the very same code."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hrm_fast.data.augment import Augmentation
from hrm_fast.data.encode import crop_prediction
from hrm_fast.eval.breakdown import OutputRow, TaskInfo, breakdowns, write_rows_csv
from hrm_fast.eval.report import ReportItem, write_report
from hrm_fast.eval.score import DEFAULT_KS, SCORINGS, pass_at_k, score_submission, usable_ks
from hrm_fast.eval.solutions import solutions_from_tasks
from hrm_fast.eval.submission import build_submission, write_json_atomic
from hrm_fast.eval.vote import VoteBox, rank_of

PROTOCOL = (
    "Each augmented view's argmax prediction is cropped (largest top-left rectangle of colour tokens), mapped "
    "back with the exact inverse augmentation and voted per (task, test input): rank by vote count, ties by "
    "mean sigmoid(q_halt). Empty crops are not candidates; a test input without any candidate gets [[0]] in "
    "submission.json (submission_scores) but counts as unsolved in pass@k. pass@k: the right grid is among "
    "the top k. kaggle = solved test outputs / test outputs; arc_prize = mean over tasks of the solved "
    "fraction; all_or_nothing = tasks with every test output solved / tasks. The official 2-attempt number is "
    "pass@2."
)


def decode_into(
    votes: VoteBox,
    tokens: np.ndarray,
    task_ids: Sequence[str],
    augs: Sequence[Augmentation],
    test_index: Sequence[int] | np.ndarray,
    q_halt_prob: Sequence[float] | np.ndarray,
    canvas: int,
    rows: Sequence[int] | np.ndarray | None = None,
) -> None:
    """Add one batch of views. tokens: int [B, canvas*canvas] predicted token ids (argmax); the other
    arguments are per row: original task id, augmentation of the view, test index, sigmoid(q_halt), and
    optionally the view's dataset row (its order key in the vote: needed when boxes are merged)."""
    for i in range(tokens.shape[0]):
        grid = augs[i].invert(crop_prediction(tokens[i], canvas))
        order = None if rows is None else int(rows[i])
        votes.add(task_ids[i], int(test_index[i]), grid, float(q_halt_prob[i]), order=order)


def finalize(
    votes: VoteBox,
    tasks: Mapping[str, Any],
    out_dir: str | Path,
    ks: Sequence[int] = DEFAULT_KS,
    facts: Mapping[str, Any] | None = None,
    title: str = "hrm_fast evaluation",
    task_info: Mapping[str, TaskInfo] | None = None,
    unknown: Mapping[tuple[str, int], int] | None = None,
) -> dict[str, Any]:
    """Rank, score and write ``scores.json``, ``tasks.csv``, ``submission.json`` and ``report.html`` into
    ``out_dir``.

    ``tasks``: the original tasks (``{task_id: {"train": [...], "test": [{"input", "output"}, ...]}}``); every
    one is scored and present in the submission, with or without views. ``task_info``: each task's source and
    concept (``breakdown.load_task_info``; missing tasks: unknown). ``unknown``: {(task id, test index): views
    not run because the checkpoint does not know their puzzle} (marked in the report, summed in scores.json).
    Returns the scores dict (= scores.json). scores.json is written last: a folder without it is incomplete.
    """
    unknown = unknown or {}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    solutions = solutions_from_tasks(dict(tasks))
    ranks: dict[str, list[int | None]] = {}
    answers: dict[str, list[list[np.ndarray]]] = {}
    items: list[ReportItem] = []
    rows: list[OutputRow] = []
    max_views = 0
    for tid, task in tasks.items():
        ranks[tid], answers[tid] = [], []
        info = (task_info or {}).get(tid, TaskInfo())
        demos = [(np.asarray(p["input"], dtype=np.uint8), np.asarray(p["output"], dtype=np.uint8))
                 for p in task.get("train", [])]  # fmt: skip
        for i, truth in enumerate(solutions[tid]):
            ranked = votes.ranked(tid, i)
            rank = rank_of(ranked, truth)
            ranks[tid].append(rank)
            answers[tid].append([c.grid for c in ranked[:2]])
            max_views = max(max_views, votes.num_views(tid, i))
            grid_in = np.asarray(task["test"][i]["input"], dtype=np.uint8)
            items.append(
                ReportItem(
                    task_id=tid,
                    test_index=i,
                    input=grid_in,
                    expected=truth,
                    candidates=ranked,
                    num_views=votes.num_views(tid, i),
                    num_empty=votes.num_empty(tid, i),
                    demos=demos,
                    source=info.source,
                    concept=info.concept,
                    num_unknown=unknown.get((tid, i), 0),
                )
            )
            rows.append(OutputRow(
                task=tid, test_index=i, source=info.source, concept=info.concept, input_h=grid_in.shape[0],
                input_w=grid_in.shape[1], output_h=truth.shape[0], output_w=truth.shape[1], demos=len(demos),
                views=votes.num_views(tid, i), empty_crops=votes.num_empty(tid, i), candidates=len(ranked),
                correct_rank=rank, winner_votes=ranked[0].votes if ranked else 0,
                winner_q_halt=ranked[0].mean_q_halt if ranked else None,
            ))  # fmt: skip
    ks_used = usable_ks(max_views, ks)
    table = pass_at_k(ranks, ks_used)

    submission = build_submission(answers)
    placeholders = sum(1 for per_test in answers.values() for a in per_test if not a)
    # Cross-check: the standalone scorer on the written attempts reproduces pass@2. Only a placeholder
    # (no answer at all, written as [[0]]) can differ, when the truth happens to be [[0]].
    sub_scores = score_submission(submission, solutions)
    for s in SCORINGS:
        if placeholders == 0:
            assert abs(sub_scores[s] - table[s]["pass@2"]) < 1e-12, (s, sub_scores[s], table[s]["pass@2"])
        assert sub_scores[s] >= table[s]["pass@2"] - 1e-12, (s, sub_scores[s], table[s]["pass@2"])

    n_views = sum(votes.num_views(*key) for key in votes.keys())
    n_empty = sum(votes.num_empty(*key) for key in votes.keys())
    scores: dict[str, Any] = {
        "pass@2": {s: table[s]["pass@2"] for s in SCORINGS},
        **table,
        "submission_scores": sub_scores,
        "placeholder_answers": placeholders,
        "ks": ks_used,
        "tasks": len(tasks),
        "test_outputs": sum(len(v) for v in solutions.values()),
        "views": n_views,
        "max_views_per_test_input": max_views,
        "empty_crop_fraction": n_empty / n_views if n_views else 0.0,
        "unknown_puzzle_views": sum(unknown.values()),
        "protocol": PROTOCOL,
        **breakdowns(rows, ks_used),
        **{k: v for k, v in (facts or {}).items()},
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json_atomic(out / "submission.json", submission)
    report_facts = {
        "tasks / test outputs": f"{scores['tasks']} / {scores['test_outputs']}",
        "views (max per test input)": f"{n_views} ({max_views})",
        "empty crops": f"{100 * scores['empty_crop_fraction']:.1f}%",
        **{k: v for k, v in (facts or {}).items()},
        "protocol": PROTOCOL,
    }
    write_rows_csv(out / "tasks.csv", rows)
    write_report(out / "report.html", items, table, report_facts, title=title, rows=rows,
                 groups={k: scores[k] for k in ("by_concept", "by_source", "by_size", "by_shape")})
    write_json_atomic(out / "scores.json", scores, indent=2)
    return scores


def flat_metrics(scores: Mapping[str, Any], prefix: str = "eval/") -> dict[str, float]:
    """``{"eval/kaggle@2": ..., ...}`` for every scoring and k, for metrics.jsonl / TensorBoard."""
    return {
        f"{prefix}{s}@{k}": float(scores[s][f"pass@{k}"]) for s in SCORINGS for k in scores["ks"]
    }
