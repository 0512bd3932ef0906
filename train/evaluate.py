"""``python -m train.evaluate checkpoint=PATH [key=value ...]``: ARC scoring of a checkpoint.

Runs every augmented view of every test input of the dataset's ``test`` split (or ``split=val``),
crops each prediction at the EOS border, maps it back with the exact inverse augmentation, votes per
(task, test input) -- vote count first, mean sigmoid(q_halt) as tie-break -- and writes into ``out``:
``scores.json`` (Kaggle / ARC Prize / all-or-nothing at pass@1, 2, 10, 100, 1000 where enough views
exist, also by source, concept, grid size and shape), ``tasks.csv`` (one line per test output),
``submission.json`` (Kaggle format) and ``report.html`` (self-contained).

Keys: ``checkpoint=DIR`` (ours; a run folder means its ``best``, else ``last``) or ``checkpoint=FILE
hrm_config=all_config.yaml`` (an original HRM checkpoint, converted on the fly); ``split=test|val``;
``out=DIR`` (default ``<checkpoint>-eval-<split>``, beside the checkpoint; checked to be writable before anything
is computed; ``scores.json`` is written last); ``progress=true|false``;
and config overrides on top of the checkpoint's config: ``data.path=...``, ``eval.views=all|N``, ``eval.batch_size=N``,
``eval.ks=[1,2,10]``, ``device=auto|cpu|cuda``, ``model.ops=...``, ``model.forward_dtype=...``.
Exit code 2 on bad input and on filesystem errors (one line naming the path).

It prints the checkpoint's training step (and run). On another dataset build than the checkpoint's (``data.path=``,
told apart by the dataset fingerprint) puzzles are mapped by name through ``identifiers.json``; views of puzzles the
checkpoint does not know are not run (``unknown_puzzles`` / ``unknown_puzzle_views`` in scores.json, marked in the
report).

Under ``torchrun --standalone --nproc-per-node N -m train.evaluate ...`` the views are split over the N ranks
(``eval.batch_size`` counts all ranks); rank 0 gathers the votes and writes the same files as one process.
The pipeline itself is ``hrm_fast.eval.pipeline.evaluate_checkpoint``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from hrm_fast import distributed as D
from hrm_fast.config import Config, ConfigError, config_from_dict, config_to_dict, parse_override
from hrm_fast.data.sources import DataError
from hrm_fast.eval.pipeline import evaluate_checkpoint, load_for_eval
from hrm_fast.eval.views import EvalDataError
from hrm_fast.fs import FsError, os_error_line
from hrm_fast.runs.catalog import checkpoint_step, run_of

# Config overrides that may differ from the checkpoint's training config (the architecture may not).
ALLOWED_MODEL_OVERRIDES = ("ops", "forward_dtype")


def parse_args(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Split ``key=value`` arguments into evaluate's own keys and config overrides."""
    own_keys = {"checkpoint", "hrm_config", "split", "out", "progress"}
    own: dict[str, str] = {}
    overrides: list[str] = []
    for arg in argv:
        if "=" not in arg:
            raise ConfigError(f"argument {arg!r} is not of the form key=value (see python -m train.evaluate --help)")
        key, value = arg.split("=", 1)
        key = key.strip()
        if key in own_keys:
            own[key] = value
        else:
            path, _ = parse_override(arg)
            if path[0] == "model" and (len(path) != 2 or path[1] not in ALLOWED_MODEL_OVERRIDES):
                raise ConfigError(
                    f"override {arg!r}: the architecture comes from the checkpoint; only "
                    + ", ".join(f"model.{k}" for k in ALLOWED_MODEL_OVERRIDES) + " may change"
                )
            overrides.append(arg)
    if "checkpoint" not in own:
        raise ConfigError("checkpoint=PATH is required")
    if own.get("split", "test") not in ("test", "val"):
        raise ConfigError(f"split={own['split']!r}: expected test or val")
    return own, overrides


def apply_overrides(config: Config, overrides: Sequence[str]) -> Config:
    """The checkpoint's config with ``key=value`` overrides applied (validated again)."""
    data = config_to_dict(config)
    for item in overrides:
        keys, value = parse_override(item)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return config_from_dict(data)


