"""Fault handling for the training loop: graceful stop on SIGINT/SIGTERM, non-finite loss detection, and the
test hooks (environment variables ``HRM_FAST_TEST_*``; nothing else in the product reads them).

Non-finite detection keeps a device-side record of the first bad step, updated every step with
tensor ops only (no host sync), and read on the host at check points (every step on CPU where a
read costs nothing, every ``log.every`` steps on CUDA, and always before a checkpoint is written).
So a bad step is always named exactly, and no checkpoint is ever written after it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import torch


class GracefulStop:
    """Turns the first SIGINT/SIGTERM into a flag the loop polls; a second one exits at once."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> GracefulStop:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested is not None:
            print(f"\n{name} again: exiting without saving.", file=sys.stderr, flush=True)
            os._exit(130)
        self.requested = name
        print(f"\n{name} received: finishing this step, then saving the 'last' checkpoint "
              "(send it again to exit at once).", file=sys.stderr, flush=True)


def first_line(err: BaseException, limit: int = 300) -> str:
    """``"<ExceptionType>: <first line of its message>"`` (at most ``limit`` characters), for one-line warnings."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:limit] if lines else ''}"


class NonFiniteTracker:
    """Remembers, on the device, the first optimizer step whose loss or gradient norm was not finite.

    It keeps its own device-side step counter so that ``update`` never copies from the host.
    """

    def __init__(self, device: torch.device, step: int = 0) -> None:
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=device)
        self.step = torch.full((), step, dtype=torch.int64, device=device)

    def update(self, *values: torch.Tensor) -> None:
        """Count one optimizer step; record it if any of ``values`` is NaN/inf and no earlier step was bad."""
        self.step.add_(1)
        bad = torch.zeros((), dtype=torch.bool, device=self.first_bad.device)
        for v in values:
            bad = bad | ~torch.isfinite(v.detach()).all()
        self.first_bad.copy_(torch.where(bad & (self.first_bad < 0), self.step, self.first_bad))


class NonFiniteError(RuntimeError):
    """A loss or gradient was NaN/inf at ``step``."""

    def __init__(self, step: int) -> None:
        super().__init__(f"non-finite loss or gradient at step {step}")
        self.step = step


# --------------------------------------------------------------------------- test hooks (the only ones in the product)
def fault_point(name: str) -> None:
    """Test hook at the moment ``NAME`` (e.g. ``step5``: in optimizer step 5, after its batch was drawn; ``resume``:
    while a resume rewrites the log; ``first_compiled_step`` / ``first_eval_step``: after the compiled step's first
    call): ``HRM_FAST_TEST_KILL_AT=NAME`` SIGKILLs this process there, ``HRM_FAST_TEST_PAUSE_AT=NAME`` prints
    ``paused at NAME`` to stderr and waits there until killed, ``HRM_FAST_TEST_FAIL_AT=NAME`` raises RuntimeError."""
    if os.environ.get("HRM_FAST_TEST_FAIL_AT") == name:
        raise RuntimeError(f"test hook HRM_FAST_TEST_FAIL_AT={name}")
    if os.environ.get("HRM_FAST_TEST_KILL_AT") == name:
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("HRM_FAST_TEST_PAUSE_AT") == name:
        print(f"paused at {name}", file=sys.stderr, flush=True)
        while True:
            time.sleep(60)


def nan_injection_step() -> int | None:
    """Test hook: ``HRM_FAST_INJECT_NAN_AT_STEP=N`` turns the loss of optimizer step N into NaN."""
    value = os.environ.get("HRM_FAST_INJECT_NAN_AT_STEP")
    return int(value) if value else None


@contextlib.contextmanager
def kill_in_save() -> Iterator[None]:
    """Test hook: ``HRM_FAST_TEST_KILL_IN_SAVE=N[:K]`` SIGKILLs this process in the N-th checkpoint save, at its K-th
    (default first) ``os.rename``/``os.replace``: after the temporary files are written, while they are put in place."""
    spec = os.environ.get("HRM_FAST_TEST_KILL_IN_SAVE")
    kill_in_save.calls = getattr(kill_in_save, "calls", 0) + 1
    target, _, nth = (spec or "").partition(":")
    if not target or int(target) != kill_in_save.calls:
        yield
        return
    originals = (os.replace, os.rename)
    remaining = [int(nth or 1)]

    def wrap(fn: Any) -> Any:
        def maybe_die(*args: Any, **kwargs: Any) -> Any:
            remaining[0] -= 1
            if remaining[0] == 0:
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*args, **kwargs)
        return maybe_die

    os.replace, os.rename = wrap(os.replace), wrap(os.rename)
    try:
        yield
    finally:
        os.replace, os.rename = originals


def dump_weights(model: torch.nn.Module, rank: int) -> None:
    """Test hook: ``HRM_FAST_TEST_DUMP_WEIGHTS=DIR`` writes every rank's final weights to DIR/rank<r>.safetensors."""
    folder = os.environ.get("HRM_FAST_TEST_DUMP_WEIGHTS")
    if not folder:
        return
    from safetensors.torch import save_file

    Path(folder).mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
              str(Path(folder) / f"rank{rank}.safetensors"))
