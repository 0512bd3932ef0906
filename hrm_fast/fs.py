"""Filesystem helpers shared by the builder, the evaluator and the run folder.

- ``os_error_line``: an OSError as one line naming the path and the OS error (for exit-2 messages).
- ``check_writable``: make a folder and prove a file can be written in it, before any long computation.
- ``owner_tag`` / ``owner_alive`` / ``remove_stale``: temporary names carry ``<pid>@<host>`` of the process
  that made them, so that a later process can remove the ones whose owner is gone (killed with -9).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
from collections.abc import Callable
from pathlib import Path


class FsError(Exception):
    """A filesystem operation failed; the message is one line naming the path and the OS error."""


def os_error_line(err: OSError, path: str | os.PathLike | None = None) -> str:
    """``"PATH: <OS error text> [Errno N]"`` (the path of the error itself when it names one)."""
    where = err.filename if err.filename is not None else path
    text = err.strerror or str(err) or type(err).__name__
    if isinstance(err, FileExistsError) and where is not None and not Path(where).is_dir():
        text += " (and is not a folder)"  # mkdir -p under a regular file
    code = f" [Errno {err.errno}]" if err.errno is not None else ""
    return f"{where}: {text}{code}" if where is not None else f"{text}{code}"


def check_writable(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """Create ``folder`` (and parents) and write + delete a probe file in it; FsError if either fails."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise FsError(f"cannot write the {what}: {os_error_line(err, folder)}") from None
    return folder


def owner_tag() -> str:
    """``"<pid>@<host>"`` of this process, for temporary names (host: no '/' or '@')."""
    host = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "localhost"
    return f"{os.getpid()}@{host}"


_TAG = re.compile(r"(?P<pid>\d+)(?:@(?P<host>[A-Za-z0-9._-]+))?$")


def owner_alive(tag: str) -> bool | None:
    """Whether the process of ``tag`` (``"<pid>"`` or ``"<pid>@<host>"``) still runs; None when unknowable
    (another host, or not a tag). A bare pid means this host (names written before the host was added)."""
    match = _TAG.match(tag)
    if match is None:
        return None
    host = match["host"]
    if host is not None and host != owner_tag().split("@", 1)[1]:
        return None
    pid = int(match["pid"])
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except OSError as err:
        return err.errno != errno.ESRCH
    return True


def remove_stale(parent: Path, pattern: re.Pattern[str], say: Callable[[str], None] | None = None) -> list[Path]:
    """Remove the entries of ``parent`` whose name matches ``pattern`` (its group ``tag`` an owner tag) and whose
    owner process is gone; returns them. ``say`` gets one line per removal."""
    removed: list[Path] = []
    try:
        entries = sorted(parent.iterdir()) if parent.is_dir() else []
    except OSError:
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None or owner_alive(match["tag"]) is not False:
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError as err:
            if say is not None:
                say(f"warning: could not remove the leftover {os_error_line(err, entry)}")
            continue
        removed.append(entry)
        if say is not None:
            say(f"removed {entry}: left by process {match['tag']}, which is gone (killed?)")
    return removed


def kill_point(name: str) -> None:
    """Test hook :func:`hrm_fast.faults.fault_point` (SIGKILL at moment ``name`` when ``HRM_FAST_TEST_KILL_AT=name``,
    a pause, a raise), imported only when armed: the builder stays torch-free."""
    if name in (os.environ.get("HRM_FAST_TEST_KILL_AT"), os.environ.get("HRM_FAST_TEST_PAUSE_AT"),
                os.environ.get("HRM_FAST_TEST_FAIL_AT")):
        from hrm_fast.faults import fault_point

        fault_point(name)
