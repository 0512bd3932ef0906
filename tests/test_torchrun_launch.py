"""The test helper that retries a torchrun launch once after a worker's SIGABRT restores folders first."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from torchrun_launch import launch

# Appends a line to out/log; the first call (no marker file yet) fails like torchrun after a worker's SIGABRT.
SCRIPT = """
import pathlib, sys
out = pathlib.Path(sys.argv[1]); out.mkdir(exist_ok=True)
(out / "log").open("a").write("attempt\\n")
marker = pathlib.Path(sys.argv[2])
if not marker.exists():
    marker.write_text("")
    print("traceback : Signal 6 (SIGABRT) received by PID 1", file=sys.stderr)
    sys.exit(1)
"""


def test_abort_is_retried_once_from_the_restored_folder(tmp_path):
    out, marker = tmp_path / "out", tmp_path / "marker"
    out.mkdir()
    (out / "log").write_text("before\n")
    with pytest.warns(UserWarning, match="SIGABRT"):
        res = launch([sys.executable, "-c", SCRIPT, str(out), str(marker)], cwd=tmp_path, env=dict(os.environ),
                     restore=[out])
    assert res.returncode == 0
    assert (out / "log").read_text() == "before\nattempt\n"  # the failed attempt's line was rolled back


def test_other_failures_and_disabled_retry_are_returned_as_they_are(tmp_path):
    marker = tmp_path / "marker"
    res = launch([sys.executable, "-c", SCRIPT, str(tmp_path / "out"), str(marker)], cwd=tmp_path,
                 env=dict(os.environ), retry_on_abort=False)
    assert res.returncode == 1 and "SIGABRT" in res.stderr
    res = launch([sys.executable, "-c", "import sys; sys.exit(3)"], cwd=tmp_path, env=dict(os.environ))
    assert res.returncode == 3


@pytest.mark.parametrize("world_size", ["1", "2"])
def test_exit_worker_skips_finalization_only_in_a_torchrun_worker(world_size, tmp_path):
    """``exit_worker``: same exit code and flushed output; a worker (WORLD_SIZE > 1) skips atexit/finalization."""
    script = ("import atexit, sys\n"
              "from hrm_fast.distributed import exit_worker\n"
              "atexit.register(lambda: print('finalized'))\n"
              "print('done', end='')\n"
              "exit_worker(3)\n")
    env = {**os.environ, "WORLD_SIZE": world_size}
    res = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 3
    assert res.stdout.startswith("done")
    assert ("finalized" in res.stdout) == (world_size == "1")