def setup_dist(device_arg: str) -> D.DistInfo:
    """The process group under torchrun (none otherwise) and this rank's device; a device that cannot be
    had (``device=cuda`` without CUDA, an unknown name) is a ConfigError."""
    try:
        D.resolve_device(device_arg, int(os.environ.get("LOCAL_RANK", "0")))
    except (RuntimeError, ValueError) as e:
        raise ConfigError(str(e)) from None
    return D.setup(device_arg)


def say(dist: D.DistInfo | None, line: str) -> None:
    """Print a note on rank 0 only."""
    if dist is None or dist.is_main:
        print(line, flush=True)


def fail(dist: D.DistInfo | None, message: str) -> int:
    """Print the one-line error (rank-prefixed under torchrun); returns exit code 2."""
    where = f"[rank {dist.rank}] " if dist is not None and dist.enabled else ""
    print(f"{where}error: {message}", file=sys.stderr)
    return 2


def describe_checkpoint(ckpt: Path) -> tuple[int | None, str]:
    """(training step of checkpoint folder ``ckpt`` or None, a line saying which step and run it is)."""
    step = checkpoint_step(ckpt)
    about = f"checkpoint {ckpt}: " + (f"step {step}" if step is not None else "training step unknown (no state.pt)")
    run = run_of(ckpt)
    if run is not None:
        about += f", run {run}"
        last = checkpoint_step(run / "last") if ckpt.name != "last" else None
        if last is not None and last != step:
            about += f" (its last checkpoint is at step {last})"
    return step, about


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    from hrm_fast.checkpoint import CheckpointError, read_dataset_identity

    dist: D.DistInfo | None = None
    out: Path | None = None
    try:
        own, overrides = parse_args(argv)
        split = own.get("split", "test")
        # Resolve the device from the overrides first: the model is loaded straight onto it.
        device_arg = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == "device"), "auto")
        dist = setup_dist(device_arg)
        model, config, ckpt = load_for_eval(own["checkpoint"], dist.device, own.get("hrm_config"))
        config = apply_overrides(config, overrides)
        # Beside the checkpoint, not inside it: a later save of `best` replaces the checkpoint folder.
        out = Path(own.get("out") or f"{ckpt}-eval-{split}")
        progress = own.get("progress", "true").lower() not in ("false", "0", "no", "off")
        facts = {"checkpoint": str(ckpt), "run": str(run_of(ckpt) or "-")}
        trained_on = None
        if ckpt.is_dir():
            trained_on = read_dataset_identity(ckpt)
            step, about = describe_checkpoint(ckpt)
            facts.update({"step": step} if step is not None else {})
            say(dist, about)
            if trained_on is None:
                say(dist, f"warning: {ckpt} records no dataset identity (written by an older hrm_fast): puzzle "
                          f"identifiers of {config.data.path} are used as they are, unchecked")  # fmt: skip
        scores = evaluate_checkpoint(model, config, split, out, facts=facts, progress=progress, dist=dist,
                                     trained_on=trained_on, say=lambda line: say(dist, line))  # fmt: skip
    except OSError as e:
        return fail(dist, f"cannot write the results: {os_error_line(e, out)}" if out else os_error_line(e))
    except (ConfigError, CheckpointError, EvalDataError, DataError, FsError, ValueError) as e:
        return fail(dist, str(e))
    finally:
        if dist is not None:
            D.teardown(dist)
    if not dist.is_main:
        return 0
    print(f"{ckpt} on {config.data.path}/{split}: {scores['tasks']} tasks, {scores['test_outputs']} test outputs, "
          f"{scores['views']} views in {scores['seconds']} s")  # fmt: skip
    ks = scores["ks"]
    print("  scoring          " + "".join(f"{'pass@' + str(k):>10}" for k in ks))
    for s in ("kaggle", "arc_prize", "all_or_nothing"):
        print(f"  {s:<16} " + "".join(f"{100 * scores[s][f'pass@{k}']:>9.2f}%" for k in ks))
    print(f"wrote {out}/scores.json, tasks.csv, submission.json, report.html")
    return 0


if __name__ == "__main__":
    D.exit_worker(main())
