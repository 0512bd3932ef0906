"""ARC grids as numpy arrays: validation, hashing keys and JSON conversion; reading a JSON file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

MAX_GRID_SIZE = 30


def read_json(path: str | Path, error: type[Exception]) -> Any:
    """The JSON value in ``path``; ``error("<path>: cannot read JSON (...)")`` when it cannot be read or parsed."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON or UTF-8; RecursionError: deep nesting
        raise error(f"{path}: cannot read JSON ({type(e).__name__}: {e})") from None


def grid_key(grid: np.ndarray) -> bytes:
    """Hashable identity of a grid: its shape and its cells (uint8 [H, W]); equal keys <=> equal grids."""
    g = np.ascontiguousarray(grid, dtype=np.uint8)
    return np.asarray(g.shape, dtype=np.int32).tobytes() + g.tobytes()


def grids_equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Exact ARC equality: same shape and every cell."""
    return a.shape == b.shape and bool(np.array_equal(a, b))


def grid_problem(obj: Any) -> str | None:
    """Why ``obj`` is not a valid ARC grid (a non-empty rectangular list of lists of ints 0..9, at most
    30x30), or None when it is one."""
    if not isinstance(obj, list) or not obj:
        return "is not a non-empty list of rows"
    if len(obj) > MAX_GRID_SIZE:
        return f"has {len(obj)} rows (more than {MAX_GRID_SIZE})"
    width = None
    for r, row in enumerate(obj):
        if not isinstance(row, list) or not row:
            return f"row {r} is not a non-empty list"
        if width is None:
            width = len(row)
        elif len(row) != width:
            return f"is ragged (row {r} has {len(row)} cells, row 0 has {width})"
        for v in row:
            # bool is an int subclass; a JSON true/false is not a colour.
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 9:
                return f"row {r} holds {v!r}, not a colour 0..9"
    if width is not None and width > MAX_GRID_SIZE:
        return f"has {width} columns (more than {MAX_GRID_SIZE})"
    return None


def to_grid(obj: Any) -> np.ndarray:
    """JSON list of lists -> uint8 [H, W]; raises ValueError when it is not a valid grid."""
    problem = grid_problem(obj)
    if problem is not None:
        raise ValueError(f"grid {problem}")
    return np.asarray(obj, dtype=np.uint8)


def to_json_grid(grid: np.ndarray) -> list[list[int]]:
    """uint8/int [H, W] -> list of lists of Python ints (JSON-serialisable)."""
    return [[int(v) for v in row] for row in np.asarray(grid)]
