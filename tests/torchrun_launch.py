"""Launching ``torchrun`` from tests on one machine.

``--standalone`` lets the rendezvous pick a free port, so tests never collide with another job's
port. Two CI runs lost a worker to SIGABRT ("terminate called without an active exception") after
the run had finished: the abort came from interpreter finalization after ``destroy_process_group``
(about 1 in 12 resumed 2-rank runs here). ``hrm_fast.distributed.exit_worker`` now ends workers
with ``os._exit`` and skips that finalization. As a guard against gloo aborts we have not seen, a launch
whose worker died of SIGABRT is still retried once. Before the retry, the named folders are put back as
they were, and the retry is reported as a warning. Any other failure (a traceback, a wrong exit code,
a different signal) is returned as it is.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

GLOO_ABORT = "Signal 6 (SIGABRT)"


def torchrun(nproc: int, args: Sequence[str], *, cwd: Path, env: dict[str, str], timeout: float = 300,
             restore: Sequence[Path] = (), retry_on_abort: bool = True) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node nproc <args>`` through :func:`launch`."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), *args]
    return launch(cmd, cwd=cwd, env=env, timeout=timeout, restore=restore, retry_on_abort=retry_on_abort)


def launch(cmd: Sequence[str], *, cwd: Path, env: dict[str, str], timeout: float = 300,
           restore: Sequence[Path] = (), retry_on_abort: bool = True) -> subprocess.CompletedProcess:
    """Run a torchrun command line; retried once when a worker died of SIGABRT.

    ``restore``: folders the launch writes (run folder, weight dumps); before a retry each is put
    back to its state before the first attempt (removed if it did not exist).
    """
    with tempfile.TemporaryDirectory(prefix="torchrun-snapshot-") as keep:
        saved = {}
        for i, folder in enumerate(restore):
            saved[folder] = Path(keep) / str(i) if folder.exists() else None
            if saved[folder] is not None:
                shutil.copytree(folder, saved[folder], symlinks=True)
        res = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        if not retry_on_abort or GLOO_ABORT not in res.stderr:
            return res
        clues = [ln for ln in res.stderr.splitlines() if any(c in ln for c in ("terminate called", "what()", "Fatal"))]
        warnings.warn(f"torchrun: a worker died of SIGABRT; retrying once. Its messages: {clues}; stderr tail:\n"
                      f"{res.stderr[-2000:]}", stacklevel=2)
        for folder, copy in saved.items():
            shutil.rmtree(folder, ignore_errors=True)
            if copy is not None:
                shutil.copytree(copy, folder, symlinks=True)
        return subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def failure_report(res: subprocess.CompletedProcess) -> str:
    """The tails of a failed launch's stdout and stderr, for an assertion message."""
    return f"exit {res.returncode}\n--- stdout ---\n{res.stdout[-3000:]}\n--- stderr ---\n{res.stderr[-8000:]}"
