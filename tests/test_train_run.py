"""End-to-end tests of ``python -m train.run`` on CPU (subprocesses, a tiny model on a tiny 6x6 ARC dataset).

- exact resume: SIGTERM mid-run, then ``run.resume=auto``, gives the uninterrupted run's losses and weights;
- a NaN injected into the loss stops the run naming the step, exit code 3, last good checkpoint kept;
- ``torchrun --nproc-per-node 2`` (gloo) keeps ranks identical and matches one process with the same global batch;
- a short run learns (loss falls; token accuracy beats always predicting the most frequent token).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torchrun_launch import failure_report, torchrun

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = [
    "model.hidden_size=32", "model.num_heads=2", "model.H_layers=1", "model.L_layers=1", "model.H_cycles=1",
    "model.L_cycles=1", "model.halt_max_steps=3", "model.puzzle_emb_ndim=32",
]
TINY_RUN = TINY_MODEL + [
    "preset=cpu-tiny", "device=cpu", "train.global_batch_size=8", "train.lr_warmup_steps=2", "log.every=1",
    "log.tensorboard=false", "eval.every=1000", "eval.batch_size=16", "train.grad_clip=1.0",
]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def _train_cmd(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "train.run", *args]


def _run(args: list[str], timeout: float = 180, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(_train_cmd(args), cwd=ROOT, env=_env(**env), capture_output=True, text=True,
                          timeout=timeout)


def _losses(run_dir: Path) -> dict[int, float]:
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "train/lm_loss" in rec:
            out[rec["step"]] = rec["train/lm_loss"]
    return out


def _weights(folder: Path, rank: int = 0) -> dict[str, torch.Tensor]:
    return load_file(str(folder / f"rank{rank}.safetensors"))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """ARC-AGI-1 tasks whose grids fit 6x6 (59 tasks), 3 augmentations, 20% of the tasks' test pairs held out."""
    from hrm_fast.data.build import build_dataset

    out = tmp_path_factory.mktemp("data") / "tiny6"
    build_dataset(out, ["arc-agi-1"], ["arc-agi-1"], num_aug=3, max_grid_size=6, val_fraction=0.2, progress=False)
    return out


STEPS = 12


@pytest.fixture(scope="session")
def reference_run(tiny_data, tmp_path_factory) -> tuple[Path, Path]:
    """An uninterrupted 12-step run (checkpoint every 3 steps): (run folder, folder of its final weights)."""
    base = tmp_path_factory.mktemp("reference")
    run, weights = base / "run", base / "weights"
    res = _run(TINY_RUN + [f"data.path={tiny_data}", f"train.max_steps={STEPS}", "checkpoint.every=3",
                           f"run.dir={run}"], HRM_FAST_TEST_DUMP_WEIGHTS=str(weights))
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(_losses(run)) == list(range(1, STEPS + 1))
    return run, weights


def _assert_same_run(run: Path, weights: Path, reference: tuple[Path, Path]) -> None:
    ref_run, ref_weights = reference
    assert _losses(run) == _losses(ref_run)  # exact: same floats, step for step
    got, want = _weights(weights), _weights(ref_weights)
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), k


def test_sigterm_then_resume_auto_continues_exactly(tiny_data, reference_run, tmp_path):
    run, weights = tmp_path / "run", tmp_path / "weights"
    args = TINY_RUN + [f"data.path={tiny_data}", f"train.max_steps={STEPS}", "checkpoint.every=3", f"run.dir={run}"]
    proc = subprocess.Popen(_train_cmd(args), cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 4:
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.01)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert "SIGTERM received" in err and "stopped by SIGTERM at step" in out
    stopped_at = int(out.split("stopped by SIGTERM at step ")[1].split(":")[0])
    assert 4 <= stopped_at < STEPS
    state = torch.load(run / "last" / "state.pt", weights_only=True)
    assert state["step"] == stopped_at

    res = _run(args + ["run.resume=auto"], HRM_FAST_TEST_DUMP_WEIGHTS=str(weights))
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resumed from {run / 'last'} at step {stopped_at}" in res.stdout
    _assert_same_run(run, weights, reference_run)


