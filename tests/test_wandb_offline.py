"""``log.wandb=offline`` for real: a tiny training writes an offline wandb run (no network) whose history holds the
same metrics as metrics.jsonl; without ``log.wandb`` wandb is never imported."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("wandb")
ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.hidden_size=32", "model.num_heads=2", "model.H_layers=1", "model.L_layers=1", "model.H_cycles=1",
        "model.L_cycles=1", "model.halt_max_steps=2", "model.puzzle_emb_ndim=32", "preset=cpu-tiny", "device=cpu",
        "train.global_batch_size=8", "train.lr_warmup_steps=2", "log.every=1", "log.tensorboard=false",
        "eval.every=2", "eval.batch_size=16", "train.max_steps=4"]  # fmt: skip


def _env(tmp: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "WANDB_BASE_URL": "http://127.0.0.1:9"}  # nothing listens there: any network use would fail
    for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        env[var] = str(tmp / var.lower())
        (tmp / var.lower()).mkdir(exist_ok=True)
    env.pop("WANDB_API_KEY", None)
    return env


def _history(wandb_file: Path, env: dict[str, str]) -> tuple[dict[int, dict], list[dict]]:
    """({step: logged metrics}, run records) of an offline .wandb file, read with wandb's own reader."""
    exe = shutil.which("wandb", path=os.path.dirname(sys.executable)) or shutil.which("wandb")
    res = subprocess.run([exe, "leet", "inspect", "--json", str(wandb_file)], capture_output=True, text=True,
                         env=env, timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    records = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
    history = {}
    for r in records:
        if r["type"] == "history":
            item = r["history"]["item"]
            history.setdefault(int(item["_step"]), {}).update(item)
    return history, [r for r in records if r["type"] == "run"]


def test_offline_wandb_run_holds_the_metrics(tmp_path):
    from hrm_fast.data.build import build_dataset

    data = tmp_path / "data"
    build_dataset(data, ["arc-agi-1"], ["arc-agi-1"], num_aug=1, max_grid_size=6, val_fraction=0.2, progress=False)
    run = tmp_path / "run"
    env = _env(tmp_path)
    res = subprocess.run([sys.executable, "-m", "train.run", *TINY, f"data.path={data}", f"run.dir={run}",
                          "log.wandb=offline"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    offline = sorted((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1, list((run / "wandb").iterdir()) if (run / "wandb").exists() else "no wandb folder"
    wandb_file = next(offline[0].glob("run-*.wandb"))
    history, runs = _history(wandb_file, env)
    jsonl = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert sorted(history) == [1, 2, 3, 4] and len(jsonl) >= 6  # 4 train lines + 2 validation lines
    for rec in jsonl:
        logged = history[rec["step"]]
        for key, value in rec.items():
            if key in ("step", "time"):
                continue
            if isinstance(value, str):  # non-finite, "nan" in metrics.jsonl
                assert str(logged[key]).lower() == value.lower(), key
            else:
                assert logged[key] == pytest.approx(value, rel=1e-12), key
    assert "val/exact_accuracy" in history[2] and "train/lm_loss" in history[4]
    assert runs and '"hidden_size": 32' in json.dumps(runs[0]["run"]["config"]).replace('{"value": 32}', "32")


def test_wandb_is_not_imported_unless_asked(tmp_path):
    code = ("import sys; from hrm_fast.training.runlog import RunLogger; import hrm_fast.training.trainer; "
            f"RunLogger({str(tmp_path)!r}, {{}}, tensorboard=False).close(); print('wandb' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "False"
