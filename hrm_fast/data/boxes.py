"""Bounding boxes of the cells a row uses on its canvas: what pad-aware windows (``model.pad_aware``) hold and what
size-bucketed training batches (``data.bucket_batches``) sort by."""

from __future__ import annotations

import torch

from hrm_fast.data.encode import IGNORE_LABEL, PAD_ID


def bounding_boxes(inputs: torch.Tensor, labels: torch.Tensor, canvas: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's box of cells that are not PAD in ``inputs`` or not IGNORE in ``labels`` (both [B, canvas**2] int,
    labels as in batches): (top-left cell, height and width), both int64 [B, 2]; an empty row has (0, 0) and a
    size <= 0."""
    needed = ((inputs != PAD_ID) | (labels != IGNORE_LABEL)).view(-1, canvas, canvas)
    index = torch.arange(canvas, device=inputs.device)
    first, size = [], []
    for occupied in (needed.any(2), needed.any(1)):  # [B, canvas]: rows, then columns, holding a needed cell
        start = torch.where(occupied, index, canvas).amin(1)
        end = torch.where(occupied, index + 1, 0).amax(1)
        first.append(torch.where(occupied.any(1), start, 0))
        size.append(end - start)
    return torch.stack(first, 1), torch.stack(size, 1)


def box_sides(inputs: torch.Tensor, labels: torch.Tensor, canvas: int) -> torch.Tensor:
    """int64 [B]: the side of the smallest square holding each row's box (at least 1)."""
    return bounding_boxes(inputs, labels, canvas)[1].amax(1).clamp(min=1)
