"""The run folder's logs: ``metrics.jsonl``, TensorBoard events and (only when asked) wandb.

Only rank 0 constructs a real :class:`RunLogger`; other ranks get :class:`NullLogger`. wandb is
imported lazily, so it is not a dependency unless ``log.wandb`` is ``online`` or ``offline``.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any


class NullLogger:
    """Logger of non-zero ranks: accepts everything, writes nothing."""

    def log(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def text(self, message: str) -> None:
        pass

    def close(self) -> None:
        pass


class RunLogger(NullLogger):
    """Writes every ``log`` call to ``metrics.jsonl`` (one JSON object per line), TensorBoard and wandb."""

    def __init__(self, run_dir: Path, config_dict: dict[str, Any], tensorboard: bool = True,
                 wandb_mode: str = "off", run_name: str | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.run_dir / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115 (closed in close())
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
        self._wandb = None
        if wandb_mode in ("online", "offline"):
            try:
                import wandb
            except ImportError as err:
                raise RuntimeError(f"log.wandb={wandb_mode} needs the wandb package: pip install wandb") from err
            self._wandb = wandb.init(project="hrm_fast", name=run_name or self.run_dir.name, mode=wandb_mode,
                                     config=config_dict, dir=str(self.run_dir))
        elif wandb_mode != "off":
            raise ValueError(f"log.wandb must be off, online or offline, got {wandb_mode!r}")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        clean = {k: float(v) for k, v in metrics.items()}
        record = {"step": step, "time": round(time.time(), 3)}
        record.update({k: (v if math.isfinite(v) else str(v)) for k, v in clean.items()})
        self._jsonl.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in clean.items():
                self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log(clean, step=step)

    def text(self, message: str) -> None:
        if self._tb is not None:
            self._tb.add_text("events", message)

    def close(self) -> None:
        self._jsonl.flush()
        os.fsync(self._jsonl.fileno())
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file, in order."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
