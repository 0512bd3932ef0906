"""Grid <-> token sequence encoding on a square canvas (HRM's layout).

Tokens: 0 = PAD, 1 = EOS, 2..11 = colours 0..9 (vocab 12). A grid [H, W] is placed at ``offset`` on a
``canvas x canvas`` board, flattened row-major to ``canvas * canvas`` uint8 tokens. EOS marks the
border: the row just below the grid (over its columns) and the column just right of it (over its
rows), where they fall inside the canvas; the corner cell stays PAD.
"""

from __future__ import annotations

import numpy as np

PAD_ID = 0
EOS_ID = 1
COLOUR_OFFSET = 2
VOCAB_SIZE = 12
IGNORE_LABEL = -100  # label of a position the loss skips (batches carry it where the on-disk label is PAD)


def encode_grid(grid: np.ndarray, canvas: int, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Encode a grid [H, W] of colours 0..9 -> uint8 [canvas * canvas] tokens (PAD 0, EOS 1, colours+2)."""
    grid = np.asarray(grid)
    if grid.ndim != 2:
        raise ValueError(f"grid must be 2-D, got shape {grid.shape}")
    height, width = grid.shape
    row, col = offset
    if row < 0 or col < 0 or row + height > canvas or col + width > canvas:
        raise ValueError(f"grid {height}x{width} at offset {offset} does not fit a {canvas}x{canvas} canvas")
    board = np.zeros((canvas, canvas), dtype=np.uint8)
    board[row : row + height, col : col + width] = grid.astype(np.uint8) + COLOUR_OFFSET
    if row + height < canvas:
        board[row + height, col : col + width] = EOS_ID
    if col + width < canvas:
        board[row : row + height, col + width] = EOS_ID
    return board.reshape(-1)


def grid_tile(grid: np.ndarray, canvas: int) -> np.ndarray:
    """Tokens of a grid plus its EOS border: uint8 [min(H+1, canvas), min(W+1, canvas)].

    Writing this tile at offset (r, c) of an all-PAD board, clipped to the board, equals
    ``encode_grid(grid, canvas, (r, c))`` (the tile's corner is PAD). The builder uses it to place
    many copies of a grid cheaply.
    """
    height, width = grid.shape
    tile = np.zeros((height + 1, width + 1), dtype=np.uint8)
    tile[:height, :width] = grid.astype(np.uint8) + COLOUR_OFFSET
    tile[height, :width] = EOS_ID
    tile[:height, width] = EOS_ID
    return tile[: min(height + 1, canvas), : min(width + 1, canvas)]


def crop_prediction(tokens: np.ndarray, canvas: int) -> np.ndarray:
    """HRM's crop of a predicted token board [canvas * canvas] -> uint8 grid [h, w] of colours 0..9.

    Takes the largest-area rectangle anchored at the top-left corner whose cells are all colour tokens
    (2..11): the usable width of row r is the shortest run of colour tokens from column 0 over rows
    0..r; the first row count reaching the maximum area wins. May return a 0x0 grid.
    """
    board = np.asarray(tokens).reshape(canvas, canvas)
    is_colour = (board >= COLOUR_OFFSET) & (board < COLOUR_OFFSET + 10)
    # run length of colour tokens from column 0, per row
    runs = np.where(is_colour.all(axis=1), canvas, np.argmin(is_colour, axis=1))
    widths = np.minimum.accumulate(runs)
    areas = widths * np.arange(1, canvas + 1)
    best = int(np.argmax(areas))
    if areas[best] == 0:
        return np.zeros((0, 0), dtype=np.uint8)
    height, width = best + 1, int(widths[best])
    return (board[:height, :width] - COLOUR_OFFSET).astype(np.uint8)


def decode_grid(tokens: np.ndarray, canvas: int) -> np.ndarray:
    """Recover a grid written by ``encode_grid`` at any offset -> uint8 [H, W] (0x0 if none).

    Uses the bounding box of the colour tokens, so it also decodes translated training rows.
    """
    board = np.asarray(tokens).reshape(canvas, canvas)
    is_colour = (board >= COLOUR_OFFSET) & (board < COLOUR_OFFSET + 10)
    rows = np.flatnonzero(is_colour.any(axis=1))
    cols = np.flatnonzero(is_colour.any(axis=0))
    if rows.size == 0:
        return np.zeros((0, 0), dtype=np.uint8)
    block = board[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return (block - COLOUR_OFFSET).astype(np.uint8)
