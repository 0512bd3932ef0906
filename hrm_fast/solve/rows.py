"""Puzzle-table rows by name: the one place that maps a checkpoint's rows onto a new list of identifiers.

A puzzle identifier's name is its augmented task name (``identifiers.json`` of a built dataset; row 0 is
``"<blank>"``). Rows whose name the checkpoint has are copied; every other row starts from the mean of the
checkpoint's trained rows (rows 1..N-1), as TRM's loader initialises unseen puzzles.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from hrm_fast.config import Config

BLANK = "<blank>"
IDENTIFIERS = "identifiers.json"


def checkpoint_names(folder: str | Path, config: Config, num_rows: int) -> list[str] | None:
    """The identifier names of a checkpoint's puzzle table ([num_rows] strings), or None if unknown.

    Read from ``<folder>/identifiers.json`` when the checkpoint stores them, else from the
    ``identifiers.json`` of the dataset its ``config.yaml`` names (``data.path``; a relative path is also
    tried from each folder above the checkpoint, i.e. from where its run was started). A list of the
    wrong length (another dataset build) counts as unknown."""
    data = Path(config.data.path)
    above = [] if data.is_absolute() else [up / data for up in Path(folder).resolve().parents]
    for path in [Path(folder) / IDENTIFIERS] + [d / IDENTIFIERS for d in (data, *above)]:
        if path.is_file():
            try:
                names = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(names, list) and len(names) == num_rows:
                return [str(n) for n in names]
    return None


def mean_row(weights: torch.Tensor) -> torch.Tensor:
    """[ndim]: mean of the trained rows (all but the blank row 0) of a table [N, ndim]; zeros if N <= 1."""
    if weights.shape[0] <= 1:
        return torch.zeros(weights.shape[1], dtype=weights.dtype, device=weights.device)
    return weights[1:].mean(dim=0)


def map_rows(weights: torch.Tensor, old_names: list[str] | None, new_names: list[str]) -> tuple[torch.Tensor, int]:
    """(table [len(new_names), ndim], rows copied by name) from a checkpoint table ``weights`` [N, ndim].

    ``old_names``: the checkpoint's names (None: unknown, so only the blank row 0 is kept). Names the
    checkpoint lacks get :func:`mean_row`."""
    known = {name: i for i, name in enumerate(old_names)} if old_names is not None else {BLANK: 0}
    table = mean_row(weights).expand(len(new_names), -1).clone()
    copied = 0
    for j, name in enumerate(new_names):
        i = known.get(name)
        if i is not None and i < weights.shape[0]:
            table[j] = weights[i]
            copied += name != BLANK
    return table, copied


def extend_table(weights: torch.Tensor, extra: int) -> torch.Tensor:
    """[N + extra, ndim]: the table with ``extra`` new rows at :func:`mean_row` appended (a new tensor)."""
    new = mean_row(weights).expand(extra, -1)
    return torch.cat([weights, new.to(weights.dtype)], dim=0)
