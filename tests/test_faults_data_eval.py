"""Issue 11, data and evaluation half: faults injected on purpose (kill -9, read-only output, a dataset rebuilt
under a checkpoint), then the next command succeeds, loses nothing complete and leaves no hidden leftovers.

Kills use the test hook ``HRM_FAST_TEST_KILL_AT=<moment>`` (``hrm_fast.faults.fault_point``): ``build-write``
(after the first task's rows are written), ``build-replace`` (between the two renames of ``--overwrite``),
``write report.html`` (evaluation results, with half of report.html written)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hrm_fast.data.build import build_dataset
from hrm_fast.data.build import main as build_main

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = [
    "model.hidden_size=32", "model.num_heads=2", "model.H_layers=1", "model.L_layers=1", "model.H_cycles=1",
    "model.L_cycles=1", "model.halt_max_steps=2", "model.puzzle_emb_ndim=32",
]  # fmt: skip
BUILD = ["--source", "arc-agi-1", "--eval-source", "arc-agi-1", "--max-grid-size", "6", "--subset", "6",
         "--num-aug", "3", "--no-progress"]  # fmt: skip


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def _python(args: list[str], timeout: float = 180, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=_env(**env), capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ----------------------------------------------------------------------------------------------- data build
def _marked_processes(mark: str) -> list[int]:
    """Pids of the live processes whose environment holds ``HRM_FAST_TEST_MARK=mark``."""
    found = []
    for env in Path("/proc").glob("[0-9]*/environ"):
        with contextlib.suppress(OSError):
            if f"HRM_FAST_TEST_MARK={mark}".encode() in env.read_bytes().split(b"\0"):
                found.append(int(env.parent.name))
    return found


def test_build_killed_mid_write_then_next_build_cleans_up(tmp_path, caplog):
    out = tmp_path / "ds"
    mark = f"build-{os.getpid()}-{tmp_path.name}"
    res = _python(["-m", "hrm_fast.data.build", *BUILD, "--workers", "2", "--out", str(out)],
                  HRM_FAST_TEST_KILL_AT="build-write", HRM_FAST_TEST_MARK=mark)  # fmt: skip
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    if Path("/proc/self/environ").exists():  # its worker processes end too (they were left running before)
        for _ in range(50):
            if not _marked_processes(mark):
                break
            time.sleep(0.2)
        assert _marked_processes(mark) == []
    leftovers = _hidden(tmp_path)
    assert not out.exists() and len(leftovers) == 1 and leftovers[0].startswith(".ds.building-")
    with caplog.at_level(logging.WARNING, logger="hrm_fast.data"):
        assert build_main([*BUILD, "--out", str(out)]) == 0
    assert f"removed {tmp_path / leftovers[0]}" in caplog.text and "gone" in caplog.text
    assert _hidden(tmp_path) == [] and (out / "metadata.json").is_file()


def test_build_killed_between_renames_restores_the_previous_dataset(tmp_path, caplog):
    out = tmp_path / "ds"
    assert build_main([*BUILD, "--out", str(out)]) == 0
    before = (out / "identifiers.json").read_bytes()
    res = _python(["-m", "hrm_fast.data.build", *BUILD, "--seed", "7", "--overwrite", "--out", str(out)],
                  HRM_FAST_TEST_KILL_AT="build-replace")  # fmt: skip
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    assert not out.exists() and len(_hidden(tmp_path)) == 2  # .ds.old-<tag> (complete) and .ds.building-<tag>
    with caplog.at_level(logging.WARNING, logger="hrm_fast.data"):
        assert build_main([*BUILD, "--out", str(out)]) == 2  # no --overwrite: the restored dataset stays
    assert "restored" in caplog.text and (out / "identifiers.json").read_bytes() == before
    assert _hidden(tmp_path) == []
    assert build_main([*BUILD, "--seed", "7", "--overwrite", "--out", str(out)]) == 0
    assert (out / "identifiers.json").read_bytes() != before and _hidden(tmp_path) == []


def test_only_leftovers_of_dead_processes_are_removed(tmp_path):
    """A live build of the same --out (a live process here), or one on another host, keeps its temporary folder."""
    from hrm_fast.fs import owner_tag

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    live = subprocess.Popen(["sleep", "60"])
    host, gone = owner_tag().split("@", 1)[1], dead.stdout.strip()
    names = {f".ds.building-{gone}@{host}": False, f".ds.building-{live.pid}@{host}": True,
             f".ds.building-{gone}@other-host": True, f".ds.building-{gone}": False}  # fmt: skip
    try:
        for name in names:
            (tmp_path / name).mkdir()
            (tmp_path / name / "all__inputs.npy").write_bytes(b"partial")
        assert build_main([*BUILD, "--out", str(tmp_path / "ds")]) == 0
    finally:
        live.kill()
        live.wait()
    assert _hidden(tmp_path) == sorted(name for name, kept in names.items() if kept)


# ----------------------------------------------------------------------------------------------- read-only output
@contextlib.contextmanager
def _unwritable(tmp_path: Path):
    """(folder that cannot be written, the OS error text expected): a real read-only tmpfs mount where this
    process may mount one (root), else a path under a regular file."""
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = False
    if os.geteuid() == 0 and shutil.which("mount"):
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)],
                                 capture_output=True).returncode == 0  # fmt: skip
    try:
        if mounted:
            yield ro, "Read-only file system"
        else:
            (tmp_path / "file").write_text("a regular file")
            yield tmp_path / "file" / "sub", "Not a directory"
    finally:
        if mounted:
            subprocess.run(["umount", str(ro)], check=True)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A tiny build and an untrained checkpoint of it: (dataset, checkpoint folder)."""
    from hrm_fast.checkpoint import save_checkpoint
    from hrm_fast.config import load_config
    from hrm_fast.model.hrm import HRM

    base = tmp_path_factory.mktemp("small")
    data = base / "ds"
    build_dataset(data, ["arc-agi-1"], ["arc-agi-1"], num_aug=3, max_grid_size=6, subset=6, progress=False)
    cfg = load_config("cpu-tiny", [f"data.path={data}", "data.max_grid_size=6", *TINY_MODEL, "eval.batch_size=16"])
    n_ids = len(json.loads((data / "identifiers.json").read_text()))
    torch.manual_seed(0)
    model = HRM(cfg.model, vocab_size=12, seq_len=36, num_puzzle_identifiers=n_ids)
    return data, save_checkpoint(base / "ckpt", model, cfg)


