"""One task -> its augmented copies, encoded as token rows (the builder's per-task work unit).

Deterministic: everything random is drawn from a generator seeded by (build seed, hash of the task
id), so the result does not depend on which process runs the task or in what order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from hrm_fast.data.augment import NUM_DIHEDRAL, Augmentation, augmented_name, dihedral
from hrm_fast.data.encode import COLOUR_OFFSET, EOS_ID, PAD_ID, grid_tile
from hrm_fast.data.sources import ArcTask

RETRIES_FACTOR = 5  # draws per wanted copy before giving up (as HRM)


@dataclass
class TaskJob:
    """role: 'train' (test pairs go to the train split), 'val' (test pairs to val) or 'eval' (to test)."""

    task: ArcTask
    role: str
    seed: int
    num_aug: int
    canvas: int


@dataclass
class TaskRows:
    """Encoded copies of one task. Copy g's rows are consecutive; counts give rows per copy.

    names: [G] augmented names (copy 0 = the original). train_* : uint8 [R, canvas*canvas] rows for the
    train split, train_counts int64 [G]. held_* : rows for val/test (test pairs), held_counts [G],
    held_test_index int32 [R_held] (index of each row's pair in the task's test list).
    """

    task_id: str
    role: str
    names: list[str]
    train_inputs: np.ndarray
    train_labels: np.ndarray
    train_counts: np.ndarray
    held_inputs: np.ndarray
    held_labels: np.ndarray
    held_counts: np.ndarray
    held_test_index: np.ndarray


def task_rng(seed: int, task_id: str) -> np.random.Generator:
    key = int.from_bytes(hashlib.sha256(task_id.encode()).digest()[:8], "little")
    return np.random.default_rng(np.random.SeedSequence([seed, key]))


def _dihedral_stack(grids: list[np.ndarray], k: int) -> tuple[bytes, np.ndarray]:
    """Content key material for all grids under transform k: shapes then cells."""
    moved = [dihedral(g, k) for g in grids]
    shapes = np.asarray([g.shape for g in moved], dtype=np.int64).tobytes()
    return shapes, np.concatenate([g.reshape(-1) for g in moved])


def plan_augmentations(task: ArcTask, num_aug: int, rng: np.random.Generator) -> list[Augmentation]:
    """The original plus up to num_aug distinct random copies (dihedral x colour permutation of 1..9).

    Up to RETRIES_FACTOR * num_aug draws; a copy is kept only if the augmented task's content (every
    grid, in order, with its shape) differs from all copies kept so far.
    """
    identity = Augmentation.identity()
    if num_aug <= 0:
        return [identity]
    grids = list(task.grids())
    used = task.colours_used()
    stacks = [_dihedral_stack(grids, k) for k in range(NUM_DIHEDRAL)]
    draws = RETRIES_FACTOR * num_aug
    ks = rng.integers(0, NUM_DIHEDRAL, size=draws)
    perms = rng.permuted(np.tile(np.arange(1, 10, dtype=np.uint8), (draws, 1)), axis=1)
    luts = np.concatenate([np.zeros((draws, 1), dtype=np.uint8), perms], axis=1)

    def content(k: int, lut: np.ndarray) -> bytes:
        shapes, cells = stacks[k]
        return hashlib.blake2b(shapes + lut[cells].tobytes(), digest_size=16).digest()

    kept = [identity]
    seen_content = {content(0, identity.colour_lut())}
    # two draws with the same transform and the same colours on the used colours give the same content
    seen_keys = {(0, identity.colour_lut()[used].tobytes())}
    for k, lut in zip(ks.tolist(), luts):
        key = (k, lut[used].tobytes())
        if key in seen_keys:
            continue
        seen_keys.add(key)
        digest = content(k, lut)
        if digest in seen_content:
            continue
        seen_content.add(digest)
        kept.append(Augmentation(k, tuple(lut.tolist())))
        if len(kept) > num_aug:
            break
    return kept


def _token_luts(augs: list[Augmentation]) -> np.ndarray:
    """uint8 [G, 12]: token -> token map of each copy (PAD and EOS fixed, colours permuted)."""
    luts = np.empty((len(augs), COLOUR_OFFSET + 10), dtype=np.uint8)
    luts[:, PAD_ID] = PAD_ID
    luts[:, EOS_ID] = EOS_ID
    luts[:, COLOUR_OFFSET:] = np.asarray([a.colours for a in augs], dtype=np.uint8) + COLOUR_OFFSET
    return luts


def _moved_shape(grid: np.ndarray, k: int) -> tuple[int, int]:
    """Shape of dihedral(grid, k): rotations by 90/270 and (anti-)transposes swap the sides."""
    return grid.shape[::-1] if k in (1, 3, 6, 7) else grid.shape


def _encode_pairs(
    pairs: list[tuple[np.ndarray, np.ndarray]],
    augs: list[Augmentation],
    canvas: int,
    rng: np.random.Generator | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Encode every pair of every copy -> (inputs, labels) uint8 [G * P, canvas*canvas].

    With rng, each copy translates all its pairs but one (chosen at random) by a random offset that
    keeps both grids of the pair inside the canvas (HRM's translational augmentation).
    """
    n_copies, n_pairs = len(augs), len(pairs)
    rows = n_copies * n_pairs
    boards = np.zeros((2, rows, canvas, canvas), dtype=np.uint8)
    if rows == 0:
        return boards[0].reshape(0, canvas * canvas), boards[1].reshape(0, canvas * canvas)
    # tiles[k][p] = (input tile, output tile) under dihedral k, computed once per transform used
    tiles: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    for aug in augs:
        if aug.dihedral not in tiles:
            tiles[aug.dihedral] = [
                (grid_tile(dihedral(i, aug.dihedral), canvas), grid_tile(dihedral(o, aug.dihedral), canvas))
                for i, o in pairs
            ]
    if rng is not None:
        fixed = rng.integers(0, n_pairs, size=n_copies)
        unit = rng.random(size=(n_copies, n_pairs, 2))
    row = 0
    for g, aug in enumerate(augs):
        copy_tiles = tiles[aug.dihedral]
        for p, (tin, tout) in enumerate(copy_tiles):
            r = c = 0
            if rng is not None and p != fixed[g]:
                h, w = np.maximum(_moved_shape(pairs[p][0], aug.dihedral), _moved_shape(pairs[p][1], aug.dihedral))
                r = int(unit[g, p, 0] * (canvas - h + 1))
                c = int(unit[g, p, 1] * (canvas - w + 1))
            boards[0, row, r : r + tin.shape[0], c : c + tin.shape[1]] = tin[: canvas - r, : canvas - c]
            boards[1, row, r : r + tout.shape[0], c : c + tout.shape[1]] = tout[: canvas - r, : canvas - c]
            row += 1
    flat = boards.reshape(2, rows, canvas * canvas)
    luts = _token_luts(augs)
    for g in range(n_copies):  # per copy colour map, applied to its block of rows
        block = slice(g * n_pairs, (g + 1) * n_pairs)
        flat[:, block] = luts[g][flat[:, block]]
    return flat[0], flat[1]


def expand_task(job: TaskJob) -> TaskRows:
    """Plan the copies of job.task and encode its rows for the train and held-out splits."""
    task = job.task
    rng = task_rng(job.seed, task.task_id)
    aug_rng, shift_rng = rng.spawn(2)
    augs = plan_augmentations(task, job.num_aug, aug_rng)
    train_pairs = task.train + (task.test if job.role == "train" else [])
    held_pairs = task.test if job.role != "train" else []
    t_in, t_lab = _encode_pairs(train_pairs, augs, job.canvas, shift_rng)
    h_in, h_lab = _encode_pairs(held_pairs, augs, job.canvas, None)
    n_copies = len(augs)
    return TaskRows(
        task_id=task.task_id,
        role=job.role,
        names=[augmented_name(task.task_id, a) for a in augs],
        train_inputs=t_in,
        train_labels=t_lab,
        train_counts=np.full(n_copies, len(train_pairs), dtype=np.int64),
        held_inputs=h_in,
        held_labels=h_lab,
        held_counts=np.full(n_copies, len(held_pairs), dtype=np.int64),
        held_test_index=np.tile(np.arange(len(held_pairs), dtype=np.int32), n_copies),
    )
