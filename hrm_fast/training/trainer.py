"""The training run: HRM's persistent-carry ACT loop with resume, logging, evaluation and fault handling.

One optimizer step (:class:`hrm_fast.training.step.TrainStep`) advances every row of the global batch by one
ACT segment (deep supervision, HRM paper). The global batch of ``train.global_batch_size`` rows is split over
ranks, then over ``train.grad_accum`` micro-batches; each (rank, micro-batch) slot owns a persistent carry
for its rows, so accumulation and data parallelism compute what one big batch would. The exploration draws
of the halting rule are made for the whole global batch from one generator seeded identically on every rank
and each slot takes its rows, so the trajectory does not depend on the layout (ranks x micro-batches).

Host syncs: none inside a step. Non-finite values and stop requests are read at check points
(every step on CPU, where reading is free; every ``log.every`` steps on CUDA; before every save).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from hrm_fast import distributed as D
from hrm_fast.checkpoint import (
    check_resume_dataset,
    load_ema_state,
    load_state_into,
    load_training_state,
    read_weights,
    save_checkpoint,
)
from hrm_fast.config import Config, ConfigError, config_to_dict, save_config
from hrm_fast.data.build import build_dataset
from hrm_fast.data.dataset import PuzzleDataset, TrainSampler
from hrm_fast.eval.pipeline import evaluate_checkpoint
from hrm_fast.eval.results import flat_metrics
from hrm_fast.eval.runner import EvalRunner
from hrm_fast.eval.validate import evaluate_split
from hrm_fast.faults import (
    GracefulStop,
    NonFiniteError,
    NonFiniteTracker,
    dump_weights,
    fault_point,
    first_line,
    kill_in_save,
    nan_injection_step,
)
from hrm_fast.fs import os_error_line, owner_tag
from hrm_fast.graphs import Snapshot
from hrm_fast.model.hrm import HRM
from hrm_fast.model.losses import metric_means
from hrm_fast.model.precision import autocast_dtype
from hrm_fast.training import run_dir as R
from hrm_fast.training import train_state as TS
from hrm_fast.training.ema import EMA, maybe_applied
from hrm_fast.training.optim import build_optimizers, set_lr
from hrm_fast.training.profiling import StepWindowProfiler, mark_levels, nvtx_range
from hrm_fast.training.runlog import NullLogger, RunLogger, read_metrics
from hrm_fast.training.step import TrainStep

STATE_VERSION = 1


class Trainer:
    """Builds data, model and optimizers for ``config`` on this rank, then :meth:`train` runs the loop."""

    def __init__(self, config: Config, dist: D.DistInfo) -> None:
        self.cfg = config
        self.dist = dist
        self.device = dist.device
        tc = config.train
        slots = dist.world_size * tc.grad_accum
        if tc.global_batch_size % slots:
            raise ConfigError(
                f"train.global_batch_size={tc.global_batch_size} is not divisible by ranks x train.grad_accum "
                f"= {dist.world_size} x {tc.grad_accum}")
        if config.eval.batch_size % dist.world_size:
            raise ConfigError(f"eval.batch_size={config.eval.batch_size} is not divisible by {dist.world_size} ranks")
        self.micro_batch = tc.global_batch_size // slots
        self.compile = config.compile if config.compile is not None else self.device.type == "cuda"
        if config.cuda_graph and not (self.compile and self.device.type == "cuda" and dist.world_size == 1):
            raise ConfigError("cuda_graph=true needs compile=true on one CUDA device (one rank); this run has "
                              f"device {self.device}, compile={self.compile}, {dist.world_size} rank(s)")
        self.amp_dtype = autocast_dtype(config.model.forward_dtype, self.device)

        self.lock: R.RunLock | None = None
        self.run_dir, self.resume_from, start_over, created = self._open_run_dir()
        try:
            self._ensure_dataset()
            torch.manual_seed(tc.seed + dist.rank)  # model init is broadcast from rank 0; this seeds dropout per rank
            self._build_data()
            self._build_model()
            if config.init.from_ is not None:  # a new run from a checkpoint's weights (a resume loads its own)
                from hrm_fast.solve.init import init_from_checkpoint  # solve builds on training: no cycle at import

                init_from_checkpoint(self, load_weights=self.resume_from is None)
            self.step = 0
            self.best: tuple[float, float, float] | None = None  # best_key of the checkpoint in <run>/best
            self.best_step: int | None = None
            self.last_saved_step: int | None = None
            self.tracker = NonFiniteTracker(self.device)
            self.explore_gen = torch.Generator(device="cpu")
            self.explore_gen.manual_seed(tc.seed + 1_000_003)
            self._reset_accumulators()
            if self.resume_from is not None:
                self._resume(self.resume_from)
            elif start_over and dist.is_main:
                _truncate_metrics(self.run_dir / "metrics.jsonl", 0)
            self.logger = self._make_logger()
        except BaseException:
            self.close(remove_empty=created)
            raise

    def close(self, remove_empty: bool = False) -> None:
        """Release the run folder's lock (``remove_empty``: and remove the folder if this run made it and wrote
        nothing in it: a run that failed at start-up leaves no trace)."""
        if self.lock is None:
            return
        self.lock.close()
        self.lock = None
        if remove_empty and sorted(os.listdir(self.run_dir)) == [R.LOCK]:
            (self.run_dir / R.LOCK).unlink()
            self.run_dir.rmdir()

    # ------------------------------------------------------------------ set-up
    def _say(self, message: str) -> None:
        if self.dist.is_main:
            tqdm.write(message, file=sys.stdout)
            sys.stdout.flush()

    def _open_run_dir(self) -> tuple[Path, Path | None, bool, bool]:
        """(run folder, checkpoint to resume from, start over, folder made now): rank 0 chooses and locks the folder
        (:func:`hrm_fast.training.run_dir.open_run_dir`); every rank gets its choice or its error (one line)."""
        rc = self.cfg.run
        chosen: tuple[str, ...] | None = None
        if self.dist.is_main:
            try:
                run_dir, resume = R.resolve(rc.dir, rc.resume, self.cfg.preset)
                created = not run_dir.exists()
                self.lock, resume, start_over = R.open_run_dir(run_dir, resume, rc.resume, rc.overwrite, self._say)
                chosen = ("ok", str(run_dir), str(resume) if resume else "", str(start_over), str(created))
            except R.RunDirError as err:
                chosen = ("error", str(err))
            except FileNotFoundError as err:  # a run.resume path with no checkpoint (resolve's own message)
                chosen = ("error", str(err) if err.filename is None else f"run.dir: {os_error_line(err)}")
            except OSError as err:
                chosen = ("error", f"run.dir: cannot use the run folder: {os_error_line(err)}")
        chosen = D.broadcast_object(chosen, self.dist)
        if chosen[0] == "error":
            raise R.RunDirError(chosen[1])
        _, run_dir, resume, start_over, created = chosen
        return Path(run_dir), (Path(resume) if resume else None), start_over == "True", created == "True"

    def _ensure_dataset(self) -> None:
        """Build the preset's dataset when ``data.path`` has none (rank 0 builds, the others wait)."""
        dc = self.cfg.data
        if self.dist.is_main and not (Path(dc.path) / "train" / "dataset.json").is_file():
            self._say(f"dataset {dc.path} is missing: building it (sources {dc.sources}, eval {dc.eval_sources}, "
                      f"{dc.num_aug} augmentations, grids up to {dc.max_grid_size}x{dc.max_grid_size})")
            build_dataset(dc.path, dc.sources, dc.eval_sources, num_aug=dc.num_aug, seed=dc.seed,
                          max_grid_size=dc.max_grid_size, val_fraction=dc.val_fraction, subset=dc.subset,
                          workers=max(1, dc.workers), progress=True)
        D.barrier(self.dist)

    def _build_data(self) -> None:
        self.train_set = PuzzleDataset(self.cfg.data.path, "train")
        self.meta = self.train_set.metadata
        self.sampler = TrainSampler(self.train_set, global_batch_size=self.cfg.train.global_batch_size,
                                    rank=self.dist.rank, world_size=self.dist.world_size,
                                    seed=self.cfg.train.seed, bucket_batches=self.cfg.data.bucket_batches)
        self.val_split = "val" if (Path(self.cfg.data.path) / "val").is_dir() else None
        self.total_steps = total_steps_for(self.cfg, self.meta.total_groups, self.meta.mean_puzzle_examples)

    def _build_model(self) -> None:
        self.model = HRM(self.cfg.model, vocab_size=self.meta.vocab_size, seq_len=self.meta.seq_len,
                         num_puzzle_identifiers=self.meta.num_puzzle_identifiers).to(self.device)
        D.broadcast_module(self.model, self.dist)
        mark_levels(self.model)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizers = build_optimizers(self.model, self.cfg.train)
        self.ema = EMA(self.model, self.cfg.train.ema_decay) if self.cfg.train.ema else None
        self.carries = [self.model.initial_carry(self.micro_batch, self.device)
                        for _ in range(self.cfg.train.grad_accum)]
        self.step_fn: TrainStep | None = None  # built at the first step, i.e. after a resume loaded the optimizers
        self.eval_runner = None
        self.num_params = sum(p.numel() for p in self.params)

    def _make_logger(self) -> NullLogger:
        if not self.dist.is_main:
            return NullLogger()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(self.cfg, self.run_dir / "config.yaml")
        return RunLogger(self.run_dir, config_to_dict(self.cfg), tensorboard=self.cfg.log.tensorboard,
                         wandb_mode=self.cfg.log.wandb)

    # ------------------------------------------------------------------ one step
    def _global_draws(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Exploration draws for the whole global batch: (explore [G] fp32, min_steps [G] int32)."""
        g = self.cfg.train.global_batch_size
        explore = torch.rand(g, generator=self.explore_gen)
        min_steps = torch.randint(2, max(self.cfg.model.halt_max_steps, 2) + 1, (g,), generator=self.explore_gen,
                                  dtype=torch.int32)
        return explore, min_steps

    def _slot_rows(self, micro: int) -> slice:
        start = (self.dist.rank * self.cfg.train.grad_accum + micro) * self.micro_batch
        return slice(start, start + self.micro_batch)

    def _make_step(self, compile: bool) -> TrainStep:
        tc = self.cfg.train
        compile = compile and bool(self.params)  # nothing to compile when only the puzzle table trains (init.freeze)
        return TrainStep(self.model, self.optimizers, self.carries, loss_type=self.cfg.model.loss_type,
                         global_batch_size=tc.global_batch_size, grad_clip=tc.grad_clip, compile=compile,
                         cuda_graph=self.cfg.cuda_graph if compile and self.device.type == "cuda" and not
                         self.dist.enabled else False,
                         ema=self.ema, dist=self.dist if self.dist.enabled else None)

    def train_step(self, batch_iter: Iterator[dict[str, torch.Tensor]]) -> None:
        """One optimizer step (:class:`TrainStep`): every slot's carry advances one segment; no host sync."""
        with nvtx_range("data"):
            rank_batch = next(batch_iter)
        explore, min_steps = self._global_draws()
        fault_point(f"step{self.step + 1}")
        inject = nan_injection_step()
        # the rank's rows of the global draws: the trajectory does not depend on the rank x micro-batch layout
        mine = slice(self._slot_rows(0).start, self._slot_rows(self.cfg.train.grad_accum - 1).stop)
        args = (rank_batch, explore[mine], min_steps[mine], inject)
        if self.step_fn is None:
            self.step_fn = self._make_step(self.compile)
            if self.compile:
                self._first_compiled_step(*args)
                return
        self._run_step(*args)

    def _first_compiled_step(self, rank_batch: dict[str, torch.Tensor], explore: torch.Tensor,
                             min_steps: torch.Tensor, inject: int | None) -> None:
        """The compiled step's first call (compilation, CUDA-graph capture). If that fails, its effects are undone
        (weights, optimizer state, carries, RNG), the failure is reported, and the run continues with the eager
        step, which computes the same step."""
        assert self.step_fn is not None
        snapshot, step = Snapshot(self.step_fn.state_tensors(), self.device), self.step
        try:
            self._run_step(rank_batch, explore, min_steps, inject)
            fault_point("first_compiled_step")
            return
        except Exception as err:  # noqa: BLE001 -- any failure of the compiled path falls back to eager
            snapshot.restore()
            self.step = step
            self.tracker = NonFiniteTracker(self.device, step)
            self._reset_accumulators()
            self._say(f"warning: the compiled training step failed at its first call ({first_line(err)}). Its "
                      "effects were undone; this run continues with the eager step, which computes the same step "
                      "more slowly. Choose a path with cuda_graph=false or compile=false, and please report the error.")
        self.step_fn = self._make_step(compile=False)
        self._run_step(rank_batch, explore, min_steps, inject)

    def _run_step(self, rank_batch: dict[str, torch.Tensor], explore: torch.Tensor, min_steps: torch.Tensor,
                  inject: int | None) -> None:
        assert self.step_fn is not None
        # HRM counts the step before scheduling: the first step runs at lr(1), not lr(0) = 0 in warmup
        self.current_lr = set_lr(self.optimizers, self.step + 1, self.total_steps, self.cfg.train)
        # the model already runs in model.forward_dtype; autocast's weight-cast cache must be off under CUDA graphs
        amp = (torch.autocast(self.device.type, dtype=self.amp_dtype, cache_enabled=False) if self.amp_dtype
               else contextlib.nullcontext())
        with nvtx_range("train_step"), amp:
            out = self.step_fn(rank_batch, explore, min_steps,
                               loss_mult=float("nan") if inject is not None and self.step + 1 == inject else 1.0)
        self.tracker.update(out.loss_sum, out.grad_norm)
        self._accumulate(out.metrics)
        self.acc["grad_norm"] += out.grad_norm.detach().float()
        self.acc["steps_logged"] += 1
        self.step += 1

    # ------------------------------------------------------------------ metrics
    def _reset_accumulators(self) -> None:
        self.acc: dict[str, torch.Tensor] = {
            "grad_norm": torch.zeros((), device=self.device), "steps_logged": torch.zeros((), device=self.device)}

    def _accumulate(self, metrics: dict[str, torch.Tensor]) -> None:
        for k, v in metrics.items():
            v = v.detach().float()
            if k in self.acc:
                self.acc[k] += v
            else:
                self.acc[k] = v.clone()

    def _reduce_train_metrics(self) -> dict[str, float]:
        sums = D.all_reduce_sum(self.acc, self.dist)
        n_steps = max(float(sums.pop("steps_logged")) / self.dist.world_size, 1.0)
        grad_norm = float(sums.pop("grad_norm")) / self.dist.world_size / n_steps
        out = metric_means(sums, "train", loss_rows=self.cfg.train.global_batch_size * n_steps, steps=n_steps)
        out["train/grad_norm"] = grad_norm
        out["train/lr"] = self.current_lr
        self._reset_accumulators()
        return out

    # ------------------------------------------------------------------ checks
    def _check(self, stop: GracefulStop) -> str | None:
        """Host-side check point: raise on a non-finite step; agree across ranks on a stop request."""
        flags = torch.stack([self.tracker.first_bad.cpu(),
                             torch.tensor(1 if stop.requested else 0, dtype=torch.int64)])
        flags = D.all_reduce_max(flags.to(self.device if self.device.type == "cuda" else "cpu"), self.dist).cpu()
        if int(flags[0]) >= 0:
            raise NonFiniteError(int(flags[0]))
        return (stop.requested or "a signal on another rank") if int(flags[1]) else None

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> dict[str, float]:
        """Validation metrics (exact accuracy, token accuracy, steps, q-halt accuracy) on the val split."""
        if self.eval_runner is None:  # one runner for the whole run: a compiled one compiles (and captures) once
            self.eval_runner = EvalRunner(self.model, self.cfg.eval.batch_size // self.dist.world_size, self.device,
                                          compile=self.compile, cuda_graph=self.cfg.cuda_graph,
                                          loss_type=self.cfg.model.loss_type, amp_dtype=self.amp_dtype)
        with nvtx_range("eval"), maybe_applied(self.ema):
            return evaluate_split(self.model, self.cfg, self.dist, self.val_split, self.eval_runner,
                                  show_progress=self.dist.is_main)

    # ------------------------------------------------------------------ checkpoints
    def _state(self) -> dict[str, Any] | None:
        """The full training state, gathered on rank 0 (None on other ranks)."""
        mine = {"rng": TS.rng_state(self.device), "carries": [TS.carry_state(c) for c in self.carries]}
        gathered = D.gather_objects(mine, self.dist)
        if not self.dist.is_main:
            return None
        assert gathered is not None
        slots = [c for g in gathered for c in g["carries"]]  # rank-major, micro-minor = global row order
        return {
            "version": STATE_VERSION,
            "step": self.step,
            "total_steps": self.total_steps,
            "world_size": self.dist.world_size,
            "grad_accum": self.cfg.train.grad_accum,
            "best_metric": list(self.best) if self.best is not None else None,
            "best_step": self.best_step,
            "optimizers": [opt.state_dict() for opt in self.optimizers],
            "sampler": self.sampler.state_dict(),
            "explore_rng": self.explore_gen.get_state(),
            "rng": [g["rng"] for g in gathered],
            "carry": TS.concat_carry_states(slots),
            "accumulators": {k: v.detach().cpu() for k, v in self.acc.items()},
        }

    def save(self, name: str) -> None:
        """Write checkpoint ``<run_dir>/<name>`` atomically (rank 0 writes; every rank takes part)."""
        state = self._state()
        if self.dist.is_main:
            with kill_in_save():
                save_checkpoint(self.run_dir / name, self.model, self.cfg, state,
                                ema=self.ema.state_dict() if self.ema is not None else None)
        if name == "last":
            self.last_saved_step = self.step
        D.barrier(self.dist)

    def _kept(self) -> str:
        """What survives a run stopped by an error: its last good checkpoint."""
        if self.last_saved_step is None:
            return "no checkpoint had been written"
        return f"the last good checkpoint is {self.run_dir / 'last'} (step {self.last_saved_step})"

    def _resume(self, path: Path) -> None:
        if (note := check_resume_dataset(path, self.cfg.data.path)) is not None:  # dataset identity (issue 11)
            self._say(note)
        state = load_training_state(path)
        tensors, _ = read_weights(path / "model.safetensors")
        load_state_into(self.model, tensors, str(path / "model.safetensors"))
        if self.ema is not None and not load_ema_state(self.ema, path):
            self.ema.reset()
            self._say(f"note: {path} has no EMA weights: the moving average restarts from the resumed weights")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"{path}: training state version {state.get('version')}, this code reads {STATE_VERSION}")
        for opt, sd in zip(self.optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(sd)
        self.sampler.load_state_dict(state["sampler"])
        self.explore_gen.set_state(state["explore_rng"])
        self.step = int(state["step"])
        self.last_saved_step = self.step
        self.best, self.best_step = _best_from_state(state)
        self.tracker = NonFiniteTracker(self.device, self.step)
        if state["world_size"] == self.dist.world_size:
            TS.set_rng_state(state["rng"][self.dist.rank], self.device)
        else:
            self._say(f"note: checkpoint was written by {state['world_size']} ranks, now {self.dist.world_size}: "
                      "per-rank RNG states (dropout) restart from the seed")
        for micro, carry in enumerate(self.carries):
            rows = self._slot_rows(micro)
            TS.load_carry_state(carry, TS.slice_carry_state(state["carry"], rows.start, rows.stop))
        self.acc = {k: v.to(self.device) for k, v in state["accumulators"].items()}
        self._say(f"resumed from {path} at step {self.step}")
        if self.dist.is_main:
            _truncate_metrics(self.run_dir / "metrics.jsonl", self.step)

    def arc_evaluate(self) -> None:
        """ARC scoring of the final weights on the test split, the views split over all ranks.

        Rank 0 writes ``scores.json``, ``submission.json`` and ``report.html`` into ``<run>/eval-test-step<N>``
        and logs the scores (``eval/<scoring>@<k>``) to metrics.jsonl and TensorBoard.
        """
        test_dir = Path(self.cfg.data.path) / "test"
        if not test_dir.is_dir():
            self._say(f"eval.arc_at_end: {test_dir} does not exist (no --eval-source); skipped")
            return
        out = self.run_dir / f"eval-test-step{self.step}"
        with nvtx_range("eval"), maybe_applied(self.ema):
            scores = evaluate_checkpoint(self.model, self.cfg, "test", out, device=self.device, step=self.step,
                                         dist=self.dist, progress=self.dist.is_main)
        if self.dist.is_main:
            self.logger.log(self.step, flat_metrics(scores))
            self._say(f"ARC scores of step {self.step} (pass@2: kaggle {scores['kaggle']['pass@2']:.4f}, "
                      f"arc_prize {scores['arc_prize']['pass@2']:.4f}, all_or_nothing "
                      f"{scores['all_or_nothing']['pass@2']:.4f}); report: {out / 'report.html'}")

    # ------------------------------------------------------------------ the loop
    def train(self) -> int:
        """Run to ``total_steps``; returns the process exit code (0 done or stopped by a signal)."""
        cfg = self.cfg
        self._say(f"run folder: {self.run_dir}")
        self._say(f"model: {self.num_params / 1e6:.2f}M parameters, {self.meta.num_puzzle_identifiers} puzzle ids; "
                  f"device {self.device}, {self.dist.world_size} rank(s), micro-batch {self.micro_batch} x "
                  f"{cfg.train.grad_accum} accumulation; compile={self.compile}; {self.total_steps} steps")
        check_every = 1 if self.device.type == "cpu" else cfg.log.every
        stop = GracefulStop().install()
        batch_iter = iter(self.sampler)
        bar = tqdm(total=self.total_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True,
                   disable=not self.dist.is_main, file=sys.stdout)
        profiler = StepWindowProfiler(cfg.profile.steps, cfg.profile.torch, self.run_dir / "profile", self.step)
        t_last, steps_since_log, t_excluded = time.perf_counter(), 0, 0.0  # step time excludes eval and saving
        try:
            while self.step < self.total_steps:
                profiler.before_step(self.step)
                self.train_step(batch_iter)
                steps_since_log += 1
                bar.update(1)
                message = profiler.after_step(self.step)
                if message:
                    self._say(message)
                at_log = self.step % cfg.log.every == 0
                at_eval = self.val_split is not None and self.step % cfg.eval.every == 0
                at_ckpt = self.step % cfg.checkpoint.every == 0
                at_end = self.step == self.total_steps
                stopping = None
                if self.step % check_every == 0 or at_log or at_eval or at_ckpt or at_end or stop.requested:
                    stopping = self._check(stop)
                if at_log or at_end:
                    metrics = self._reduce_train_metrics()
                    metrics["train/step_time_s"] = (time.perf_counter() - t_last - t_excluded) / max(1, steps_since_log)
                    t_last, steps_since_log, t_excluded = time.perf_counter(), 0, 0.0
                    self.logger.log(self.step, metrics)
                    bar.set_postfix(loss=f"{metrics.get('train/lm_loss', float('nan')):.3f}",
                                    acc=f"{metrics.get('train/accuracy', float('nan')):.3f}")
                t_aside = time.perf_counter()
                if at_eval or (at_end and self.val_split is not None):
                    val = self.evaluate()
                    key = best_key(val)
                    better = self.best is None or key > self.best
                    if better:
                        self.best, self.best_step = key, self.step
                    val["val/best_step"] = float(self.best_step)  # which step <run>/best holds after this eval
                    self.logger.log(self.step, val)
                    self._say(f"step {self.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in val.items()
                                                                  if k != "val/best_step"))
                    if better:
                        self.save("best")
                        self._say(f"best: {self.run_dir / 'best'} now holds step {self.step} (exact accuracy "
                                  f"{key[0]:.4f}, token accuracy {key[1]:.4f}, loss {-key[2]:.4f})")
                if at_ckpt or at_end or stopping:
                    self.save("last")
                t_excluded += time.perf_counter() - t_aside
                if stopping:
                    self._say(f"stopped by {stopping} at step {self.step}: saved {self.run_dir / 'last'}; "
                              f"continue with run.resume={self.run_dir / 'last'} (or run.resume=auto)")
                    return 0
            if cfg.eval.arc_at_end:
                self.arc_evaluate()
        except NonFiniteError as err:
            print(f"error: {err}; stopped without saving: {self._kept()}. Lower train.lr, set train.grad_clip, or use "
                  "model.forward_dtype=float32 to find the cause.", file=sys.stderr, flush=True)
            self.logger.text(str(err))
            return 3
        except OSError as err:  # disk full, read-only remount, I/O error: writing a checkpoint or the log
            print(f"error: {os_error_line(err)}; stopped at step {self.step}: {self._kept()}", file=sys.stderr,
                  flush=True)
            return 2
        finally:
            profiler.close()
            bar.close()
            stop.uninstall()
            try:
                self.logger.close()
            except OSError as err:
                print(f"warning: closing the run's log: {os_error_line(err)}", file=sys.stderr, flush=True)
        self._say(f"done: {self.step} steps; checkpoints in {self.run_dir}")
        dump_weights(self.model, self.dist.rank)
        return 0


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop log records written after ``step`` (by a run that died after its last checkpoint)."""
    if not path.exists():
        return
    kept = [r for r in read_metrics(path) if r.get("step", 0) <= step]
    tmp = path.with_name(f".{path.name}.tmp-{owner_tag()}")  # a killed run's copy is removed by run_dir.open_run_dir
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    fault_point("resume")
    os.replace(tmp, path)


def best_key(val: dict[str, float]) -> tuple[float, float, float]:
    """How validation results rank for ``best``: exact accuracy, then token accuracy, then lower loss (NaN last)."""
    def finite(x: float | None) -> float:
        return float("-inf") if x is None or x != x else float(x)

    return (finite(val.get("val/exact_accuracy")), finite(val.get("val/accuracy")),
            finite(-val["val/lm_loss"] if "val/lm_loss" in val else None))


def _best_from_state(state: dict[str, Any]) -> tuple[tuple[float, float, float] | None, int | None]:
    """(best_key, step) of a checkpoint's training state; states before issue 11 kept exact accuracy only."""
    best = state.get("best_metric")
    if best is None:
        return None, state.get("best_step")
    if isinstance(best, (int, float)):
        return (float(best), float("-inf"), float("-inf")), state.get("best_step")
    return tuple(float(x) for x in best), state.get("best_step")


def total_steps_for(config: Config, total_groups: int, mean_puzzle_examples: float) -> int:
    """HRM's step count: epochs x groups x mean examples / global batch, capped by ``train.max_steps``."""
    tc = config.train
    steps = [tc.max_steps] if tc.max_steps is not None else []
    if tc.epochs is not None:
        steps.append(int(tc.epochs * total_groups * mean_puzzle_examples / tc.global_batch_size))
    return max(1, min(steps)) if steps else 1

