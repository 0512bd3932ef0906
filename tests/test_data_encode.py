"""Grid <-> token encoding and HRM's prediction crop."""

import numpy as np
import pytest

from hrm_fast.data.encode import crop_prediction, decode_grid, encode_grid, grid_tile

RNG = np.random.default_rng(1)


def _crop_by_scan(tokens: np.ndarray, canvas: int) -> np.ndarray:
    """The crop as described in docs/hrm.md §4.4: scan rows from the top, shrinking the width."""
    board = tokens.reshape(canvas, canvas)
    best_area, best = 0, (0, 0)
    width = canvas
    for rows in range(1, canvas + 1):
        for c in range(width):
            if not 2 <= board[rows - 1, c] <= 11:
                width = c
                break
        if rows * width > best_area:
            best_area, best = rows * width, (rows, width)
    return (board[: best[0], : best[1]] - 2).astype(np.uint8)


@pytest.mark.parametrize("shape", [(1, 1), (30, 30), (30, 1), (1, 30), (7, 12), (29, 30)])
def test_encode_roundtrip_and_border(shape):
    grid = RNG.integers(0, 10, size=shape)
    tokens = encode_grid(grid, 30)
    assert tokens.dtype == np.uint8 and tokens.shape == (900,)
    np.testing.assert_array_equal(crop_prediction(tokens, 30), grid)
    np.testing.assert_array_equal(decode_grid(tokens, 30), grid)
    board = tokens.reshape(30, 30)
    h, w = shape
    assert (board[:h, :w] == grid + 2).all()
    if h < 30:
        assert (board[h, :w] == 1).all()
    if w < 30:
        assert (board[:h, w] == 1).all()
    expected_eos = (w if h < 30 else 0) + (h if w < 30 else 0)
    assert (board == 1).sum() == expected_eos
    assert (board == 0).sum() == 900 - h * w - expected_eos


def test_encode_with_offset_and_tile():
    for _ in range(200):
        canvas = int(RNG.integers(1, 31))
        h, w = RNG.integers(1, canvas + 1, size=2)
        r, c = int(RNG.integers(0, canvas - h + 1)), int(RNG.integers(0, canvas - w + 1))
        grid = RNG.integers(0, 10, size=(h, w))
        tokens = encode_grid(grid, canvas, (r, c))
        np.testing.assert_array_equal(decode_grid(tokens, canvas), grid)
        board = np.zeros((canvas, canvas), np.uint8)
        tile = grid_tile(grid, canvas)
        board[r : r + tile.shape[0], c : c + tile.shape[1]] = tile[: canvas - r, : canvas - c]
        np.testing.assert_array_equal(board.reshape(-1), tokens)


def test_encode_refuses_what_does_not_fit():
    with pytest.raises(ValueError):
        encode_grid(np.zeros((5, 5), int), 4)
    with pytest.raises(ValueError):
        encode_grid(np.zeros((3, 3), int), 5, (3, 0))


def test_crop_matches_scan_on_noisy_predictions():
    for i in range(400):
        grid = RNG.integers(0, 10, size=RNG.integers(1, 31, size=2))
        tokens = encode_grid(grid, 30)
        if i % 2:
            tokens = tokens.copy()
            tokens[RNG.integers(0, 900, size=RNG.integers(1, 20))] = RNG.integers(0, 12)
        else:
            tokens = RNG.integers(0, 12, size=900).astype(np.uint8)
        np.testing.assert_array_equal(crop_prediction(tokens, 30), _crop_by_scan(tokens, 30))


def test_crop_empty_prediction():
    assert crop_prediction(np.zeros(100, np.uint8), 10).shape == (0, 0)
    assert decode_grid(np.ones(100, np.uint8), 10).shape == (0, 0)
