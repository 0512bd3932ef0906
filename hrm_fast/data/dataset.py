"""Reading a built dataset: memory-mapped split arrays, HRM's group sampler, the eval iterator.

Works on folders written by ``hrm_fast.data.build`` and by the original HRM builder (same files,
without our extras ``metadata.json``, ``tasks.json`` and ``all__test_index.npy``).

Batches are ``dict[str, torch.Tensor]``: ``inputs`` int32 [B, seq_len], ``labels`` int32 [B, seq_len],
``puzzle_identifiers`` int32 [B]. On disk the labels keep HRM's ignore id (``ignore_label_id`` in
dataset.json, 0 = PAD); batches carry ``IGNORE_LABEL`` (-100) at those positions instead.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from hrm_fast.data.boxes import box_sides
from hrm_fast.data.encode import IGNORE_LABEL
from hrm_fast.data.sources import DataError
from hrm_fast.data.writer import SplitSizes

Batch = dict[str, torch.Tensor]


class DatasetMetadata(BaseModel):
    """A split's ``dataset.json`` (HRM's fields; unknown extra fields are kept)."""

    model_config = ConfigDict(extra="allow")

    pad_id: int = 0
    ignore_label_id: int | None = 0
    blank_identifier_id: int = 0
    vocab_size: int
    seq_len: int
    num_puzzle_identifiers: int
    total_groups: int
    mean_puzzle_examples: float
    sets: list[str] = ["all"]
    total_puzzles: int | None = None


class PuzzleDataset(SplitSizes):
    """One split of a dataset folder, memory-mapped.

    Arrays (numpy, read-only): inputs / labels uint8 [N, seq_len]; puzzle_identifiers [P];
    puzzle_indices [P+1] (example offsets of each puzzle); group_indices [G+1] (puzzle offsets of each
    group = one original task and its copies); test_index int32 [N] or None (index of the row's pair
    in its task's test list; only in our val/test splits). ``num_examples`` = N (checked on load).
    """

    def __init__(self, path: str | Path, split: str) -> None:
        self.root = Path(path)
        self.split = split
        self.folder = self.root / split
        meta_path = self.folder / "dataset.json"
        if not meta_path.is_file():
            raise DataError(f"{meta_path}: missing (no split {split!r} in {self.root}; build the dataset first?)")
        try:
            self.metadata = DatasetMetadata.model_validate_json(meta_path.read_text())
        except ValidationError as err:
            raise DataError(f"{meta_path}: invalid dataset.json ({err})") from None
        if self.metadata.sets != ["all"]:
            raise DataError(f"{meta_path}: only the set 'all' is supported, found {self.metadata.sets}")
        self.inputs = self._load("inputs", mmap=True)
        self.labels = self._load("labels", mmap=True)
        self.puzzle_identifiers = self._load("puzzle_identifiers")
        self.puzzle_indices = self._load("puzzle_indices").astype(np.int64)
        self.group_indices = self._load("group_indices").astype(np.int64)
        test_index_path = self.folder / "all__test_index.npy"
        self.test_index = np.load(test_index_path) if test_index_path.is_file() else None
        self._check()

    def _load(self, name: str, mmap: bool = False) -> np.ndarray:
        path = self.folder / f"all__{name}.npy"
        if not path.is_file():
            raise DataError(f"{path}: missing")
        return np.load(path, mmap_mode="r" if mmap else None)

    def _check(self) -> None:
        seq_len, rows = self.metadata.seq_len, self.inputs.shape[0]
        if self.inputs.shape != self.labels.shape or self.inputs.shape[1:] != (seq_len,):
            raise DataError(
                f"{self.folder}: inputs {self.inputs.shape} / labels {self.labels.shape} do not match seq_len {seq_len}"
            )
        if self.puzzle_indices[-1] != rows or len(self.puzzle_indices) != len(self.puzzle_identifiers) + 1:
            raise DataError(f"{self.folder}: puzzle_indices do not match the examples / puzzles")
        if self.group_indices[-1] != len(self.puzzle_identifiers):
            raise DataError(f"{self.folder}: group_indices do not match the puzzles")

    # ----------------------------------------------------------------------------- sizes
    @property
    def seq_len(self) -> int:
        return self.metadata.seq_len

    @property
    def canvas(self) -> int:
        return math.isqrt(self.metadata.seq_len)

    # ----------------------------------------------------------------------------- extras
    @cached_property
    def identifiers(self) -> list[str]:
        """identifier -> puzzle name, from the root ``identifiers.json`` ([] if absent)."""
        path = self.root / "identifiers.json"
        return json.loads(path.read_text()) if path.is_file() else []

    @cached_property
    def build_metadata(self) -> dict:
        """Our root ``metadata.json`` ({} for datasets from the original builder)."""
        path = self.root / "metadata.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    @cached_property
    def tasks(self) -> dict:
        """{task_id: original task} from this split's ``tasks.json`` ({} if absent)."""
        path = self.folder / "tasks.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def example_puzzles(self, indices: np.ndarray) -> np.ndarray:
        """Puzzle index (into puzzle_identifiers) of each example index."""
        return np.searchsorted(self.puzzle_indices, np.asarray(indices), side="right") - 1

    def example_identifiers(self, indices: np.ndarray) -> np.ndarray:
        """Puzzle identifier of each example index."""
        return self.puzzle_identifiers[self.example_puzzles(indices)]

    # ----------------------------------------------------------------------------- batches
    def batch(self, indices: np.ndarray, pad_to: int | None = None) -> Batch:
        """Rows ``indices`` -> a batch (int32; labels with -100 at ignored positions).

        pad_to: append blank rows (inputs PAD, labels -100, identifier blank) up to this size.
        """
        indices = np.asarray(indices, dtype=np.int64)
        order = np.argsort(indices, kind="stable")  # sorted reads are kinder to the page cache
        inputs = np.empty((len(indices), self.seq_len), dtype=np.int32)
        labels = np.empty((len(indices), self.seq_len), dtype=np.int32)
        inputs[order] = self.inputs[indices[order]]
        labels[order] = self.labels[indices[order]]
        if self.metadata.ignore_label_id is not None:
            labels[labels == self.metadata.ignore_label_id] = IGNORE_LABEL
        ids = self.example_identifiers(indices).astype(np.int32)
        if pad_to is not None and pad_to > len(indices):
            extra = pad_to - len(indices)
            inputs = np.concatenate([inputs, np.full((extra, self.seq_len), self.metadata.pad_id, np.int32)])
            labels = np.concatenate([labels, np.full((extra, self.seq_len), IGNORE_LABEL, np.int32)])
            ids = np.concatenate([ids, np.full(extra, self.metadata.blank_identifier_id, np.int32)])
        return {
            "inputs": torch.from_numpy(inputs),
            "labels": torch.from_numpy(labels),
            "puzzle_identifiers": torch.from_numpy(ids),
        }


class TrainSampler:
    """HRM's training order, endless, seeded, shardable and resumable.

    Each iteration (``epochs_per_iteration`` epochs) concatenates that many random permutations of
    the groups; each group contributes one random member puzzle (the original or one copy) with all its
    examples in random order; these fill global batches of ``global_batch_size`` rows in turn (a puzzle
    that overflows a batch is cut there, the rest of it dropped) and the last partial batch of the
    iteration is dropped. Every rank computes the same global batch and takes its contiguous slice
    ``[rank * B, (rank + 1) * B)``, B = global_batch_size // world_size, so no example is on two ranks
    in one step. Batches are as in ``PuzzleDataset.batch`` (labels -100 at ignored positions).
    ``state_dict()`` after a batch, restored with ``load_state_dict``, resumes right after it.

    ``bucket_batches`` N > 1 (``data.bucket_batches``; not HRM's order): the rows of every N consecutive global
    batches of the plan are regrouped by the side of their bounding box (:func:`hrm_fast.data.boxes.box_sides`),
    ascending in even pools and descending in odd ones, so that neighbouring batches hold grids of similar size
    (pad-aware windows are then small). Each iteration still draws the same examples; a puzzle's examples may
    land in different batches of the pool.
    """

    def __init__(
        self,
        dataset: PuzzleDataset,
        global_batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        epochs_per_iteration: int = 1,
        bucket_batches: int = 0,
    ) -> None:
        if global_batch_size % world_size:
            raise ValueError(f"global_batch_size {global_batch_size} is not divisible by world_size {world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        self.dataset, self.global_batch_size = dataset, global_batch_size
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.epochs_per_iteration = epochs_per_iteration
        self.bucket_batches = bucket_batches
        self.local_batch_size = global_batch_size // world_size
        self.iteration = 0  # iterations completed
        self.batch_in_iteration = 0  # batches of the current iteration already yielded
        self._plan_cache: tuple[int, np.ndarray] | None = None

    def plan(self, iteration: int) -> np.ndarray:
        """Example indices of every global batch of one iteration: int64 [num_batches, global_batch_size]."""
        if self._plan_cache is not None and self._plan_cache[0] == iteration:
            return self._plan_cache[1]
        ds = self.dataset
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, iteration]))
        groups = np.concatenate([rng.permutation(ds.num_groups) for _ in range(self.epochs_per_iteration)])
        puzzles = rng.integers(ds.group_indices[groups], ds.group_indices[groups + 1])
        starts = ds.puzzle_indices[puzzles]
        sizes = ds.puzzle_indices[puzzles + 1] - starts
        ends = np.cumsum(sizes)  # flat end position of each chosen puzzle
        first = ends - sizes
        # all examples of the chosen puzzles, each puzzle's examples shuffled in place
        owner = np.repeat(np.arange(len(puzzles)), sizes)
        within = np.arange(int(ends[-1]) if len(ends) else 0) - np.repeat(first, sizes)
        shuffled = np.lexsort((rng.random(len(owner)), owner))
        flat = starts[owner] + within[shuffled]
        # batch b starts at the first example of the puzzle after the one that filled batch b-1
        batch_starts = []
        pos = 0
        gbs = self.global_batch_size
        while pos + gbs <= len(flat):
            batch_starts.append(pos)
            filler = int(np.searchsorted(ends, pos + gbs, side="left"))  # puzzle holding the batch's last row
            pos = int(ends[filler])
        plan = (
            flat[np.asarray(batch_starts, dtype=np.int64)[:, None] + np.arange(gbs)]
            if batch_starts
            else np.zeros((0, gbs), dtype=np.int64)
        )
        if self.bucket_batches > 1:
            plan = self.bucketed(plan)
        self._plan_cache = (iteration, plan)
        return plan

    def bucketed(self, plan: np.ndarray) -> np.ndarray:
        """``plan`` [num_batches, gbs] with the rows of each pool of ``bucket_batches`` batches sorted by box side."""
        out = plan.copy()
        for pool, lo in enumerate(range(0, len(plan), self.bucket_batches)):
            rows = plan[lo : lo + self.bucket_batches].reshape(-1)
            batch = self.dataset.batch(rows)
            sides = box_sides(batch["inputs"], batch["labels"], self.dataset.canvas).numpy()
            order = np.argsort(sides if pool % 2 == 0 else -sides, kind="stable")
            out[lo : lo + self.bucket_batches] = rows[order].reshape(-1, plan.shape[1])
        return out

    @property
    def epoch(self) -> float:
        """Epochs completed, with the fraction of the current iteration."""
        n = len(self.plan(self.iteration))
        return (self.iteration + (self.batch_in_iteration / n if n else 0.0)) * self.epochs_per_iteration

    def __iter__(self) -> Iterator[Batch]:
        lo = self.rank * self.local_batch_size
        while True:
            plan = self.plan(self.iteration)
            if len(plan) == 0:
                raise DataError(
                    f"{self.dataset.folder}: global batch {self.global_batch_size} is larger than one "
                    f"iteration of data; lower it or raise epochs_per_iteration"
                )
            while self.batch_in_iteration < len(plan):
                rows = plan[self.batch_in_iteration, lo : lo + self.local_batch_size]
                self.batch_in_iteration += 1
                yield self.dataset.batch(rows)
            self.iteration += 1
            self.batch_in_iteration = 0

    def state_dict(self) -> dict[str, int]:
        return {
            "iteration": self.iteration,
            "batch_in_iteration": self.batch_in_iteration,
            "seed": self.seed,
            "global_batch_size": self.global_batch_size,
            "epochs_per_iteration": self.epochs_per_iteration,
            "bucket_batches": self.bucket_batches,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        state = {"bucket_batches": 0, **state}  # checkpoints from before data.bucket_batches
        for key in ("seed", "global_batch_size", "epochs_per_iteration", "bucket_batches"):
            if state[key] != getattr(self, key):
                raise ValueError(f"sampler state has {key}={state[key]}, this sampler {getattr(self, key)}")
        self.iteration = int(state["iteration"])
        self.batch_in_iteration = int(state["batch_in_iteration"])


class EvalLoader:
    """Every example of a split once, in order: global batches of ``global_batch_size`` rows, each rank
    its contiguous slice; the last global batch is padded with blank rows (inputs PAD, labels -100,
    puzzle_identifiers 0).

    Yields ``(batch, index)``: index int64 [B] holds each row's example index, -1 for padding rows.
    """

    def __init__(self, dataset: PuzzleDataset, global_batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        if global_batch_size % world_size:
            raise ValueError(f"global_batch_size {global_batch_size} is not divisible by world_size {world_size}")
        self.dataset, self.global_batch_size = dataset, global_batch_size
        self.rank, self.world_size = rank, world_size
        self.local_batch_size = global_batch_size // world_size

    def __len__(self) -> int:
        return -(-self.dataset.num_examples // self.global_batch_size)

    def __iter__(self) -> Iterator[tuple[Batch, torch.Tensor]]:
        n = self.dataset.num_examples
        for b in range(len(self)):
            lo = b * self.global_batch_size + self.rank * self.local_batch_size
            rows = (
                np.arange(lo, min(lo + self.local_batch_size, n), dtype=np.int64)
                if lo < n
                else np.zeros(0, dtype=np.int64)
            )
            index = np.full(self.local_batch_size, -1, dtype=np.int64)
            index[: len(rows)] = rows
            yield self.dataset.batch(rows, pad_to=self.local_batch_size), torch.from_numpy(index)
