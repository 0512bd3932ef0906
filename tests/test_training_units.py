"""Fast in-process tests of the training run's parts: preset choice, run folders, resume state, faults, logs."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hrm_fast.entry import default_preset, main
from hrm_fast.faults import GracefulStop, NonFiniteTracker
from hrm_fast.training import run_dir as R
from hrm_fast.training import train_state as TS
from hrm_fast.training.profiling import nvtx_range
from hrm_fast.training.runlog import RunLogger, read_metrics


def test_default_preset_follows_cuda_and_respects_the_command_line():
    preset, why = default_preset([])
    assert preset == ("seed-4090" if torch.cuda.is_available() else "cpu-tiny")
    assert ("CUDA" in why) if torch.cuda.is_available() else ("no CUDA" in why)
    assert default_preset(["preset=hrm-paper", "train.lr=1"])[0] is None


def _fake_checkpoint(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"x")
    (path / "config.yaml").write_text("preset: x\n")
    return path


def test_run_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run, ckpt = R.resolve(None, "none", "cpu-tiny")
    assert run.parent == Path("runs") and run.name.startswith("cpu-tiny-") and ckpt is None
    assert R.resolve(None, "auto", "cpu-tiny")[1] is None  # nothing to resume: fresh run
    older = _fake_checkpoint(tmp_path / "runs" / "cpu-tiny-1" / "last")
    time.sleep(0.02)
    newer = _fake_checkpoint(tmp_path / "runs" / "cpu-tiny-2" / "last")
    _fake_checkpoint(tmp_path / "runs" / "other-3" / "last")
    run, ckpt = R.resolve(None, "auto", "cpu-tiny")
    assert ckpt.resolve() == newer.resolve() and run.resolve() == newer.parent.resolve()
    run, ckpt = R.resolve(str(older.parent), "auto", "cpu-tiny")
    assert ckpt.resolve() == older.resolve()
    run, ckpt = R.resolve(None, str(older.parent), "cpu-tiny")  # a run folder means its last/
    assert ckpt.resolve() == older.resolve() and run.resolve() == older.parent.resolve()
    # a crash between "move the old checkpoint aside" and "move the new one in" leaves .last.old-*
    os.rename(newer, newer.parent / ".last.old-123")
    run, ckpt = R.resolve(str(newer.parent), "auto", "cpu-tiny")
    assert ckpt.name == ".last.old-123"
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        R.resolve(None, str(tmp_path / "nowhere"), "cpu-tiny")


def test_rng_state_round_trip_restores_every_generator():
    state = TS.rng_state(torch.device("cpu"))
    expected = (random.random(), np.random.rand(), torch.rand(3))
    random.random(), np.random.rand(), torch.rand(3)  # move on
    TS.set_rng_state(state, torch.device("cpu"))
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])
    # what goes into state.pt must load without executing code
    buf = Path(os.environ.get("TMPDIR", "/tmp")) / f"rng-{os.getpid()}.pt"
    torch.save(state, buf)
    try:
        torch.load(buf, weights_only=True)
    finally:
        buf.unlink()


def test_carry_state_concat_slice_and_in_place_load():
    from hrm_fast.config import load_config
    from hrm_fast.model.hrm import HRM

    cfg = load_config("cpu-tiny", ["model.hidden_size=16", "model.num_heads=2", "model.puzzle_emb_ndim=16"])
    model = HRM(cfg.model, vocab_size=12, seq_len=9, num_puzzle_identifiers=5)
    carries = [model.initial_carry(2, "cpu") for _ in range(2)]
    for i, c in enumerate(carries):
        for t in TS.carry_tensors(c).values():
            t.copy_(torch.randint(0, 5, t.shape).to(t.dtype) + i)
    whole = TS.concat_carry_states([TS.carry_state(c) for c in carries])
    assert whole["z_H"].shape[0] == 4 and "current_data.inputs" in whole
    fresh = model.initial_carry(2, "cpu")
    storage = fresh.z_H.data_ptr()
    TS.load_carry_state(fresh, TS.slice_carry_state(whole, 2, 4))
    assert fresh.z_H.data_ptr() == storage  # loaded in place
    for k, v in TS.carry_tensors(fresh).items():
        assert torch.equal(v, TS.carry_tensors(carries[1])[k]), k
    with pytest.raises(ValueError, match="shape"):
        TS.load_carry_state(fresh, TS.slice_carry_state(whole, 0, 3))


def test_non_finite_tracker_names_the_first_bad_step():
    tr = NonFiniteTracker(torch.device("cpu"), step=10)
    tr.update(torch.tensor(1.0), torch.tensor(2.0))
    assert int(tr.first_bad) == -1
    tr.update(torch.tensor(float("nan")), torch.tensor(2.0))  # step 12
    tr.update(torch.tensor(1.0), torch.tensor(float("inf")))  # step 13: not the first
    assert int(tr.first_bad) == 12 and int(tr.step) == 13


def test_graceful_stop_turns_sigterm_into_a_flag_and_restores_handlers():
    before = signal.getsignal(signal.SIGTERM)
    stop = GracefulStop().install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100):
            if stop.requested:
                break
            time.sleep(0.01)
        assert stop.requested == "SIGTERM"
    finally:
        stop.uninstall()
    assert signal.getsignal(signal.SIGTERM) is before


def test_nvtx_range_is_a_no_op_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA present: ranges are real")
    assert isinstance(nvtx_range("x"), contextlib.nullcontext)
    with nvtx_range("data"):
        pass


def test_step_window_profiler_captures_the_requested_steps(tmp_path):
    from hrm_fast.training.profiling import StepWindowProfiler

    prof = StepWindowProfiler(steps=2, use_torch=True, out_dir=tmp_path / "profile", start_step=10, warmup=1)
    messages = []
    for step in range(10, 16):
        prof.before_step(step)
        torch.mm(torch.ones(8, 8), torch.ones(8, 8))
        messages.append(prof.after_step(step + 1))
    assert [m is not None for m in messages] == [False, False, True, False, False, False]
    assert "steps 12..13" in messages[2]
    trace = (tmp_path / "profile" / "trace.json").read_text()
    assert "aten::mm" in trace and "aten::mm" in (tmp_path / "profile" / "summary.txt").read_text()
    assert StepWindowProfiler(0, True, tmp_path / "none", 0).after_step(5) is None


def test_run_logger_writes_jsonl_and_tensorboard(tmp_path):
    log = RunLogger(tmp_path, {"a": 1}, tensorboard=True, wandb_mode="off")
    log.log(1, {"train/loss": 2.5, "train/acc": float("nan")})
    log.log(2, {"train/loss": 2.0})
    log.close()
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2] and records[0]["train/loss"] == 2.5
    assert records[0]["train/acc"] == "nan"
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tensorboard").iterdir())
    with pytest.raises(ValueError, match="wandb"):
        RunLogger(tmp_path / "x", {}, tensorboard=False, wandb_mode="maybe")


def test_impossible_batch_split_fails_before_any_work(tmp_path, capsys):
    from hrm_fast.config import ConfigError, load_config
    from hrm_fast.distributed import DistInfo
    from hrm_fast.training.trainer import Trainer

    run, data = tmp_path / "run", tmp_path / "no-data"
    code = main(["preset=cpu-tiny", "train.global_batch_size=10", "train.grad_accum=4", "device=cpu",
                 f"run.dir={run}", f"data.path={data}"])
    assert code == 2 and "divisible" in capsys.readouterr().err
    # 12 rows fit 4 micro-batches on one rank but not 3 ranks x 4 micro-batches
    cfg = load_config("cpu-tiny", ["train.global_batch_size=12", "train.grad_accum=4", f"run.dir={run}",
                                   f"data.path={data}"])
    with pytest.raises(ConfigError, match="ranks"):
        Trainer(cfg, DistInfo(rank=0, world_size=3, local_rank=0, device=torch.device("cpu")))
    assert not run.exists() and not data.exists()


def test_bad_arguments_exit_2(capsys):
    assert main(["train.lr"]) == 2
    assert main(["train.no_such_key=1"]) == 2
    assert "no_such_key" in capsys.readouterr().err


def test_autocast_dtype_only_for_reduced_precision_on_cuda():
    from hrm_fast.model.precision import autocast_dtype

    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")  # a device object needs no GPU
    assert autocast_dtype("bfloat16", cuda) is torch.bfloat16 and autocast_dtype("float16", cuda) is torch.float16
    assert autocast_dtype("float32", cuda) is None and autocast_dtype("bfloat16", cpu) is None


# --------------------------------------------------------------------------- run folder safety (issue 11)
def test_run_lock_is_exclusive_names_the_holder_and_ends_with_it(tmp_path):
    import socket

    first = R.RunLock(tmp_path / "run")  # flock locks belong to an open file: a second open conflicts here too
    with pytest.raises(R.RunDirError, match=rf"in use by another training run \(pid {os.getpid()} on host "
                                            rf"{socket.gethostname()}, since .*\): wait for it"):
        R.RunLock(tmp_path / "run")
    first.close()
    R.RunLock(tmp_path / "run").close()


def test_open_run_dir_refuses_a_folder_holding_a_run_unless_continued_or_moved_aside(tmp_path):
    run, said = tmp_path / "run", []
    lock, resume, over = R.open_run_dir(run, None, "none", False, said.append)  # a new folder
    lock.close()
    assert (resume, over, said) == (None, False, []) and not R.holds_run(run)
    _fake_checkpoint(run / "last")
    (run / "metrics.jsonl").write_text('{"step": 400}\n')
    before = sorted(os.listdir(run))
    with pytest.raises(R.RunDirError, match=r"already holds a run \(last, metrics up to step 400\); use "
                                            r"run.resume=auto to continue, or choose a new run.dir"):
        R.open_run_dir(run, None, "none", False, said.append)
    other = _fake_checkpoint(tmp_path / "other" / "last")
    with pytest.raises(R.RunDirError, match=r"run.resume=.*other/last into .*: the folder already holds a run"):
        R.open_run_dir(run, other, str(other), False, said.append)
    with pytest.raises(R.RunDirError, match="would move aside"):
        R.open_run_dir(run, run / "last", "auto", True, said.append)
    assert sorted(os.listdir(run)) == before  # refusals change nothing
    lock, resume, over = R.open_run_dir(run, run / "last", "auto", False, said.append)  # continuing is fine
    lock.close()
    assert resume == run / "last" and not over
    lock, resume, over = R.open_run_dir(run, None, "none", True, said.append)
    lock.close()
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]
    assert len(aside) == 1 and sorted(os.listdir(aside[0])) == before  # moved, not deleted
    assert os.listdir(run) == [R.LOCK] and said[-1].startswith("run.overwrite=true: moved the previous run")
    (run / "metrics.jsonl").write_text('{"step": 7}\n')  # died before its first checkpoint
    lock, resume, over = R.open_run_dir(run, None, "auto", False, said.append)
    lock.close()
    assert resume is None and over and "stopped before its first checkpoint" in said[-1]


def test_run_dir_under_a_regular_file_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code = main(["preset=cpu-tiny", "device=cpu", f"run.dir={tmp_path / 'file' / 'run'}",
                 f"data.path={tmp_path / 'no-data'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err == f"error: run.dir: cannot use the run folder: {tmp_path / 'file' / 'run'}: Not a directory [Errno 20]"
    assert not (tmp_path / "no-data").exists()  # checked before any work


def test_best_ties_break_by_token_accuracy_then_lower_loss():
    from hrm_fast.training.trainer import _best_from_state, best_key

    def val(exact: float, token: float, loss: float) -> dict[str, float]:
        return {"val/exact_accuracy": exact, "val/accuracy": token, "val/lm_loss": loss}

    assert best_key(val(0.0, 0.5, 2.0)) > best_key(val(0.0, 0.4, 1.0))  # exact tie: token accuracy decides
    assert best_key(val(0.0, 0.5, 1.0)) > best_key(val(0.0, 0.5, 2.0))  # then the lower loss
    assert best_key(val(0.1, 0.0, 9.0)) > best_key(val(0.0, 1.0, 0.0))  # exact accuracy first
    assert best_key(val(0.0, 0.5, 2.0)) > best_key(val(0.0, float("nan"), 1.0))  # NaN ranks last
    assert not best_key(val(0.0, 0.5, 2.0)) > best_key(val(0.0, 0.5, 2.0))  # a full tie keeps the first
    assert _best_from_state({"best_metric": 0.25}) == ((0.25, float("-inf"), float("-inf")), None)  # older states
    assert _best_from_state({"best_metric": [0.0, 0.5, -2.0], "best_step": 160}) == ((0.0, 0.5, -2.0), 160)


def test_help_lists_presets_and_every_section_key_type_and_default(capsys):
    from hrm_fast.config import Config, _section_for, available_presets

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"\n  {p}: " in out for p in available_presets())
    for name in Config.model_fields:
        section = _section_for(Config, (name,))
        if section is None:
            assert f"\n  {name}: " in out
            continue
        assert f"\n{name}:" in out
        for key in section.model_fields:
            assert f"\n  {key}: " in out, f"{name}.{key}"
    assert '\n  lr: float = 0.0001   (> 0)\n' in out
    assert '\n  pos_encodings: "rope" | "learned" | "none" = "rope"\n' in out
    assert "\n  max_steps: int | None = null   (>= 1)\n" in out and "\n  overwrite: bool = false   (" in out
