"""``python -m train.evaluate checkpoint=PATH [key=value ...]``: ARC scoring of a checkpoint.

Runs every augmented view of every test input of the dataset's ``test`` split (or ``split=val``),
crops each prediction at the EOS border, maps it back with the exact inverse augmentation, votes per
(task, test input) -- vote count first, mean sigmoid(q_halt) as tie-break -- and writes into ``out``:
``scores.json`` (Kaggle / ARC Prize / all-or-nothing at pass@1, 2, 10, 100, 1000 where enough views
exist), ``submission.json`` (Kaggle format) and ``report.html`` (self-contained).

Keys: ``checkpoint=DIR`` (ours; a run folder means its ``best``, else ``last``) or ``checkpoint=FILE
hrm_config=all_config.yaml`` (an original HRM checkpoint, converted on the fly); ``split=test|val``;
``out=DIR`` (default ``<checkpoint>-eval-<split>``, beside the checkpoint); ``progress=true|false``;
and config overrides on top of the checkpoint's config: ``data.path=...``, ``eval.views=all|N``, ``eval.batch_size=N``,
``eval.ks=[1,2,10]``, ``device=auto|cpu|cuda``, ``model.ops=...``, ``model.forward_dtype=...``.
Exit code 2 on bad input.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from hrm_fast.config import Config, ConfigError, config_from_dict, config_to_dict, parse_override
from hrm_fast.eval.predict import check_compatible, predict_views
from hrm_fast.eval.results import decode_into, finalize, flat_metrics
from hrm_fast.eval.views import EvalDataError, load_eval_split
from hrm_fast.eval.vote import VoteBox

# Config overrides that may differ from the checkpoint's training config (the architecture may not).
ALLOWED_MODEL_OVERRIDES = ("ops", "forward_dtype")
AMP = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is available")
    return torch.device(name)


def evaluate_checkpoint(
    model: torch.nn.Module,
    config: Config,
    split: str,
    out_dir: str | Path,
    views: str | int | None = None,
    *,
    batch_size: int | None = None,
    device: torch.device | None = None,
    metrics_path: str | Path | None = None,
    step: int | None = None,
    facts: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score ``model`` on ``split`` of ``config.data.path``; write scores.json, submission.json, report.html
    into ``out_dir`` and return the scores dict (as in scores.json).

    views: ``"all"``, an int (at most N views per test input), or None for ``config.eval.views``.
    batch_size: None = ``config.eval.batch_size``. device: None = the model's device.
    metrics_path: append ``{"step", "time", "eval/<scoring>@<k>": ...}`` as one line to this JSONL file
    (a run's ``metrics.jsonl``). Call on one process only (rank 0); the model is left in its previous
    train/eval mode.
    """
    t0 = time.perf_counter()
    views = config.eval.views if views is None else views
    batch_size = batch_size or config.eval.batch_size
    device = device or next(model.parameters()).device
    amp_dtype = AMP[config.model.forward_dtype] if device.type == "cuda" else None
    data = load_eval_split(config.data.path, split)
    check_compatible(model, data)
    rows = data.select(views)
    votes = VoteBox()
    for chunk, tokens, q in predict_views(
        model, data, rows, batch_size, config.model.halt_max_steps, device, amp_dtype, progress
    ):
        decode_into(votes, tokens, [data.task_ids[r] for r in chunk], [data.augs[r] for r in chunk],
                    data.test_index[chunk], q, data.canvas)  # fmt: skip
    seconds = time.perf_counter() - t0
    all_facts: dict[str, Any] = {
        "data": f"{config.data.path} ({split} split, {data.canvas}x{data.canvas} canvas)",
        "views setting": str(views),
        "model": f"{sum(p.numel() for p in model.parameters()):,} parameters, halt_max_steps "
        f"{config.model.halt_max_steps}, {config.model.forward_dtype}",
        "device": f"{device} (autocast {amp_dtype})" if amp_dtype else str(device),
        "seconds": round(seconds, 2),
        "views per second": round(len(rows) / seconds, 1) if seconds > 0 else None,
        **({"step": step} if step is not None else {}),
        **(facts or {}),
    }
    if data.tasks_rebuilt:
        all_facts["tasks"] = "rebuilt from the rows (no tasks.json): test inputs may be numbered differently"
    scores = finalize(votes, data.tasks, out_dir, config.eval.ks, facts=all_facts,
                      title=f"hrm_fast evaluation: {all_facts.get('checkpoint', split)}")  # fmt: skip
    if metrics_path is not None:
        record = {"step": step, "time": round(time.time(), 3), **flat_metrics(scores)}
        with open(metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
    return scores


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


def load_for_eval(own: Mapping[str, str], device: torch.device) -> tuple[torch.nn.Module, Config, Path]:
    """(model on ``device``, its config, the checkpoint path as given)."""
    from hrm_fast.checkpoint import import_hrm, load_checkpoint

    ckpt = Path(own["checkpoint"])
    if ckpt.is_file():
        if "hrm_config" not in own:
            raise ConfigError(f"{ckpt} is a file (original HRM checkpoint?): pass its all_config.yaml as hrm_config=")
        with tempfile.TemporaryDirectory() as tmp:
            import_hrm(ckpt, own["hrm_config"], Path(tmp) / "ckpt")
            model, config = load_checkpoint(Path(tmp) / "ckpt", device=device)
        return model, config, ckpt
    if ckpt.is_dir() and not (ckpt / "model.safetensors").exists():
        # A run folder: evaluate its best checkpoint (else the last one).
        for name in ("best", "last"):
            if (ckpt / name / "model.safetensors").exists():
                ckpt = ckpt / name
                break
    model, config = load_checkpoint(ckpt, device=device)
    return model, config, ckpt


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    from hrm_fast.checkpoint import CheckpointError

    try:
        own, overrides = parse_args(argv)
        split = own.get("split", "test")
        # Resolve the device from the overrides first: the model is loaded straight onto it.
        device_arg = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == "device"), "auto")
        device = resolve_device(device_arg)
        model, config, ckpt = load_for_eval(own, device)
        config = apply_overrides(config, overrides)
        # Beside the checkpoint, not inside it: a later save of `best` replaces the checkpoint folder.
        out = Path(own.get("out") or f"{ckpt}-eval-{split}")
        progress = own.get("progress", "true").lower() not in ("false", "0", "no", "off")
        scores = evaluate_checkpoint(model, config, split, out, facts={"checkpoint": str(ckpt)}, progress=progress)
    except (ConfigError, CheckpointError, EvalDataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{ckpt} on {config.data.path}/{split}: {scores['tasks']} tasks, {scores['test_outputs']} test outputs, "
          f"{scores['views']} views in {scores['seconds']} s")  # fmt: skip
    ks = scores["ks"]
    print("  scoring          " + "".join(f"{'pass@' + str(k):>10}" for k in ks))
    for s in ("kaggle", "arc_prize", "all_or_nothing"):
        print(f"  {s:<16} " + "".join(f"{100 * scores[s][f'pass@{k}']:>9.2f}%" for k in ks))
    print(f"wrote {out}/scores.json, submission.json, report.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
