"""hrm_fast: train and evaluate the Hierarchical Reasoning Model on ARC, fast, on one GPU or many."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from hrm_fast.config import Config
    from hrm_fast.model.hrm import HRM
    from hrm_fast.solve import Solver


def load_checkpoint(path: Any, device: Any = "cpu") -> tuple[HRM, Config]:
    """Load an hrm_fast checkpoint directory -> (model, config). See :mod:`hrm_fast.checkpoint`."""
    from hrm_fast.checkpoint import load_checkpoint as _load  # lazy: keeps `import hrm_fast` light

    return _load(path, device)


def __getattr__(name: str) -> Any:
    """Lazy exports: ``hrm_fast.Solver`` (see :mod:`hrm_fast.solve`) is imported on first use."""
    if name == "Solver":
        from hrm_fast.solve import Solver

        return Solver
    raise AttributeError(f"module 'hrm_fast' has no attribute {name!r}")


__all__ = ["Solver", "__version__", "load_checkpoint"]
