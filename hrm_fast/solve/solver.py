"""Solve ARC tasks a checkpoint has never seen: fit new puzzle-table rows on the task's augmented
demonstrations, then predict every augmented view of its test inputs and vote (the evaluation pipeline's
views -> predict -> crop/invert -> vote). Also :meth:`Solver.predict` for tasks the checkpoint was trained on.

    solver = Solver.from_checkpoint("runs/demo/last")
    attempts = solver.solve(task_dict, steps=200, num_aug=8)   # [test input][rank] -> Attempt

The solver holds the loaded model and never changes it: each solve works on a copy whose table has the new
rows (``embedding`` mode: the copy's network stays bit-identical; ``full`` mode: the copy's network trains
too). No global state: torch's RNG is forked while fitting; safe to call repeatedly.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hrm_fast.config import Config, ConfigError
from hrm_fast.data.augment import parse_augmented_name
from hrm_fast.data.encode import encode_grid
from hrm_fast.data.sources import ArcTask
from hrm_fast.eval.predict import predict_views
from hrm_fast.eval.results import decode_into
from hrm_fast.eval.views import EvalSplit
from hrm_fast.eval.vote import Candidate, VoteBox
from hrm_fast.model.hrm import HRM
from hrm_fast.model.precision import autocast_dtype
from hrm_fast.solve.fit import FitLog, demo_metrics, fit
from hrm_fast.solve.rows import checkpoint_names, extend_table
from hrm_fast.solve.tasks import (
    SolveError,
    TaskCopies,
    assign_ids,
    check_task,
    concat_splits,
    expand_for_solve,
    task_from_dict,
    task_json,
)


class SolveConfig(BaseModel):
    """How tasks are solved (``solve.<key>=`` on the command line)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    steps: int = Field(300, ge=0, description="optimizer steps fitting each task's new rows")
    num_aug: int = Field(8, ge=0, description="augmented copies per task (plus the original): rows fitted, views voted")
    mode: Literal["embedding", "full"] = Field("embedding", description="embedding: network frozen; full: all trains")
    batch_size: int = Field(16, ge=1, description="demonstration rows per task per fitting step")
    lr: float | None = Field(None, gt=0, description="puzzle-row lr (SignSGD); None = the checkpoint's puzzle_emb_lr")
    network_lr: float | None = Field(None, gt=0, description="full mode: network lr; None = the checkpoint's train.lr")
    eval_batch_size: int = Field(64, ge=1, description="views per prediction batch")
    group: int = Field(1, ge=1, description="tasks fitted together, batch_size rows each per step (faster on a GPU)")
    seed: int = 0


def solve_config(overrides: dict[str, Any] | None = None) -> SolveConfig:
    """A SolveConfig from ``{key: value}``; ConfigError naming a bad key or value."""
    try:
        return SolveConfig.model_validate(overrides or {})
    except ValidationError as err:
        problems = "; ".join(f"unknown key solve.{e['loc'][0]}" if e["type"] == "extra_forbidden" else
                             f"solve.{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r})"
                             for e in err.errors())
        raise ConfigError(f"{problems} (allowed: {', '.join(SolveConfig.model_fields)})") from None


@dataclass
class Attempt:
    """One ranked answer for one test input. grid: rows of colours 0..9; votes: views that produced it, of
    ``views``; confidence: their mean sigmoid(q_halt) in [0, 1]."""

    grid: list[list[int]]
    votes: int
    views: int
    confidence: float

    @classmethod
    def of(cls, cand: Candidate, views: int) -> Attempt:
        return cls(cand.grid.tolist(), cand.votes, views, round(cand.mean_q_halt, 6))


