"""The learning benchmark: how well a training recipe solves held-out ARC tasks per model FLOP, on one CPU thread.

    python -m bench.learn --recipe baseline --budget 1e14 --seed 0 [--out docs/learning] [--set key=value ...]
    python -m bench.learn report [--out docs/learning]

Task suite: ARC-AGI-1 training + evaluation tasks whose every grid fits 10x10 (the cpu-tiny data: 178 + 77
tasks); the evaluation tasks' demonstrations are trained on and their test outputs held out (split ``test``),
as HRM does; ``val`` = the test pairs of a seeded 10% of the training tasks. The data build is fixed (its
seed is the recipe's ``data.seed``); ``--seed`` seeds training (``train.seed``: initialisation, sampling,
exploration).

Budget: model FLOPs of training (``hrm_fast.flops.step_flops`` x steps; evaluation is not counted), so
``train.max_steps = floor(budget / step_flops)``: a recipe with cheaper steps gets more steps. The run is the
ordinary trainer (``hrm_fast.training.trainer.Trainer``) with the recipe's overrides; at the checkpoints (default 1/8,
1/4, 1/2 and all of the budget) it stops to measure ``val`` and ``test`` (``bench.learn_eval``) and saves
``last``. Wall and CPU time exclude those measurements. An interrupted run continues from its last checkpoint
when the same command is given again; a finished one is not rerun.

Outputs in ``--out``: ``<recipe>-b<budget>-s<seed>.json`` per run, and after every run (or with ``report``)
``curves.png`` and ``table.md`` over every run found there (``bench.learn_report``). Run folders (checkpoints,
per-checkpoint scores.json / report.html) go to ``--runs``, built datasets to ``--data-root``.
Exit codes: 0 done, 2 bad arguments or input, 3 non-finite loss.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import math
import platform
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from bench.recipes import BASE_PRESET, RECIPES, recipe_overrides
from hrm_fast import __version__
from hrm_fast.config import Config, ConfigError, config_to_dict, load_config
from hrm_fast.eval.submission import write_json_atomic
from hrm_fast.flops import format_flops, step_flops
from hrm_fast.training import train_state as TS
from hrm_fast.training.trainer import Trainer

DEFAULT_POINTS = (0.125, 0.25, 0.5, 1.0)
SPLITS = ("val", "test")
FORMAT = "hrm_fast-learn/1"
# Training-loop settings the benchmark owns (the recipe cannot change what is measured or where it goes).
FIXED = ("device=cpu", "compile=false", "cuda_graph=false", "log.tensorboard=false", "log.wandb=off",
         "eval.every=100000000", "checkpoint.every=100000000", "eval.arc_at_end=false", "profile.steps=0")


def run_name(recipe: str, budget: float, seed: int) -> str:
    return f"{recipe}-b{budget:.0e}-s{seed}".replace("+", "")


def data_path(config: Config, root: Path) -> str:
    """A folder per distinct data build, named after what shapes it (so recipes share builds)."""
    dc = config.data.model_dump(mode="json", exclude={"path", "workers"})
    digest = hashlib.sha1(json.dumps(dc, sort_keys=True).encode()).hexdigest()[:8]
    return str(root / f"g{config.data.max_grid_size}-aug{config.data.num_aug}-{digest}")


def checkpoint_steps(total_steps: int, points: tuple[float, ...]) -> list[int]:
    """Optimizer steps at which to measure: round(fraction x total), at least 1, ascending, distinct."""
    return sorted({max(1, round(f * total_steps)) for f in points})


def resolve_config(recipe: str, budget: float, seed: int, extra: list[str], runs: Path, data_root: Path,
                   points: tuple[float, ...]) -> tuple[Config, list[str], int, list[int]]:
    """(config, overrides applied, total steps, checkpoint steps) for one benchmark run."""
    overrides = [*recipe_overrides(recipe), *extra]
    probe = load_config(BASE_PRESET, [*overrides, *FIXED])
    per_step = step_flops(probe)
    total = max(1, math.floor(budget / per_step))
    run_dir = runs / run_name(recipe, budget, seed)
    fixed = [*FIXED, f"train.seed={seed}", f"train.max_steps={total}", "train.epochs=null",
             f"data.path={data_path(probe, data_root)}", f"run.dir={run_dir}", "run.resume=auto"]
    return load_config(BASE_PRESET, [*overrides, *fixed]), overrides, total, checkpoint_steps(total, points)


@contextmanager
def _locked(path: Path):
    """An exclusive file lock (two benchmark runs must not build the same dataset at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class CurveTrainer(Trainer):
    """The trainer, stopping at ``points`` (optimizer steps) to measure and to save ``last``."""

    def __init__(self, config: Config, dist: Any, points: list[int], record: dict[str, Any], out_json: Path,
                 views: str | int = "all") -> None:
        super().__init__(config, dist)
        self.points, self.record, self.out_json, self.views = set(points), record, out_json, views
        done = [p for p in record["points"] if p["step"] <= self.step]
        record["points"] = done  # points after the resumed checkpoint are measured again
        self.prior_wall = done[-1]["wall_s"] if done else 0.0
        self.prior_cpu = done[-1]["cpu_s"] if done else 0.0
        self.t_wall, self.t_cpu, self.aside_wall, self.aside_cpu = (time.perf_counter(), time.process_time(),
                                                                    0.0, 0.0)

    def train(self) -> int:
        # resumed from the checkpoint of a point whose measurement was not written (killed in between)
        if self.step in self.points and not any(p["step"] == self.step for p in self.record["points"]):
            self.measure()
        return super().train()

    def evaluate(self) -> dict[str, float]:
        """No end-of-run validation pass: the benchmark measures ``val`` itself at its points."""
        return {}

    def train_step(self, batch_iter: Any) -> None:
        super().train_step(batch_iter)
        if self.step in self.points:
            self.measure()

    def measure(self) -> None:
        from bench.learn_eval import measure_split

        wall = self.prior_wall + time.perf_counter() - self.t_wall - self.aside_wall
        cpu = self.prior_cpu + time.process_time() - self.t_cpu - self.aside_cpu
        w0, c0 = time.perf_counter(), time.process_time()
        rng = TS.rng_state(self.device)  # measuring must not change the training trajectory
        point: dict[str, Any] = {"step": self.step, "flops": self.step * self.record["step_flops"],
                                 "fraction": self.step / self.total_steps, "wall_s": wall, "cpu_s": cpu}
        for split in SPLITS:
            point[split] = measure_split(self.model, self.cfg, self.dist, split,
                                         self.run_dir / f"eval-{split}-step{self.step}", self.views)
        TS.set_rng_state(rng, self.device)
        self.save("last")
        point["measure_wall_s"] = time.perf_counter() - w0
        self.record["points"] = [*self.record["points"], point]
        self.record["finished"] = self.step == self.total_steps
        self.record["written_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        write_json_atomic(self.out_json, self.record, indent=1)
        test = point["test"]
        self._say(f"[bench.learn] step {self.step}/{self.total_steps} ({format_flops(point['flops'])}, "
                  f"{wall / 60:.1f} min): test arc_prize@2 {test['arc_prize@2']:.4f}, changed-cell "
                  f"{test['changed_cell_accuracy']:.4f}, token {test['token_accuracy']:.4f}; val changed-cell "
                  f"{point['val']['changed_cell_accuracy']:.4f}")
        self.aside_wall += time.perf_counter() - w0
        self.aside_cpu += time.process_time() - c0


def run(args: argparse.Namespace) -> int:
    """One benchmark run; returns the exit code."""
    from hrm_fast.data.sources import DataError
    from hrm_fast.distributed import DistInfo

    torch.set_num_threads(1)
    points = tuple(args.points)
    try:
        config, overrides, total, steps = resolve_config(args.recipe, args.budget, args.seed, args.set,
                                                         Path(args.runs), Path(args.data_root), points)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out_json = out / f"{run_name(args.recipe, args.budget, args.seed)}.json"
    record: dict[str, Any] = {
        "format": FORMAT, "recipe": args.recipe, "seed": args.seed, "budget": args.budget,
        "overrides": overrides, "extra_overrides": list(args.set), "step_flops": step_flops(config),
        "total_steps": total, "checkpoint_steps": steps, "views": args.views,
        "config": config_to_dict(config), "points": [],
        "finished": False, "hrm_fast": __version__, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "host": platform.node(), "machine": platform.processor() or platform.machine(),
    }
    if out_json.exists():
        try:
            old = json.loads(out_json.read_text())
        except (OSError, json.JSONDecodeError) as err:
            print(f"error: {out_json}: cannot read ({err}); delete it to start this run again", file=sys.stderr)
            return 2
        if old.get("config") != record["config"]:
            print(f"error: {out_json} holds a run with a different config; delete it (and {config.run.dir}) to "
                  "start again", file=sys.stderr)
            return 2
        if old.get("finished"):
            print(f"{out_json}: already finished (delete it to run again)")
            return 0
        record["points"] = old.get("points", [])
    print(f"[bench.learn] {args.recipe} seed {args.seed}: {format_flops(args.budget)} budget = {total} steps x "
          f"{format_flops(record['step_flops'])}; measuring at steps {steps}; data {config.data.path}", flush=True)
    dist = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    with _locked(Path(config.data.path + ".lock")):
        try:
            trainer = CurveTrainer(config, dist, steps, record, out_json, args.views)
        except (ConfigError, DataError, FileNotFoundError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    t0 = time.perf_counter()
    code = trainer.train()
    if code == 0 and trainer.step == trainer.total_steps:
        print(f"[bench.learn] done in {(time.perf_counter() - t0) / 60:.1f} min: {out_json}", flush=True)
    return code


def parse_budget(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"budget {text!r} is not a number of FLOPs (e.g. 1e14)") from None
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"budget {text!r} must be a positive number of FLOPs")
    return value


def parse_points(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--points {text!r}: comma-separated fractions, e.g. 0.25,0.5,1") from None
    if not values or any(not 0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"--points {text!r}: every fraction must be in (0, 1]")
    return values


def parse_views(text: str) -> str | int:
    if text == "all":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"--views {text!r}: 'all' or an integer >= 1")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.learn", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="recipes:\n" + "\n".join(f"  {r.name}: {r.effect}" for r in RECIPES.values()))
    p.add_argument("command", nargs="?", choices=["run", "report"], default="run",
                   help="run (default): one benchmark run, then the report; report: only redraw curves and table")
    p.add_argument("--recipe", default="baseline", help=f"one of: {', '.join(RECIPES)}")
    p.add_argument("--budget", type=parse_budget, default=1e14, help="training FLOPs (default 1e14)")
    p.add_argument("--seed", type=int, default=0, help="training seed (train.seed)")
    p.add_argument("--out", default="runs/learn/results", help="result JSONs, curves.png, table.md")
    p.add_argument("--runs", default="runs/learn", help="run folders (checkpoints, per-checkpoint scores)")
    p.add_argument("--data-root", default="data/learn", help="built datasets, shared by runs")
    p.add_argument("--points", type=parse_points, default=list(DEFAULT_POINTS),
                   help="budget fractions to measure at (default 0.125,0.25,0.5,1)")
    p.add_argument("--views", type=parse_views, default="all",
                   help="augmented views per test input to vote over at each checkpoint: all (default) or N")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra config overrides after the recipe's (e.g. for a toy model in tests)")
    return p


def main(argv: list[str] | None = None) -> int:
    from bench.learn_report import write_report

    args = build_parser().parse_args(argv)
    code = run(args) if args.command == "run" else 0
    if code == 0:
        try:
            png, table = write_report(Path(args.out))
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"[bench.learn] report: {png}, {table}")
    return code


if __name__ == "__main__":
    sys.exit(main())
