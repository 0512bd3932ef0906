"""The learning benchmark (``python -m bench.learn``) at a toy budget: outputs, determinism, errors, metrics."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.learn_eval import CellCounts
from bench.recipes import RECIPES
from hrm_fast.config import load_config

ROOT = Path(__file__).resolve().parents[1]
# a toy model on 6x6 tasks: seconds per run
TOY = ["data.max_grid_size=6", "data.num_aug=2", "data.subset=8", "data.val_fraction=0.25", "model.hidden_size=32",
       "model.num_heads=2", "model.H_layers=1", "model.L_layers=1", "model.H_cycles=1", "model.L_cycles=1",
       "model.halt_max_steps=2", "model.puzzle_emb_ndim=32", "train.global_batch_size=8"]
BUDGET = "2e9"  # 13 steps of the toy model


def _bench(args: list[str], cwd: Path, **extra_env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra_env}
    return subprocess.run([sys.executable, "-m", "bench.learn", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def _toy_run(tmp: Path, out: str, runs: str, seed: int = 3, **env: str) -> subprocess.CompletedProcess:
    return _bench(["--recipe", "baseline", "--budget", BUDGET, "--seed", str(seed), "--out", out, "--runs", runs,
                   "--data-root", "data", "--points", "0.5,1", "--set", *TOY], tmp, **env)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same toy run twice (same seed) into out1/ and out2/, sharing one dataset build."""
    tmp = tmp_path_factory.mktemp("learn")
    for i in (1, 2):
        proc = _toy_run(tmp, f"out{i}", f"runs{i}")
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return tmp