@dataclass
class TaskResult:
    """One solved task: ranked candidates per test input, the fitting log, demo metrics after fitting."""

    task: ArcTask
    votes: VoteBox
    copies: int
    fit_log: FitLog | None
    demo: dict[str, float] | None
    seconds: float

    def attempts(self, k: int = 2) -> list[list[Attempt]]:
        """[test input][rank < k] -> Attempt (fewer when fewer distinct answers came out)."""
        tid = self.task.task_id
        return [[Attempt.of(c, self.votes.num_views(tid, i)) for c in self.votes.ranked(tid, i)[:k]]
                for i in range(len(self.task.test))]

    def correct(self) -> list[bool | None]:
        """Per test input: right answer among the two attempts (None when the output is unknown)."""
        out: list[bool | None] = []
        for i, (_, truth) in enumerate(self.task.test):
            ranked = [c.grid for c in self.votes.ranked(self.task.task_id, i)[:2]]
            out.append(None if truth is None else any(g.shape == truth.shape and (g == truth).all() for g in ranked))
        return out

    def summary(self) -> str:
        """The per-task line the CLI prints."""
        tid = self.task.task_id
        parts = [f"task {tid}: {self.copies} copies"]
        if self.fit_log is not None and self.fit_log.lm_loss:
            first = np.nanmean(self.fit_log.lm_loss[: max(1, len(self.fit_log.lm_loss) // 10)])
            last = np.nanmean(self.fit_log.lm_loss[-max(1, len(self.fit_log.lm_loss) // 10):])
            parts.append(f"fit {len(self.fit_log.lm_loss)} steps, loss {first:.3f} -> {last:.3f}")
        if self.demo is not None:
            parts.append(f"demos exact {100 * self.demo['exact']:.0f}%")
        for i, ok in enumerate(self.correct()):
            ranked = self.votes.ranked(tid, i)
            views = self.votes.num_views(tid, i)
            top = f"{ranked[0].votes}/{views} votes, conf {ranked[0].mean_q_halt:.2f}" if ranked else "no answer"
            verdict = "" if ok is None else (" RIGHT" if ok else " wrong")
            parts.append(f"test {i}: {top}{verdict}")
        parts.append(f"{self.seconds:.1f} s")
        return "; ".join(parts)


class Solver:
    """A loaded checkpoint that solves tasks (see the module docstring). Build with :meth:`from_checkpoint`."""

    def __init__(self, model: HRM, config: Config, checkpoint: Path, device: torch.device) -> None:
        if model.puzzle_emb is None:
            raise SolveError(f"{checkpoint}: the model has no puzzle embedding (model.puzzle_emb_ndim=0): a task is "
                             "known to it only through its puzzle row, so there is nothing to fit")
        canvas = int(round(model.seq_len**0.5))
        if canvas * canvas != model.seq_len:
            raise SolveError(f"{checkpoint}: sequence length {model.seq_len} is not a square ARC canvas")
        self.model, self.config, self.checkpoint = model.eval(), config, checkpoint
        self.device, self.canvas = device, canvas
        self.amp_dtype = autocast_dtype(config.model.forward_dtype, device)
        self._names: list[str] | None = None

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu",
                        hrm_config: str | Path | None = None) -> Solver:
        """Load an hrm_fast checkpoint folder, a run folder (its best, else last), or an original HRM
        checkpoint file with its ``all_config.yaml``. ``device``: "cpu", "cuda", "auto" or a torch.device.
        Raises CheckpointError / SolveError naming the checkpoint when it is of the wrong kind."""
        from hrm_fast.eval.pipeline import load_for_eval

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dev = torch.device(device)
        model, config, folder = load_for_eval(path, dev, hrm_config)
        return cls(model, config, Path(folder), dev)

    # ------------------------------------------------------------------ new tasks
    def settings(self, **overrides: Any) -> SolveConfig:
        """SolveConfig with ``overrides`` (None values ignored)."""
        return solve_config({k: v for k, v in overrides.items() if v is not None})

    def prepare(self, tasks: Sequence[ArcTask], settings: SolveConfig) -> list[TaskCopies]:
        """Check every task (SolveError naming the first bad one) and expand its augmented copies."""
        for t in tasks:
            check_task(t, self.canvas)
        return [expand_for_solve(t, settings.num_aug, self.canvas, self.config.data.seed) for t in tasks]

    def fitted_model(self, copies: Sequence[TaskCopies], settings: SolveConfig, progress: bool = False
                     ) -> tuple[HRM, FitLog]:
        """A copy of the model whose table has new rows for ``copies`` (puzzle ids assigned in place), fitted on
        their demonstrations as ``settings`` say. The solver's own model is not touched."""
        work = copy.deepcopy(self.model)
        first = work.num_puzzle_identifiers
        extra = sum(len(c.names) for c in copies)
        work.puzzle_emb.weights = extend_table(work.puzzle_emb.weights, extra)
        work.num_puzzle_identifiers = first + extra
        for c in copies:
            assign_ids(c, first)
            first += len(c.names)
        demos = concat_splits([c.demos for c in copies], "demonstrations")
        sizes = np.cumsum([0] + [c.demos.num_rows for c in copies])
        pools = [np.arange(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
        tc = self.config.train.model_copy(update={
            "puzzle_emb_lr": settings.lr or self.config.train.puzzle_emb_lr,
            "lr": settings.network_lr or self.config.train.lr})
        names = ", ".join(c.task.task_id for c in copies)
        log = fit(work, demos, tc, steps=settings.steps, batch_size=settings.batch_size, mode=settings.mode,
                  seed=settings.seed, device=self.device, amp_dtype=self.amp_dtype, progress=progress,
                  desc=f"fit {names}"[:40], pools=pools)
        return work, log

    def _vote(self, model: HRM, split: EvalSplit, settings: SolveConfig, progress: bool, desc: str
              ) -> dict[str, VoteBox]:
        """Predict every row of ``split`` and vote, one box per task."""
        boxes: dict[str, VoteBox] = {t: VoteBox() for t in dict.fromkeys(split.task_ids)}
        rows = np.arange(split.num_rows)
        batch = min(settings.eval_batch_size, split.num_rows)  # batches are padded to their size: no more than needed
        for chunk, tokens, q in predict_views(model, split, rows, batch,
                                              model.config.halt_max_steps, self.device, self.amp_dtype, progress,
                                              desc=desc):
            for tid in dict.fromkeys(split.task_ids[r] for r in chunk):
                mine = np.asarray([i for i, r in enumerate(chunk) if split.task_ids[r] == tid])
                decode_into(boxes[tid], tokens[mine], [tid] * len(mine), [split.augs[r] for r in chunk[mine]],
                            split.test_index[chunk[mine]], q[mine], split.canvas, rows=chunk[mine])
        return boxes

    def solve_tasks(self, tasks: Sequence[ArcTask], settings: SolveConfig | None = None, progress: bool = False,
                    on_result: Callable[[TaskResult], None] | None = None) -> list[TaskResult]:
        """Fit and predict ``tasks`` (``settings.group`` at a time); every task is checked before any work.
        ``on_result`` is called with each task's result as soon as it is done."""
        settings = settings or SolveConfig()
        copies = self.prepare(tasks, settings)
        results: list[TaskResult] = []
        for start in range(0, len(copies), settings.group):
            group = copies[start : start + settings.group]
            t0 = time.perf_counter()
            model, log = self.fitted_model(group, settings, progress)
            demos = concat_splits([c.demos for c in group], "demonstrations")
            demo = demo_metrics(model, demos, min(settings.eval_batch_size, demos.num_rows), self.device,
                                self.amp_dtype)
            boxes = self._vote(model, concat_splits([c.tests for c in group], "test inputs"), settings, progress,
                               "predict views")
            seconds = (time.perf_counter() - t0) / len(group)
            for c in group:
                result = TaskResult(c.task, boxes[c.task.task_id], len(c.names) - 1, log, demo, seconds)
                results.append(result)
                if on_result is not None:
                    on_result(result)
            del model
        return results

    def solve(self, task: dict[str, Any] | ArcTask, *, steps: int | None = None, num_aug: int | None = None,
              mode: str | None = None, attempts: int = 2, task_id: str = "task", **settings: Any
              ) -> list[list[Attempt]]:
        """Solve one task (a JSON-style dict or an ArcTask): [test input][rank < attempts] -> Attempt.
        Other ``settings``: any SolveConfig key (batch_size, lr, seed, ...)."""
        arc = task if isinstance(task, ArcTask) else task_from_dict(task, task_id)
        config = self.settings(steps=steps, num_aug=num_aug, mode=mode, **settings)
        return self.solve_tasks([arc], config)[0].attempts(attempts)

    # ------------------------------------------------------------------ tasks the checkpoint knows
    def identifier_names(self) -> list[str]:
        """The checkpoint's puzzle-row names (SolveError when unknown)."""
        if self._names is None:
            n = self.model.num_puzzle_identifiers
            self._names = checkpoint_names(self.checkpoint, self.config, n)
            if self._names is None:
                raise SolveError(f"{self.checkpoint}: the identifier names of its {n} puzzle rows are unknown (no "
                                 f"identifiers.json beside it or in its data.path {self.config.data.path})")
        return self._names

    def predict(self, task: dict[str, Any] | ArcTask, task_id: str | None = None, attempts: int = 2,
                batch_size: int = 64) -> list[list[Attempt]]:
        """Predict a task the checkpoint was trained on (its demonstrations were in the training set): every
        trained augmented copy of ``task_id`` votes on the test inputs. [test input][rank] -> Attempt."""
        tid = task_id or (task.task_id if isinstance(task, ArcTask) else None)
        if tid is None:
            raise SolveError("predict: give task_id= (the task's name in the checkpoint's training set)")
        arc = task if isinstance(task, ArcTask) else task_from_dict(task, tid)
        check_task(arc, self.canvas)
        known = [(i, parse_augmented_name(n)[1]) for i, n in enumerate(self.identifier_names())
                 if i > 0 and parse_augmented_name(n)[0] == tid]
        if not known:
            raise SolveError(f"task {tid}: not among the checkpoint's puzzle rows; use solve() for a new task")
        rows = [(pid, aug, t) for pid, aug in known for t in range(len(arc.test))]
        inputs = np.stack([encode_grid(aug.apply(arc.test[t][0]), self.canvas) for _, aug, t in rows])
        split = EvalSplit(Path(f"<test inputs of task {tid}>"), inputs, np.zeros_like(inputs),
                          np.asarray([r[0] for r in rows], np.int32), [tid] * len(rows), [r[1] for r in rows],
                          np.asarray([r[2] for r in rows], np.int32), {tid: task_json(arc)}, self.canvas)
        box = self._vote(self.model, split, SolveConfig(eval_batch_size=batch_size), False, "views")[tid]
        return TaskResult(arc, box, len(known), None, None, 0.0).attempts(attempts)