def test_unwritable_output_is_exit_2_before_any_work(small, tmp_path, monkeypatch, capsys):
    import hrm_fast.data.build as build
    import hrm_fast.eval.pipeline as pipeline
    from train.evaluate import main as evaluate_main

    def must_not_run(*args, **kwargs):
        raise AssertionError("work started before the output location was checked")

    monkeypatch.setattr(build, "select_tasks", must_not_run)
    monkeypatch.setattr(pipeline, "load_eval_split", must_not_run)
    with _unwritable(tmp_path) as (bad, why):
        assert build_main([*BUILD, "--out", str(bad / "ds")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(bad) in err and why in err, err
        assert evaluate_main([f"checkpoint={small[1]}", f"out={bad / 'eval'}", "progress=false"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(bad) in err and why in err, err


# ----------------------------------------------------------------------------------------------- evaluation
def test_evaluation_killed_while_writing_results_then_rerun_completes(small, tmp_path, capsys):
    from train.evaluate import main as evaluate_main

    out = tmp_path / "eval"
    args = [f"checkpoint={small[1]}", f"out={out}", "eval.views=2", "progress=false"]
    res = _python(["-m", "train.evaluate", *args], **{"HRM_FAST_TEST_KILL_AT": "write report.html"})
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    assert "step" in res.stdout  # the checkpoint's step is printed at start (unknown here: no state.pt)
    assert not (out / "scores.json").exists() and not (out / "report.html").exists()  # scores.json comes last
    partial = _hidden(out)
    assert len(partial) == 1 and partial[0].startswith(".report.html.")
    assert evaluate_main(args) == 0  # the rerun (in-process)
    assert f"removed {out / partial[0]}" in capsys.readouterr().out
    written = sorted(p.name for p in out.iterdir())
    assert _hidden(out) == [] and written == ["report.html", "scores.json", "submission.json", "tasks.csv"]
    scores = json.loads((out / "scores.json").read_text())
    assert scores["tasks"] == len(json.loads((out / "submission.json").read_text()))
    assert (out / "report.html").read_text().endswith("</html>")


# ----------------------------------------------------------------------------------------------- resume identity
def test_resume_refuses_another_dataset_build(tmp_path, capsys, monkeypatch):
    """Issue 11 (3): run.resume onto a rebuilt dataset (another --seed, same size) went ahead unnoticed."""
    from hrm_fast.entry import main as train_main

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # in-process: entry.main would otherwise set torch's thread count
    data, other = tmp_path / "a", tmp_path / "b"
    assert build_main([*BUILD, "--out", str(data)]) == 0
    assert build_main([*BUILD, "--seed", "7", "--out", str(other)]) == 0
    run = tmp_path / "run"
    train = ["preset=cpu-tiny", "device=cpu", *TINY_MODEL, "train.global_batch_size=8", "log.tensorboard=false",
             "eval.every=1000", f"run.dir={run}", "train.max_steps=2"]  # fmt: skip
    assert train_main([*train, f"data.path={data}"]) == 0
    ident = json.loads((run / "last" / "dataset_identity.json").read_text())
    assert ident["fingerprint"] == json.loads((data / "metadata.json").read_text())["dataset_fingerprint"]
    capsys.readouterr()
    assert train_main([*train, f"data.path={other}", f"run.resume={run / 'last'}", "train.max_steps=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    theirs = json.loads((other / "metadata.json").read_text())["dataset_fingerprint"]
    assert ident["fingerprint"] in err and theirs in err and ident["fingerprint"] != theirs
    # a checkpoint written before identities were recorded: resumed as before, with a warning
    for name in ("dataset_identity.json", "identifiers.json"):
        (run / "last" / name).unlink()
    assert train_main([*train, f"data.path={data}", f"run.resume={run / 'last'}", "train.max_steps=3"]) == 0
    assert "records no dataset identity" in capsys.readouterr().out


@contextlib.contextmanager
def _tiny_tmpfs(folder: Path, size: str):
    folder.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root to mount a small tmpfs (a full disk cannot be simulated otherwise)")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:  # fmt: skip
        pytest.skip("mount -t tmpfs is not permitted here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_disk_full_during_build_and_evaluation_is_exit_2(small, tmp_path, capsys):
    """A filesystem error after the start-up check (no space left) is still one line, exit 2, nothing left."""
    from train.evaluate import main as evaluate_main

    with _tiny_tmpfs(tmp_path / "full", "8k") as full:
        assert build_main([*BUILD, "--out", str(full / "ds")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(full) in err and "No space left on device" in err, err
        assert list(full.iterdir()) == []
        out = full / "eval"
        assert evaluate_main([f"checkpoint={small[1]}", f"out={out}", "eval.views=1", "progress=false"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(out) in err and "No space left on device" in err, err
        assert not (out / "scores.json").exists() and _hidden(out) == []
