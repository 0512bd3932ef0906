"""Streamed writing of one split folder in the HRM layout.

Rows are appended to ``all__inputs.npy`` / ``all__labels.npy`` as they arrive (a fixed-size .npy
header is reserved and filled in at the end), so memory stays bounded whatever the dataset size.
The small index arrays are kept in memory (a few bytes per puzzle) and saved on ``close``.
"""

from __future__ import annotations

import io
import json
from array import array
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hrm_fast.data.encode import PAD_ID, VOCAB_SIZE


class SplitSizes:
    """Sizes of a split from its index arrays: ``puzzle_identifiers`` [P], ``puzzle_indices`` [P+1] (example
    offsets of each puzzle), ``group_indices`` [G+1] (puzzle offsets of each group)."""

    puzzle_identifiers: Sequence[int]
    puzzle_indices: Sequence[int]
    group_indices: Sequence[int]

    @property
    def num_examples(self) -> int:
        return int(self.puzzle_indices[-1])

    @property
    def num_puzzles(self) -> int:
        return len(self.puzzle_identifiers)

    @property
    def num_groups(self) -> int:
        return len(self.group_indices) - 1


def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


class NpyRowWriter:
    """Append uint8 rows [n, width] to a .npy file whose row count is known only at the end."""

    def __init__(self, path: Path, width: int) -> None:
        self.path, self.width, self.rows = path, width, 0
        self.dtype = np.dtype(np.uint8)
        self.header_len = len(_npy_header(self.dtype, (0, width)))
        self.handle = open(path, "wb")
        self.handle.write(b"\0" * self.header_len)

    def append(self, rows: np.ndarray) -> None:
        assert rows.dtype == self.dtype and rows.ndim == 2 and rows.shape[1] == self.width
        self.handle.write(np.ascontiguousarray(rows).data)
        self.rows += rows.shape[0]

    def close(self) -> None:
        header = _npy_header(self.dtype, (self.rows, self.width))
        if len(header) != self.header_len:  # numpy pads headers so this only trips on absurd sizes
            raise RuntimeError(f"{self.path}: npy header grew from {self.header_len} to {len(header)} bytes")
        self.handle.seek(0)
        self.handle.write(header)
        self.handle.close()


class SplitWriter(SplitSizes):
    """Writes ``<folder>/all__*.npy`` and ``dataset.json`` for one split (set name ``all``).

    add_group(): one original task, as its copies: identifiers [G] int, counts [G] rows per copy
    (copies with 0 rows are not puzzles of this split), inputs/labels uint8 [sum(counts), seq_len].
    """

    def __init__(self, folder: Path, seq_len: int, with_test_index: bool) -> None:
        folder.mkdir(parents=True)
        self.folder, self.seq_len = folder, seq_len
        self.inputs = NpyRowWriter(folder / "all__inputs.npy", seq_len)
        self.labels = NpyRowWriter(folder / "all__labels.npy", seq_len)
        self.puzzle_identifiers = array("q")
        self.puzzle_indices = array("q", [0])
        self.group_indices = array("q", [0])
        self.test_index = array("i") if with_test_index else None

    def add_group(
        self,
        identifiers: list[int],
        counts: np.ndarray,
        inputs: np.ndarray,
        labels: np.ndarray,
        test_index: np.ndarray | None = None,
    ) -> None:
        if inputs.shape[0] == 0:
            return
        self.inputs.append(inputs)
        self.labels.append(labels)
        if self.test_index is not None:
            self.test_index.extend(test_index.astype(np.int32).tolist())
        end = self.puzzle_indices[-1]
        for ident, count in zip(identifiers, counts.tolist()):
            if count:
                end += count
                self.puzzle_identifiers.append(ident)
                self.puzzle_indices.append(end)
        self.group_indices.append(len(self.puzzle_identifiers))

    def close(self, num_puzzle_identifiers: int) -> dict:
        """Finish the files; returns the dataset.json contents."""
        self.inputs.close()
        self.labels.close()
        for name, values in (
            ("puzzle_identifiers", self.puzzle_identifiers),
            ("puzzle_indices", self.puzzle_indices),
            ("group_indices", self.group_indices),
        ):
            np.save(self.folder / f"all__{name}.npy", np.asarray(values, dtype=np.int32))
        if self.test_index is not None:
            np.save(self.folder / "all__test_index.npy", np.asarray(self.test_index, dtype=np.int32))
        meta = {
            "pad_id": PAD_ID,
            "ignore_label_id": PAD_ID,
            "blank_identifier_id": 0,
            "vocab_size": VOCAB_SIZE,
            "seq_len": self.seq_len,
            "num_puzzle_identifiers": num_puzzle_identifiers,
            "total_groups": self.num_groups,
            "mean_puzzle_examples": self.num_examples / max(self.num_puzzles, 1),
            "total_puzzles": self.num_puzzles,
            "sets": ["all"],
        }
        write_json(self.folder / "dataset.json", meta)
        return meta


def write_json(path: Path, obj, indent: int | None = 2) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(obj, handle, indent=indent)
        handle.write("\n")
