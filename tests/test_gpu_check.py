"""bench/gpu_check.py's orchestration: time boxes, failures recorded, the next stage always runs, the outputs.

The stages themselves run in CI as ``bash bench/gpu_check.sh --dry`` (every stage at toy size on CPU);
here fake stage processes keep it to seconds.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from bench import gpu_check


def fake_stages(behaviour: dict[str, str]):
    """A ``command`` for :func:`gpu_check.orchestrate`: each stage's child hangs, crashes, fails or passes."""

    def command(name: str, part: Path, deadline: float, dry: bool) -> list[str]:
        kind = behaviour[name]
        record = {"checks": [{"name": f"{name} check", "ok": kind != "fail"}], "results": {"deadline": deadline},
                  "notes": []}  # fmt: skip
        code = f"import json, pathlib, sys, time; pathlib.Path({str(part)!r}).write_text({json.dumps(record)!r}); "
        code += {"hang": "time.sleep(600)", "crash": "sys.exit(1)", "fail": "pass", "ok": "pass"}[kind]
        return [sys.executable, "-c", code]

    return command


def test_a_hanging_stage_is_killed_at_its_time_box_and_the_next_stages_run(tmp_path):
    t0 = time.time()
    report = gpu_check.orchestrate(["env", "act_op", "gpu_tests"], tmp_path, 60.0, False, {"build": "ok"},
                                   command=fake_stages({"env": "hang", "act_op": "crash", "gpu_tests": "fail"}))
    assert time.time() - t0 < 30
    stages = report["stages"]
    assert [stages[s]["status"] for s in ("env", "act_op", "gpu_tests")] == ["timeout", "crashed", "failed"]
    assert stages["env"]["checks"], "what a killed stage recorded before its time box is kept"
    # env's time box is its weight's share of the budget; the later stages share what env left
    assert stages["env"]["time_box_s"] <= 60 * gpu_check.STAGES["env"] / sum(
        gpu_check.STAGES[s] for s in ("env", "act_op", "gpu_tests")) + 1
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert saved["stages"]["gpu_tests"]["status"] == "failed" and saved["setup"] == {"build": "ok"}
    md = (tmp_path / "gpu_check.md").read_text()
    assert "| env | timeout |" in md and "gpu_tests check" in md  # the failed check is listed
    assert "=== act_op (crashed" in (tmp_path / "gpu_check.log").read_text()


def test_all_stages_ok_and_a_spent_budget_skips_the_rest(tmp_path):
    report = gpu_check.orchestrate(["env", "act_op"], tmp_path, 20.0, False, {},
                                   command=fake_stages({"env": "ok", "act_op": "ok"}))
    assert {s["status"] for s in report["stages"].values()} == {"ok"}
    report = gpu_check.orchestrate(["env", "act_op"], tmp_path, 1.0, False, {},
                                   command=fake_stages({"env": "ok", "act_op": "ok"}))
    assert report["stages"]["env"]["status"] == "skipped" and "budget" in report["stages"]["env"]["reason"]


def test_without_cuda_and_without_dry_it_stops_with_exit_2(tmp_path, capsys):
    if torch.cuda.is_available():
        return
    assert gpu_check.main(["--out", str(tmp_path)]) == 2
    assert "no CUDA device; use --dry" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
