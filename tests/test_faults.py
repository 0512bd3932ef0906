"""Faults of ``python -m train.run`` (issue 11): kill -9 at several moments, two runs on one folder, a folder that
already holds a run, read-only and full file systems. After each fault the next command succeeds, loses nothing that
was complete (a checkpoint, the log up to it) and leaves no hidden leftovers; file-system errors are one line, exit 2.

Subprocess runs reuse the tiny model, dataset and 12-step reference run of ``test_train_run``; the rest calls
``hrm_fast.entry.main`` in this process. The data-build and evaluation kills are in ``test_faults_data_eval.py``.
Real read-only / full file systems are tmpfs mounts (root only); without root those cases are skipped (a run.dir
under a regular file, which needs no mount, is ``test_training_units::test_run_dir_under_a_regular_file_...``).
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import test_train_run
from test_train_run import ROOT, STEPS, TINY_RUN, _assert_same_run, _env, _losses, _run, _train_cmd

from hrm_fast.entry import main

tiny_data = test_train_run.tiny_data  # the shared fixtures: tiny dataset, uninterrupted 12-step run
reference_run = test_train_run.reference_run
CLEAN_RUN = [".lock", "best", "config.yaml", "last", "metrics.jsonl"]


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` but the lock (whose text names its last holder), by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


@pytest.fixture
def tmpfs(tmp_path):
    """``mount(options) -> Path``: a fresh tmpfs mounted with ``options``; skips the test where mounting is refused."""
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        target = tmp_path / f"mnt{len(mounted)}"
        target.mkdir()
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True,
                             text=True)
        if res.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {res.stderr.strip()}")
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


@pytest.fixture
def no_thread_change(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # entry.main would otherwise set torch's thread count in-process


# --------------------------------------------------------------------------- kill -9 (subprocesses)
@pytest.mark.parametrize("rename", [1, 2], ids=["before-moving-old-aside", "between-the-two-renames"])
def test_kill_9_while_writing_a_checkpoint_then_resume_recovers_the_complete_copy(tiny_data, reference_run, tmp_path,
                                                                                rename):
    """The 2nd save (step 6) is SIGKILLed at its rename-th rename: its files are complete, not yet in place. A reader
    sees a whole checkpoint (step 3 in place, or step 6 when nothing is in place); resume puts step 6 in place,
    removes the leftovers and continues exactly as the uninterrupted run."""
    from hrm_fast.checkpoint import load_checkpoint, load_training_state

    run, weights = tmp_path / "run", tmp_path / "weights"
    args = TINY_RUN + [f"data.path={tiny_data}", f"train.max_steps={STEPS}", "checkpoint.every=3", f"run.dir={run}"]
    res = _run(args, HRM_FAST_TEST_KILL_IN_SAVE=f"2:{rename}")
    assert res.returncode == -signal.SIGKILL, res.stderr[-3000:]
    assert any(n.startswith(".last.tmp-") for n in _names(run))
    model, config = load_checkpoint(run / "last")
    assert load_training_state(run / "last")["step"] == (3 if rename == 1 else 6)
    assert config.train.max_steps == STEPS

    res = _run(args + ["run.resume=auto"], HRM_FAST_TEST_DUMP_WEIGHTS=str(weights))
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"recovered {run / 'last'} from .last.tmp-" in res.stdout and "at step 6" in res.stdout
    assert _names(run) == CLEAN_RUN
    _assert_same_run(run, weights, reference_run)


def test_second_run_on_a_folder_is_refused_then_kill_9_mid_step_and_in_resume(tiny_data, reference_run, tmp_path):
    """A run paused inside step 8 holds the folder: a second run exits 2 naming its pid and host and writes
    nothing. The first is then SIGKILLed there (mid-step), the next one SIGKILLed while its resume rewrites the
    log; the third resumes from step 6, removes the rewrite's leftover and matches the uninterrupted run."""
    run, weights = tmp_path / "run", tmp_path / "weights"
    args = TINY_RUN + [f"data.path={tiny_data}", f"train.max_steps={STEPS}", "checkpoint.every=3", f"run.dir={run}"]
    first = subprocess.Popen(_train_cmd(args), cwd=ROOT, env=_env(HRM_FAST_TEST_PAUSE_AT="step8"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for line in first.stderr:  # ends at EOF if the run dies first
            if "paused at step8" in line:
                break
        assert first.poll() is None, "the first run ended before step 8"
        logged = (run / "metrics.jsonl").read_bytes()
        second = _run(args)
        assert second.returncode == 2, second.stderr[-3000:]
        assert second.stderr.strip() == (f"error: {run} is in use by another training run (pid {first.pid} on host "
                                         f"{socket.gethostname()}, since {second.stderr.split('since ')[1][:23]}): "
                                         "wait for it to end, stop it, or choose another run.dir")
        assert "run folder:" not in second.stdout and (run / "metrics.jsonl").read_bytes() == logged
    finally:
        first.kill()  # SIGKILL, inside step 8 (its batch drawn, weights not updated)
        first.communicate(timeout=60)
    assert first.returncode == -signal.SIGKILL
    assert sorted(_losses(run)) == list(range(1, 8))
    complete = [line for line in logged.decode().splitlines() if '"step": 7' not in line]  # steps 1-6: checkpointed

    res = _run(args + ["run.resume=auto"], HRM_FAST_TEST_KILL_AT="resume")
    assert res.returncode == -signal.SIGKILL, res.stderr[-3000:]
    assert any(n.startswith(".metrics.jsonl.tmp-") for n in _names(run))

    res = _run(args + ["run.resume=auto"], HRM_FAST_TEST_DUMP_WEIGHTS=str(weights))
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"removed {run}/.metrics.jsonl.tmp-" in res.stdout and f"resumed from {run / 'last'} at step 6" in res.stdout
    assert _names(run) == CLEAN_RUN
    assert (run / "metrics.jsonl").read_text().splitlines()[:len(complete)] == complete  # nothing complete lost
    _assert_same_run(run, weights, reference_run)


# --------------------------------------------------------------------------- run folder holding a run (in-process)
def test_a_folder_holding_a_run_is_refused_and_overwrite_moves_it_aside(tiny_data, reference_run, tmp_path, capsys,
                                                                        no_thread_change):
    run = tmp_path / "run"
    shutil.copytree(reference_run[0], run)
    before = _files(run)
    args = TINY_RUN + [f"data.path={tiny_data}", "train.max_steps=3", f"run.dir={run}"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {run}: the folder already holds a run (last, best, metrics up to step {STEPS}); use "
                   "run.resume=auto to continue, or choose a new run.dir (or run.overwrite=true to move the old run "
                   f"aside to {run}.replaced-<UTC time>)")
    assert _files(run) == before  # untouched

    assert main(args + ["run.overwrite=true"]) == 0
    out = capsys.readouterr().out
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]
    assert len(aside) == 1 and _files(aside[0]) == before  # moved aside whole: nothing deleted
    assert f"run.overwrite=true: moved the previous run in {run} to {aside[0]}" in out
    assert sorted(_losses(run)) == [1, 2, 3] and _names(run) == CLEAN_RUN
    assert f"best: {run / 'best'} now holds step 3 (exact accuracy " in out  # the log says which step best holds
    assert '"val/best_step": 3.0' in (run / "metrics.jsonl").read_text()


# --------------------------------------------------------------------------- file systems (in-process)
def test_read_only_file_system_is_one_line_exit_2_before_any_work(tiny_data, reference_run, tmp_path, capsys, tmpfs,
                                                                   no_thread_change):
    ro = tmpfs("ro,size=1m")
    args = TINY_RUN + [f"data.path={tiny_data}", "train.max_steps=2"]
    assert main(args + [f"run.dir={ro / 'run'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: run.dir: cannot use the run folder: {ro / 'run'}: Read-only file system [Errno 30]"

    rw = tmpfs("size=8m")  # a run folder whose file system went read-only: resume cannot write, says so, changes it not
    shutil.copytree(reference_run[0], rw / "run")
    subprocess.run(["mount", "-o", "remount,ro", str(rw)], check=True)
    before = _files(rw / "run")
    assert main(args + [f"run.dir={rw / 'run'}", "run.resume=auto", f"train.max_steps={STEPS + 2}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: run.dir: cannot use the run folder: {rw / 'run' / '.lock'}: Read-only file system [Errno 30]"
    assert _files(rw / "run") == before


def test_disk_full_while_saving_is_one_line_exit_2_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path, capsys,
                                                                                     tmpfs, no_thread_change):
    from hrm_fast.checkpoint import load_checkpoint, load_training_state

    disk = tmpfs("size=1400k")  # one checkpoint of this model (~0.85 MB) fits, not a second one beside it
    run = disk / "run"
    code = main(TINY_RUN + [f"data.path={tiny_data}", "train.max_steps=6", "checkpoint.every=3", f"run.dir={run}"])
    stderr = capsys.readouterr().err
    err = re.findall(r"error: .*", stderr)  # the rest is validation's progress bar
    assert code == 2 and len(err) == 1 and "Traceback" not in stderr, stderr
    assert "No space left on device [Errno 28]; stopped at step 6: the last good checkpoint is " in err[0], err
    assert err[0].startswith(f"error: {run}/") and err[0].endswith(f"{run / 'last'} (step 3)")
    assert load_training_state(run / "last")["step"] == 3 and load_checkpoint(run / "last")
    assert _names(run) == [".lock", "config.yaml", "last", "metrics.jsonl"]  # the failed save left no temporary copy
