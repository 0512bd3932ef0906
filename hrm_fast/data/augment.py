"""ARC augmentations: the 8 dihedral transforms times permutations of colours 1..9 (black fixed).

Every function here has its exact inverse next to it; evaluation uses the inverses to map a
prediction made on an augmented copy back to the original task.

Augmented puzzle names follow the original HRM builder: ``"<task_id>_t<k>_<c0 c1 ... c9>"`` where
``k`` is the dihedral index and the ten digits are the forward colour map (``colours[c]`` is the new
colour of colour ``c``). The identity augmentation keeps the plain task id. TRM's
``"<task_id>|||t<k>|||<digits>"`` spelling is accepted by the parser as well.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

NUM_COLOURS = 10
NUM_DIHEDRAL = 8

# The inverse of dihedral k: rot90 <-> rot270, every other transform is its own inverse.
DIHEDRAL_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)

_NAME_RE = re.compile(r"^(?P<task>.+)(?:_t|\|\|\|t)(?P<k>[0-7])(?:_|\|\|\|)(?P<perm>[0-9]{10})$")


def dihedral(grid: np.ndarray, k: int) -> np.ndarray:
    """Apply dihedral transform k to a 2-D grid [H, W] (any dtype); returns a view or copy.

    k: 0 identity, 1 rot90 (counter-clockwise, as ``np.rot90``), 2 rot180, 3 rot270, 4 flip left-right,
    5 flip up-down, 6 transpose, 7 anti-transpose (reflection over the anti-diagonal).
    """
    if k == 0:
        return grid
    if k == 1:
        return np.rot90(grid, 1)
    if k == 2:
        return np.rot90(grid, 2)
    if k == 3:
        return np.rot90(grid, 3)
    if k == 4:
        return grid[:, ::-1]
    if k == 5:
        return grid[::-1, :]
    if k == 6:
        return grid.T
    if k == 7:
        return grid[::-1, ::-1].T
    raise ValueError(f"dihedral index must be in 0..7, got {k}")


def inverse_dihedral(grid: np.ndarray, k: int) -> np.ndarray:
    """Undo ``dihedral(., k)``: ``inverse_dihedral(dihedral(g, k), k) == g``."""
    if not 0 <= k < NUM_DIHEDRAL:
        raise ValueError(f"dihedral index must be in 0..7, got {k}")
    return dihedral(grid, DIHEDRAL_INVERSE[k])


@dataclass(frozen=True)
class Augmentation:
    """One dihedral transform plus one colour map.

    dihedral: 0..7 (see ``dihedral``). colours: length-10 tuple, ``colours[c]`` is the new colour of
    colour c; a permutation of 0..9 with ``colours[0] == 0`` (black is never recoloured).
    """

    dihedral: int
    colours: tuple[int, ...]

    def __post_init__(self) -> None:
        if not 0 <= self.dihedral < NUM_DIHEDRAL:
            raise ValueError(f"dihedral index must be in 0..7, got {self.dihedral}")
        if len(self.colours) != NUM_COLOURS or sorted(self.colours) != list(range(NUM_COLOURS)):
            raise ValueError(f"colours must be a permutation of 0..9, got {self.colours}")
        if self.colours[0] != 0:
            raise ValueError(f"colour 0 (black) must stay 0, got {self.colours}")
        object.__setattr__(self, "colours", tuple(int(c) for c in self.colours))

    @staticmethod
    def identity() -> Augmentation:
        return Augmentation(0, tuple(range(NUM_COLOURS)))

    @property
    def is_identity(self) -> bool:
        return self.dihedral == 0 and self.colours == tuple(range(NUM_COLOURS))

    def colour_lut(self) -> np.ndarray:
        """uint8 [10] forward colour map."""
        return np.asarray(self.colours, dtype=np.uint8)

    def inverse_colour_lut(self) -> np.ndarray:
        """uint8 [10] inverse colour map."""
        inv = np.empty(NUM_COLOURS, dtype=np.uint8)
        inv[np.asarray(self.colours)] = np.arange(NUM_COLOURS, dtype=np.uint8)
        return inv

    def apply(self, grid: np.ndarray) -> np.ndarray:
        """Augment a grid [H, W] of colours 0..9; returns a new contiguous uint8 array."""
        grid = np.asarray(grid)
        return np.ascontiguousarray(dihedral(self.colour_lut()[grid], self.dihedral))

    def invert(self, grid: np.ndarray) -> np.ndarray:
        """Exact inverse of ``apply``: ``invert(apply(g)) == g``; returns contiguous uint8."""
        grid = np.asarray(grid)
        return np.ascontiguousarray(self.inverse_colour_lut()[inverse_dihedral(grid, self.dihedral)])

    def inverse(self) -> Augmentation:
        """The augmentation whose ``apply`` equals this one's ``invert``."""
        inv_colours = tuple(int(c) for c in self.inverse_colour_lut())
        return Augmentation(DIHEDRAL_INVERSE[self.dihedral], inv_colours)


def augmented_name(task_id: str, aug: Augmentation) -> str:
    """Name of an augmented copy, HRM spelling ``"<task_id>_t<k>_<10 digits>"``; identity -> task_id."""
    if aug.is_identity:
        return task_id
    return f"{task_id}_t{aug.dihedral}_{''.join(str(c) for c in aug.colours)}"


def parse_augmented_name(name: str) -> tuple[str, Augmentation]:
    """Inverse of ``augmented_name``: ``name -> (task_id, augmentation)``.

    A name without an augmentation suffix is an original task (identity augmentation).
    """
    match = _NAME_RE.match(name)
    if match is None:
        return name, Augmentation.identity()
    colours = tuple(int(ch) for ch in match["perm"])
    try:
        aug = Augmentation(int(match["k"]), colours)
    except ValueError:  # digits that are not a valid colour map: not an augmentation suffix
        return name, Augmentation.identity()
    return match["task"], aug


def looks_augmented(task_id: str) -> bool:
    """True if a task id would be mistaken for an augmented name (such ids are refused by the builder)."""
    return parse_augmented_name(task_id)[0] != task_id