def test_muon_run_killed_then_resumed_continues_exactly(tiny_data, tmp_path):
    """train.matrix_optimizer=muon: the Muon momentum buffers are checkpointed, so a run SIGKILLed in step 5
    and resumed from its step-3 checkpoint ends with the uninterrupted run's losses and weights."""
    args = TINY_RUN + [f"data.path={tiny_data}", "train.max_steps=6", "checkpoint.every=3",
                       "train.matrix_optimizer=muon"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    res = _run(args + [f"run.dir={full}"], HRM_FAST_TEST_DUMP_WEIGHTS=str(tmp_path / "w_full"))
    assert res.returncode == 0, res.stderr[-3000:]
    state = torch.load(full / "last" / "state.pt", weights_only=True)
    assert len(state["optimizers"]) == 3 and state["optimizers"][2]["state"]  # sign-SGD, Adam, Muon
    res = _run(args + [f"run.dir={cut}"], HRM_FAST_TEST_KILL_AT="step5")
    assert res.returncode == -signal.SIGKILL
    res = _run(args + [f"run.dir={cut}", "run.resume=auto"], HRM_FAST_TEST_DUMP_WEIGHTS=str(tmp_path / "w_cut"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "at step 3" in res.stdout
    _assert_same_run(cut, tmp_path / "w_cut", (full, tmp_path / "w_full"))


def test_nan_in_the_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path):
    from hrm_fast.checkpoint import load_checkpoint, load_training_state

    run = tmp_path / "run"
    res = _run(TINY_RUN + [f"data.path={tiny_data}", "train.max_steps=10", "checkpoint.every=2", f"run.dir={run}"],
               HRM_FAST_INJECT_NAN_AT_STEP="5")
    assert res.returncode == 3, res.stderr[-3000:]
    assert "non-finite loss or gradient at step 5" in res.stderr
    assert f"{run / 'last'} (step 4)" in res.stderr
    assert load_training_state(run / "last")["step"] == 4
    model, _ = load_checkpoint(run / "last")
    assert all(torch.isfinite(t).all() for t in model.state_dict().values())
    assert max(_losses(run)) <= 5 and not (run / "best").exists()


@pytest.mark.parametrize("explore", ["0.0", "0.5"])
def test_torchrun_two_gloo_ranks_match_one_process(tiny_data, tmp_path, explore):
    args = TINY_RUN + [f"data.path={tiny_data}", "train.max_steps=6", "checkpoint.every=1000",
                       f"model.halt_exploration_prob={explore}", "model.halt_max_steps=3"]
    two_run, two_w = tmp_path / "two", tmp_path / "two_w"
    res = torchrun(2, ["-m", "train.run", *args, f"run.dir={two_run}"], cwd=ROOT,
                   env=_env(HRM_FAST_TEST_DUMP_WEIGHTS=str(two_w)), restore=[two_run, two_w])
    assert res.returncode == 0, failure_report(res)
    assert "2 rank(s), micro-batch 4" in res.stdout
    assert re.fullmatch(r"pid \d+ on host .+, since .+ UTC\n", (two_run / ".lock").read_text())  # one holder: rank 0
    one_run, one_w = tmp_path / "one", tmp_path / "one_w"
    res = _run(args + [f"run.dir={one_run}"], HRM_FAST_TEST_DUMP_WEIGHTS=str(one_w))
    assert res.returncode == 0, res.stderr[-3000:]

    rank0, rank1 = _weights(two_w, 0), _weights(two_w, 1)
    for k in rank0:  # every rank applies the same all-reduced update
        assert torch.equal(rank0[k], rank1[k]), k
    two, one = _losses(two_run), _losses(one_run)
    assert sorted(two) == sorted(one) == list(range(1, 7))
    np.testing.assert_allclose([two[s] for s in sorted(two)], [one[s] for s in sorted(one)], rtol=1e-5, atol=1e-6)
    single = _weights(one_w)
    for k in single:
        torch.testing.assert_close(rank0[k], single[k], rtol=1e-4, atol=1e-5)


def _most_frequent_token_accuracy(path: Path) -> float:
    """Mean per-row token accuracy of always predicting the most frequent label token (the metric's baseline)."""
    from hrm_fast.data.dataset import PuzzleDataset

    ds = PuzzleDataset(path, "train")
    labels = ds.batch(np.arange(ds.num_examples))["labels"].numpy()
    valid = labels != -100
    values, counts = np.unique(labels[valid], return_counts=True)
    top = values[counts.argmax()]
    rows = valid.sum(1) > 0
    return float((((labels == top) & valid).sum(1)[rows] / valid.sum(1)[rows]).mean())


def test_a_short_run_builds_its_data_and_learns(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    args = [
        "preset=cpu-tiny", "device=cpu", f"data.path={data}", "data.max_grid_size=6", "data.num_aug=3",
        "data.val_fraction=0.2", "model.hidden_size=64", "model.num_heads=2", "model.H_layers=1", "model.L_layers=1",
        "model.H_cycles=1", "model.L_cycles=2", "model.halt_max_steps=2", "model.puzzle_emb_ndim=64",
        "train.global_batch_size=16", "train.lr=3e-3", "train.lr_warmup_steps=10", "train.max_steps=300",
        "log.every=20", "eval.every=150", "eval.batch_size=36", "checkpoint.every=150", f"run.dir={run}",
    ]
    t0 = time.monotonic()
    res = _run(args, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "building it" in res.stdout and (data / "train" / "dataset.json").exists()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "train/lm_loss" in r]
    val = [r for r in records if "val/accuracy" in r]
    assert [r["step"] for r in train] == list(range(20, 301, 20)) and [r["step"] for r in val] == [150, 300]
    first, last = train[0]["train/lm_loss"], np.mean([r["train/lm_loss"] for r in train[-3:]])
    assert last < 0.85 * first, (first, last)
    baseline = _most_frequent_token_accuracy(data)
    accuracy = np.mean([r["train/accuracy"] for r in train[-3:]])
    assert accuracy > baseline + 0.08, (accuracy, baseline)
    assert (run / "best" / "model.safetensors").exists() and (run / "last" / "state.pt").exists()
    assert (run / "config.yaml").exists() and any((run / "tensorboard").iterdir())
    print(f"learning run: {time.monotonic() - t0:.0f}s, loss {first:.3f} -> {last:.3f}, token accuracy "
          f"{accuracy:.3f} vs most-frequent-token {baseline:.3f}, val {val[-1]['val/accuracy']:.3f}")


def test_validation_views_select_the_first_puzzles_of_each_group(tiny_data):

    from hrm_fast.config import load_config
    from hrm_fast.data.dataset import PuzzleDataset
    from hrm_fast.distributed import DistInfo
    from hrm_fast.eval.validate import evaluate_split, select_rows
    from hrm_fast.model.hrm import HRM

    ds = PuzzleDataset(tiny_data, "val")
    one = select_rows(ds, 1)
    firsts = ds.group_indices[:-1]
    expected = np.concatenate([np.arange(ds.puzzle_indices[p], ds.puzzle_indices[p + 1]) for p in firsts])
    np.testing.assert_array_equal(one, expected)
    names = [ds.identifiers[i] for i in ds.example_identifiers(one)]
    assert all("_t" not in n for n in names), names[:5]  # the originals, not augmented copies
    assert len(select_rows(ds, 2)) > len(one) and len(select_rows(ds, "all")) == ds.num_examples

    cfg = load_config("cpu-tiny", TINY_MODEL + [f"data.path={tiny_data}", "eval.val_views=2", "eval.batch_size=5"])
    torch.manual_seed(0)
    model = HRM(cfg.model, vocab_size=ds.metadata.vocab_size, seq_len=ds.seq_len,
                num_puzzle_identifiers=ds.metadata.num_puzzle_identifiers)
    out = evaluate_split(model, cfg, DistInfo(0, 1, 0, torch.device("cpu")), "val", show_progress=False)
    assert out["val/count"] == len(select_rows(ds, 2))  # padding rows are not counted
    assert 0.0 <= out["val/accuracy"] <= 1.0 and out["val/steps"] == cfg.model.halt_max_steps
    assert model.training  # back in training mode
    # compile=true validation (a compiled EvalStep, reused across calls as the trainer does) gives the same metrics
    from hrm_fast.eval.runner import EvalRunner

    runner = EvalRunner(model, cfg.eval.batch_size, torch.device("cpu"), compile=True)
    for _ in range(2):
        got = evaluate_split(model, cfg, DistInfo(0, 1, 0, torch.device("cpu")), "val", runner, show_progress=False)
        assert got.keys() == out.keys()
        for k in out:
            assert got[k] == pytest.approx(out[k], rel=1e-5, abs=1e-6), k


def test_gradient_accumulation_matches_one_big_batch(tiny_data, reference_run, tmp_path):
    run, weights = tmp_path / "run", tmp_path / "weights"
    res = _run(TINY_RUN + [f"data.path={tiny_data}", f"train.max_steps={STEPS}", "checkpoint.every=3",
                           "train.grad_accum=2", f"run.dir={run}"], HRM_FAST_TEST_DUMP_WEIGHTS=str(weights))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "micro-batch 4 x 2 accumulation" in res.stdout
    ref_run, ref_weights = reference_run
    got, want = _losses(run), _losses(ref_run)
    np.testing.assert_allclose([got[s] for s in sorted(got)], [want[s] for s in sorted(want)], rtol=1e-5, atol=1e-6)
    ref = _weights(ref_weights)
    for k, v in _weights(weights).items():
        torch.testing.assert_close(v, ref[k], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_compiled_segment_matches_eager(tiny_data, reference_run, tmp_path):
    """compile=true (torch.compile of model forward + loss) follows the eager run (~1-2 min: compilation)."""
    run = tmp_path / "run"
    res = _run(TINY_RUN + [f"data.path={tiny_data}", f"train.max_steps={STEPS}", "checkpoint.every=1000",
                           "compile=true", f"run.dir={run}"], timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "compile=True" in res.stdout
    got, want = _losses(run), _losses(reference_run[0])
    np.testing.assert_allclose([got[s] for s in sorted(got)], [want[s] for s in sorted(want)], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_failed_compiled_step_is_undone_and_the_eager_step_continues(tiny_data, reference_run, tmp_path):
    """compile=true whose compiled step fails after its first call ran (test hook): that step is undone
    (weights, optimizer state, carries, RNG) and recomputed by the eager step; the run matches eager."""
    run = tmp_path / "run"
    res = _run(TINY_RUN + [f"data.path={tiny_data}", f"train.max_steps={STEPS}", "checkpoint.every=1000",
                           "compile=true", f"run.dir={run}"], timeout=600, HRM_FAST_TEST_FAIL_AT="first_compiled_step")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "compiled training step failed at its first call (RuntimeError: test hook" in res.stdout
    got, want = _losses(run), _losses(reference_run[0])
    assert sorted(got) == sorted(want)
    np.testing.assert_allclose([got[s] for s in sorted(got)], [want[s] for s in sorted(want)], rtol=1e-4, atol=1e-5)


def test_cuda_graph_without_cuda_fails_at_start(tiny_data, tmp_path):
    run = tmp_path / "r"
    res = _run(TINY_RUN + [f"data.path={tiny_data}", "train.max_steps=2", "cuda_graph=true", f"run.dir={run}"])
    assert res.returncode == 2 and "cuda_graph=true needs compile=true on one CUDA device" in res.stderr
    assert not run.exists()


@pytest.mark.slow
def test_torchrun_kill_9_then_resume_continues_exactly(tiny_data, tmp_path):
    """Two gloo ranks: rank 0 is SIGKILLed in its 2nd save, at its first rename, when the step-6 copy is complete
    (torchrun then stops rank 1); resume=auto recovers that copy and gives the uninterrupted two-rank run's losses
    and weights (each rank's RNG and carry slice)."""
    args = TINY_RUN + [f"data.path={tiny_data}", "train.max_steps=8", "checkpoint.every=3",
                       "model.halt_exploration_prob=0.5"]

    def launch(run: Path, weights: Path | None, *extra: str, killed: bool = False) -> subprocess.CompletedProcess:
        env = _env(HRM_FAST_TEST_KILL_IN_SAVE="2") if killed else _env(HRM_FAST_TEST_DUMP_WEIGHTS=str(weights))
        return torchrun(2, ["-m", "train.run", *args, f"run.dir={run}", *extra], cwd=ROOT, env=env,
                        restore=[run] + ([weights] if weights else []), retry_on_abort=not killed)

    full, cut = tmp_path / "full", tmp_path / "cut"
    res = launch(full, tmp_path / "w_full")
    assert res.returncode == 0, failure_report(res)
    res = launch(cut, None, killed=True)
    assert res.returncode != 0 and "SIGKILL" in res.stderr, failure_report(res)
    res = launch(cut, tmp_path / "w_cut", "run.resume=auto")
    assert res.returncode == 0, failure_report(res)
    assert "recovered" in res.stdout and "at step 6" in res.stdout, res.stdout[-3000:]
    assert _losses(cut) == _losses(full)
    for rank in (0, 1):
        want, got = _weights(tmp_path / "w_full", rank), _weights(tmp_path / "w_cut", rank)
        assert all(torch.equal(got[k], want[k]) for k in want)


def test_arc_scoring_at_the_end_of_training(tiny_data, tmp_path):
    """``eval.arc_at_end=true``: scores.json, submission.json, report.html and an eval/ line in metrics.jsonl."""
    run = tmp_path / "run"
    res = _run(TINY_RUN + [f"data.path={tiny_data}", "train.max_steps=2", "eval.arc_at_end=true", "eval.views=2",
                           f"run.dir={run}"])
    assert res.returncode == 0, res.stderr[-3000:]
    out = run / "eval-test-step2"
    scores = json.loads((out / "scores.json").read_text())
    assert 0.0 <= scores["kaggle"]["pass@2"] <= 1.0 and scores["tasks"] > 0
    assert (out / "submission.json").exists() and (out / "report.html").exists()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(r["step"] == 2 and "eval/kaggle@2" in r for r in records), records[-1]
    assert "ARC scores of step 2" in res.stdout
