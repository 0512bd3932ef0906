"""Fault handling for the training loop: graceful stop on SIGINT/SIGTERM, non-finite loss detection, test kill hooks.

Non-finite detection keeps a device-side record of the first bad step, updated every step with
tensor ops only (no host sync), and read on the host at check points (every step on CPU where a
read costs nothing, every ``log.every`` steps on CUDA, and always before a checkpoint is written).
So a bad step is always named exactly, and no checkpoint is ever written after it.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from types import FrameType

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


def fault_point(name: str) -> None:
    """Test hook at the moment ``NAME`` (e.g. ``step5``: in optimizer step 5, after its batch was drawn; ``resume``:
    while a resume rewrites the log): ``HRM_FAST_TEST_KILL_AT=NAME`` SIGKILLs this process there,
    ``HRM_FAST_TEST_PAUSE_AT=NAME`` prints ``paused at NAME`` to stderr and waits there until killed."""
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