def test_outputs_have_the_promised_structure(two_runs: Path) -> None:
    out = two_runs / "out1"
    rec = json.loads((out / "baseline-b2e09-s3.json").read_text())
    for key in ("recipe", "seed", "budget", "config", "overrides", "step_flops", "total_steps", "points", "finished"):
        assert key in rec, key
    assert rec["recipe"] == "baseline" and rec["seed"] == 3 and rec["budget"] == 2e9 and rec["finished"]
    assert rec["config"]["train"]["seed"] == 3 and rec["config"]["data"]["max_grid_size"] == 6
    # the budget buys floor(budget / step FLOPs) steps, measured at half and at the end
    assert rec["total_steps"] == math.floor(2e9 / rec["step_flops"])
    assert [p["step"] for p in rec["points"]] == [round(rec["total_steps"] / 2), rec["total_steps"]]
    for p in rec["points"]:
        assert p["flops"] == pytest.approx(p["step"] * rec["step_flops"])
        assert p["wall_s"] > 0 and p["cpu_s"] > 0
        for split in ("val", "test"):
            m = p[split]
            for key in ("arc_prize@1", "arc_prize@2", "exact_accuracy", "token_accuracy", "changed_cell_accuracy",
                        "lm_loss"):
                assert math.isfinite(m[key]), (split, key)
            assert 0 <= m["arc_prize@1"] <= m["arc_prize@2"] <= 1
            assert m["views"] > 0 and m["test_outputs"] > 0
    assert rec["points"][0]["wall_s"] < rec["points"][1]["wall_s"]
    png = (out / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    table = (out / "table.md").read_text()
    assert "| recipe | budget |" in table and table.count("| baseline | 2e+09 |") == 2


def test_same_seed_gives_the_same_curve(two_runs: Path) -> None:
    a = json.loads((two_runs / "out1" / "baseline-b2e09-s3.json").read_text())
    b = json.loads((two_runs / "out2" / "baseline-b2e09-s3.json").read_text())
    assert len(a["points"]) == len(b["points"]) == 2
    for pa, pb in zip(a["points"], b["points"]):
        assert pa["step"] == pb["step"]
        for split in ("val", "test"):
            for key, value in pa[split].items():
                assert value == pytest.approx(pb[split][key], rel=1e-5, abs=1e-6), (split, key)


def test_a_killed_run_continues_to_the_same_curve(two_runs: Path) -> None:
    # SIGKILL while the second point's checkpoint is put in place: the JSON holds the first point only
    proc = _toy_run(two_runs, "out3", "runs3", HRM_FAST_TEST_KILL_IN_SAVE="2")
    assert proc.returncode != 0
    partial = json.loads((two_runs / "out3" / "baseline-b2e09-s3.json").read_text())
    assert not partial["finished"] and len(partial["points"]) == 1
    proc = _toy_run(two_runs, "out3", "runs3")
    assert proc.returncode == 0 and "resumed from" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    resumed = json.loads((two_runs / "out3" / "baseline-b2e09-s3.json").read_text())
    straight = json.loads((two_runs / "out1" / "baseline-b2e09-s3.json").read_text())
    assert resumed["finished"] and [p["step"] for p in resumed["points"]] == [p["step"] for p in straight["points"]]
    for split in ("val", "test"):
        for key, value in straight["points"][-1][split].items():
            assert resumed["points"][-1][split][key] == pytest.approx(value, rel=1e-5, abs=1e-6), (split, key)


def test_a_finished_run_is_not_rerun_and_report_redraws(two_runs: Path) -> None:
    proc = _toy_run(two_runs, "out1", "runs1")
    assert proc.returncode == 0 and "already finished" in proc.stdout, proc.stderr
    (two_runs / "out1" / "table.md").unlink()
    proc = _bench(["report", "--out", "out1"], two_runs)
    assert proc.returncode == 0, proc.stderr
    assert (two_runs / "out1" / "table.md").is_file()


@pytest.mark.parametrize("args, needle", [
    (["--recipe", "nope"], "unknown recipe 'nope'"),
    (["--budget", "-1"], "must be a positive number"),
    (["--set", "model.hiden_size=3"], "hiden_size"),
])
def test_bad_input_is_one_clear_line_and_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    proc = _bench([*args, "--out", "out"], tmp_path)
    assert proc.returncode == 2 and needle in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()


def test_report_without_runs_fails_clearly(tmp_path: Path) -> None:
    proc = _bench(["report", "--out", str(tmp_path)], tmp_path)
    assert proc.returncode == 2 and "no learning-benchmark run JSONs" in proc.stderr


def test_changed_cells_exclude_copied_cells() -> None:
    # canvas of 4 cells; labels 0 = not labelled. Cells 0, 1 equal the input (unchanged), 2 changed, 3 unlabelled.
    inputs = np.array([[5, 6, 7, 1]], dtype=np.uint8)
    labels = np.array([[5, 6, 3, 0]], dtype=np.uint8)
    copy = CellCounts()
    copy.add(inputs, inputs, labels)
    m = copy.metrics()
    assert m["changed_cell_accuracy"] == 0.0 and m["token_accuracy"] == pytest.approx(2 / 3)
    assert m["copy_token_accuracy"] == pytest.approx(2 / 3) and m["exact_accuracy"] == 0.0
    black = CellCounts()  # colour 0 is token 2: all-black predictions get cell 2 (changed) right
    black.add(np.full((1, 4), 2, dtype=np.uint8), inputs, np.array([[5, 6, 2, 0]], dtype=np.uint8))
    assert black.metrics()["changed_cell_accuracy"] == 1.0 == black.metrics()["black_changed_cell_accuracy"]
    assert black.metrics()["black_token_accuracy"] == pytest.approx(1 / 3)
    perfect = CellCounts()
    perfect.add(np.array([[5, 6, 3, 9]], dtype=np.uint8), inputs, labels)
    assert perfect.metrics()["changed_cell_accuracy"] == 1.0 and perfect.metrics()["exact_accuracy"] == 1.0


def test_every_recipe_is_a_valid_config() -> None:
    for recipe in RECIPES.values():
        load_config("cpu-tiny", list(recipe.overrides))
        assert recipe.source and recipe.effect
