"""Dataset identity: which build a checkpoint's puzzle embeddings belong to.

A checkpoint depends on a build through its ``identifiers.json`` (row i of the puzzle table is the puzzle
named ``identifiers[i]``) and, for resuming, the split index arrays (the sampler's state counts groups and
puzzles). The fingerprint hashes exactly those, cheaply (no grids): the identifier names and, for every
split present (train, val, test), ``all__{puzzle_identifiers,puzzle_indices,group_indices}.npy``.

The builder records it in ``metadata.json`` (key ``dataset_fingerprint``); for datasets of the original
HRM builder (or older builds) it is computed on load, with the same function, so both agree.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hrm_fast.data.sources import DataError

FINGERPRINT_KEY = "dataset_fingerprint"
SPLITS = ("train", "val", "test")
INDEX_ARRAYS = ("puzzle_identifiers", "puzzle_indices", "group_indices")


class DatasetMismatchError(DataError):
    """A checkpoint was trained on another dataset build than the one given (exit 2)."""


@dataclass(frozen=True)
class DatasetIdentity:
    """fingerprint: ``"sha256:<16 hex>"``; identifiers: identifier -> puzzle name (0 = ``"<blank>"``)."""

    fingerprint: str
    identifiers: tuple[str, ...]

    @property
    def num_puzzle_identifiers(self) -> int:
        return len(self.identifiers)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:  # ValueError: bad JSON or UTF-8; RecursionError: nesting
        raise DataError(f"{path}: cannot read ({type(err).__name__}: {err})") from None


def compute_fingerprint(root: str | os.PathLike, identifiers: list[str] | tuple[str, ...] | None = None) -> str:
    """The fingerprint of the dataset folder ``root`` (``identifiers``: its names, if already read)."""
    root = Path(root)
    if identifiers is None:
        identifiers = _read_json(root / "identifiers.json")
    digest = hashlib.sha256(b"hrm_fast dataset identity v1\n")
    digest.update(json.dumps(list(identifiers), separators=(",", ":")).encode())
    for split in SPLITS:
        if not (root / split / "dataset.json").is_file():
            continue
        for name in INDEX_ARRAYS:
            path = root / split / f"all__{name}.npy"
            try:
                values = np.load(path).astype("<i8")
            except (OSError, ValueError) as err:
                raise DataError(f"{path}: cannot read ({err})") from None
            digest.update(f"\n{split}/{name}/{values.size}\n".encode())
            digest.update(values.tobytes())
    return "sha256:" + digest.hexdigest()[:16]


_cache: dict[tuple, DatasetIdentity] = {}


def dataset_identity(root: str | os.PathLike) -> DatasetIdentity | None:
    """The identity of the dataset at ``root``: the recorded fingerprint, else a computed one; None when the
    folder has no ``identifiers.json`` (then nothing can be checked). Cached per file modification times."""
    root = Path(root)
    ids_path, meta_path = root / "identifiers.json", root / "metadata.json"
    if not ids_path.is_file():
        return None
    stamp = tuple(p.stat().st_mtime_ns if p.exists() else None for p in (ids_path, meta_path))
    key = (str(root.resolve()), stamp)
    if key not in _cache:
        names = _read_json(ids_path)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise DataError(f"{ids_path}: expected a list of puzzle names")
        recorded = _read_json(meta_path).get(FINGERPRINT_KEY) if meta_path.is_file() else None
        _cache[key] = DatasetIdentity(recorded or compute_fingerprint(root, names), tuple(names))
    return _cache[key]


def map_by_name(names: list[str] | tuple[str, ...], known: list[str] | tuple[str, ...]) -> np.ndarray:
    """int64 [len(names)]: the index in ``known`` of each name in ``names``, -1 where ``known`` lacks it
    (index 0, the blank identifier, always maps to 0)."""
    position = {name: i for i, name in enumerate(known)}
    out = np.asarray([position.get(name, -1) for name in names], dtype=np.int64)
    if len(out):
        out[0] = 0
    return out


def check_same_dataset(trained_on: DatasetIdentity, data_path: str | os.PathLike, checkpoint: str) -> None:
    """Raise DatasetMismatchError (both fingerprints named) unless ``data_path`` is the build ``trained_on``."""
    here = dataset_identity(data_path)
    if here is not None and here.fingerprint == trained_on.fingerprint:
        return
    found = (f"fingerprint {here.fingerprint} ({here.num_puzzle_identifiers} puzzle identifiers)" if here is not None
             else "no identifiers.json")  # fmt: skip
    raise DatasetMismatchError(
        f"{checkpoint} was trained on dataset fingerprint {trained_on.fingerprint} "
        f"({trained_on.num_puzzle_identifiers} puzzle identifiers), but data.path={data_path} has {found}: "
        "resuming needs the same build (same sources, arguments and --seed); start a new run.dir for this dataset"
    )
