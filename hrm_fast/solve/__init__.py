"""Solving new tasks (fit new puzzle rows, predict, vote) and starting runs from checkpoints (``init.from``)."""

from hrm_fast.solve.solver import Attempt, SolveConfig, Solver, TaskResult
from hrm_fast.solve.tasks import SolveError

__all__ = ["Attempt", "SolveConfig", "SolveError", "Solver", "TaskResult"]
