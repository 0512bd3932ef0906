"""Augmentations: dihedral transforms, colour maps, their inverses, and augmented names."""

import itertools

import numpy as np
import pytest

from hrm_fast.data.augment import (
    Augmentation,
    augmented_name,
    dihedral,
    inverse_dihedral,
    looks_augmented,
    parse_augmented_name,
)

RNG = np.random.default_rng(0)
GRID = RNG.integers(0, 10, size=(3, 5))  # non-square, so transposes and rotations change the shape


def _by_formula(grid: np.ndarray, k: int) -> np.ndarray:
    """Each transform written cell by cell, independently of the implementation."""
    h, w = grid.shape
    if k in (0, 2, 4, 5):
        out = np.empty((h, w), grid.dtype)
    else:
        out = np.empty((w, h), grid.dtype)
    for i, j in itertools.product(range(out.shape[0]), range(out.shape[1])):
        src = {
            0: (i, j),
            1: (j, w - 1 - i),  # counter-clockwise quarter turn
            2: (h - 1 - i, w - 1 - j),
            3: (h - 1 - j, i),
            4: (i, w - 1 - j),
            5: (h - 1 - i, j),
            6: (j, i),
            7: (h - 1 - j, w - 1 - i),
        }[k]
        out[i, j] = grid[src]
    return out


@pytest.mark.parametrize("k", range(8))
def test_dihedral_matches_definition_and_inverts(k):
    moved = dihedral(GRID, k)
    np.testing.assert_array_equal(moved, _by_formula(GRID, k))
    np.testing.assert_array_equal(inverse_dihedral(moved, k), GRID)


def test_dihedral_transforms_are_distinct():
    seen = {dihedral(GRID.reshape(5, 3), k).tobytes() + bytes(dihedral(GRID.reshape(5, 3), k).shape) for k in range(8)}
    assert len(seen) == 8


def test_all_colour_permutations_invert():
    """Every permutation of colours 1..9 (9! of them), black fixed: inverse map undoes the map."""
    perms = np.array(list(itertools.permutations(range(1, 10))), dtype=np.uint8)
    luts = np.concatenate([np.zeros((len(perms), 1), np.uint8), perms], axis=1)
    inverse = np.argsort(luts, axis=1).astype(np.uint8)
    cells = np.arange(10, dtype=np.uint8)
    mapped = luts[:, cells]
    back = np.take_along_axis(inverse, mapped.astype(np.int64), axis=1)
    assert (back == cells).all()
    assert (mapped[:, 0] == 0).all()


@pytest.mark.parametrize("k", range(8))
def test_augmentation_apply_invert_roundtrip(k):
    for _ in range(40):
        colours = (0, *RNG.permutation(np.arange(1, 10)).tolist())
        aug = Augmentation(k, colours)
        out = aug.apply(GRID)
        # colour c of the original cell becomes colours[c] in the moved position
        np.testing.assert_array_equal(out, _by_formula(np.asarray(colours)[GRID], k))
        np.testing.assert_array_equal(aug.invert(out), GRID)
        np.testing.assert_array_equal(aug.inverse().apply(out), GRID)
        name = augmented_name("0a1b2c3d", aug)
        assert parse_augmented_name(name) == ("0a1b2c3d", aug)


def test_identity_names_and_hrm_spellings():
    ident = Augmentation.identity()
    assert ident.is_identity and augmented_name("abc", ident) == "abc"
    assert parse_augmented_name("abc") == ("abc", ident)
    # a task id with underscores survives
    aug = Augmentation(6, (0, 9, 8, 7, 6, 5, 4, 3, 2, 1))
    assert parse_augmented_name(augmented_name("Above_Below_1", aug)) == ("Above_Below_1", aug)
    # HRM and TRM spellings of the same copy
    assert parse_augmented_name("007bbfb7_t6_0987654321") == ("007bbfb7", aug)
    assert parse_augmented_name("007bbfb7|||t6|||0987654321") == ("007bbfb7", aug)
    assert looks_augmented("x_t1_0123456789") and not looks_augmented("x_t1_0123")


@pytest.mark.parametrize(
    "k,colours",
    [(8, tuple(range(10))), (0, (1, 0, 2, 3, 4, 5, 6, 7, 8, 9)), (0, (0, 1, 1, 3, 4, 5, 6, 7, 8, 9)), (0, (0, 1))],
)
def test_invalid_augmentations_refused(k, colours):
    with pytest.raises(ValueError):
        Augmentation(k, colours)
