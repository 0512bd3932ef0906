"""The dataset builder: splits, augmentation copies, determinism, bad input."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from hrm_fast.data.augment import parse_augmented_name
from hrm_fast.data.build import build_dataset, main
from hrm_fast.data.encode import crop_prediction, decode_grid
from hrm_fast.data.expand import plan_augmentations
from hrm_fast.data.selection import select_tasks
from hrm_fast.data.sources import ArcTask, DataError, parse_task

RNG = np.random.default_rng(2)


def _grid(h, w, colours=10):
    return RNG.integers(0, colours, size=(h, w)).tolist()


def _task(n_train=2, n_test=1, side=4):
    pairs = lambda n: [{"input": _grid(side, side + 1), "output": _grid(side + 1, side)} for _ in range(n)]  # noqa: E731
    return {"train": pairs(n_train), "test": pairs(n_test)}


def _write_tasks(folder: Path, tasks: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for task_id, task in tasks.items():
        (folder / f"{task_id}.json").write_text(json.dumps(task))
    return folder


@pytest.fixture(scope="module")
def small_sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("src")
    train = _write_tasks(root / "train", {f"tr{i}": _task(2 + i % 2, 1 + i % 2) for i in range(6)})
    evals = _write_tasks(root / "eval", {f"ev{i}": _task(3, 1 + i % 3, side=3) for i in range(3)})
    return str(train), str(evals)


@pytest.fixture(scope="module")
def small_build(small_sources, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "ds"
    build_dataset(
        out,
        [small_sources[0]],
        [small_sources[1]],
        num_aug=6,
        seed=3,
        max_grid_size=8,
        val_fraction=0.34,
        progress=False,
    )
    return out


def _load_split(out: Path, split: str) -> dict:
    folder = out / split
    arrays = {p.stem.removeprefix("all__"): np.load(p) for p in folder.glob("all__*.npy")}
    arrays["meta"] = json.loads((folder / "dataset.json").read_text())
    return arrays


def _rows_by_puzzle(split: dict):
    pi = split["puzzle_indices"]
    for p, ident in enumerate(split["puzzle_identifiers"]):
        yield p, int(ident), range(pi[p], pi[p + 1])


def test_splits_follow_hrm_protocol(small_build, small_sources):
    out = small_build
    names = json.loads((out / "identifiers.json").read_text())
    meta = json.loads((out / "metadata.json").read_text())
    assert names[0] == "<blank>" and len(set(names)) == len(names)
    originals = {}
    for src in small_sources:
        for f in Path(src).glob("*.json"):
            originals[f.stem] = parse_task(json.loads(f.read_text()), f.stem, str(f))
    roles = {tid: info["role"] for tid, info in meta["tasks"].items()}
    assert sorted(roles.values()).count("val") == 2 and sorted(roles.values()).count("eval") == 3
    canvas = meta["canvas"]

    train = _load_split(out, "train")
    assert train["meta"]["total_groups"] == 9 and train["meta"]["num_puzzle_identifiers"] == len(names)
    seen_copies = {}
    for _p, ident, rows in _rows_by_puzzle(train):
        task_id, aug = parse_augmented_name(names[ident])
        task = originals[task_id]
        expected = task.train + (task.test if roles[task_id] == "train" else [])
        assert len(rows) == len(expected)
        top_left = 0
        for row, (inp, outp) in zip(rows, expected):
            np.testing.assert_array_equal(aug.invert(decode_grid(train["inputs"][row], canvas)), inp)
            np.testing.assert_array_equal(aug.invert(decode_grid(train["labels"][row], canvas)), outp)
            top_left += crop_prediction(train["labels"][row], canvas).shape == aug.apply(outp).shape
        assert top_left >= 1  # one pair per copy keeps its place
        seen_copies.setdefault(task_id, set()).add(names[ident])
    # every copy of a task is distinct in content
    for task_id, copies in seen_copies.items():
        contents = set()
        for name in copies:
            aug = parse_augmented_name(name)[1]
            contents.add(
                b"".join(aug.apply(g).tobytes() + bytes(aug.apply(g).shape) for g in originals[task_id].grids())
            )
        assert len(contents) == len(copies) == meta["tasks"][task_id]["copies"] + 1

    for split, role in (("val", "val"), ("test", "eval")):
        held = _load_split(out, split)
        tasks_json = json.loads((out / split / "tasks.json").read_text())
        assert sorted(tasks_json) == sorted(t for t, r in roles.items() if r == role)
        assert held["meta"]["total_groups"] == len(tasks_json)
        for _p, ident, rows in _rows_by_puzzle(held):
            task_id, aug = parse_augmented_name(names[ident])
            assert task_id in tasks_json
            assert len(rows) == len(tasks_json[task_id]["test"])
            assert names[ident] in seen_copies[task_id]  # same identifier as its demos in train
            for row in rows:
                pair = tasks_json[task_id]["test"][held["test_index"][row]]
                # held-out rows sit at the top-left corner: HRM's crop recovers them
                np.testing.assert_array_equal(aug.invert(crop_prediction(held["labels"][row], canvas)), pair["output"])
                np.testing.assert_array_equal(aug.invert(crop_prediction(held["inputs"][row], canvas)), pair["input"])


def test_same_seed_same_bytes_whatever_workers(small_sources, tmp_path):
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        build_dataset(
            out,
            [small_sources[0], "arc-agi-1"],
            [small_sources[1]],
            num_aug=5,
            seed=7,
            max_grid_size=12,
            subset=5,
            val_fraction=0.2,
            workers=workers,
            progress=False,
        )
        outs.append(out)
    files = sorted(p.relative_to(outs[0]) for p in outs[0].rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(outs[1]) for p in outs[1].rglob("*") if p.is_file())
    for rel in files:
        assert (outs[0] / rel).read_bytes() == (outs[1] / rel).read_bytes(), rel
    other = tmp_path / "seed8"
    build_dataset(other, [small_sources[0]], [small_sources[1]], num_aug=5, seed=8, max_grid_size=12, progress=False)
    assert (other / "train/all__inputs.npy").read_bytes() != (outs[0] / "train/all__inputs.npy").read_bytes()


def test_dedup_keeps_exactly_the_distinct_copies():
    # one non-black colour and a grid symmetric under a quarter turn: few distinct copies exist
    grid = np.zeros((3, 3), np.uint8)
    grid[1, 1] = 4
    grid[0, 0] = grid[0, 2] = grid[2, 0] = grid[2, 2] = 4
    task = ArcTask("sym", [(grid, grid)], [(grid, grid)], "test")
    possible = set()
    from hrm_fast.data.augment import Augmentation

    for k in range(8):
        for c in range(1, 10):
            colours = list(range(10))
            colours[4], colours[c] = c, 4
            aug = Augmentation(k, tuple(colours))
            possible.add(b"".join(aug.apply(g).tobytes() for g in task.grids()))
    kept = plan_augmentations(task, 1000, np.random.default_rng(0))
    contents = [b"".join(a.apply(g).tobytes() for g in task.grids()) for a in kept]
    assert len(set(contents)) == len(contents)  # no duplicates
    assert set(contents) == possible and len(possible) == 9  # every distinct copy found (colour only)
    few = plan_augmentations(task, 3, np.random.default_rng(0))
    assert len(few) == 4 and few[0].is_identity


def test_small_canvas_preset_is_fast_and_fits(tmp_path):
    out = tmp_path / "tiny"
    summary = build_dataset(
        out,
        ["arc-agi-1"],
        ["arc-agi-1"],
        num_aug=2,
        seed=0,
        max_grid_size=10,
        subset=12,
        val_fraction=0.1,
        progress=False,
    )
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["seq_len"] == 100 and summary.splits["train"]["groups"] == 24
    assert any("larger than 10x10" in w for w in summary.warnings)
    inputs = np.load(out / "train/all__inputs.npy")
    assert inputs.shape[1] == 100 and inputs.max() <= 11


def test_contamination_and_duplicates_are_reported(tmp_path):
    sel = select_tasks(["arc-agi-2"], ["arc-agi-1"], subset=3)
    assert any("contamination" in w and "same id" in w for w in sel.warnings)
    a = _task()
    src = _write_tasks(tmp_path / "dups", {"a": a, "b": a})
    _write_tasks(tmp_path / "dups" / "sub", {"a": a})  # an identical duplicate id: a warning
    sel = select_tasks([str(src)], [])
    assert any("duplicate task ids" in w for w in sel.warnings)
    assert any("b==a" in w for w in sel.warnings)
    assert len(sel.train) == 2


def test_conflicting_duplicate_ids_exit_2_naming_both_files(tmp_path, capsys):
    """Issue 11 (7): the same task id with different pairs in two folders was a warning, one silently dropped."""
    first = _write_tasks(tmp_path / "one", {"a": _task()})
    second = _write_tasks(tmp_path / "two", {"a": _task()})
    out = tmp_path / "out" / "ds"
    assert main(["--source", str(first), "--source", str(second), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "task id a" in err
    assert str(first / "a.json") in err and str(second / "a.json") in err
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_deeply_nested_json_exit_2_naming_the_file(tmp_path, capsys):
    """Issue 11 (7): ``[[[[...`` nested 100k deep gave a RecursionError traceback."""
    src = _write_tasks(tmp_path / "src", {"good": _task()})
    (src / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    out = tmp_path / "ds"
    assert main(["--source", str(src), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(src / "deep.json") in err and "nested too deeply" in err
    assert not out.exists()


def test_kaggle_pairs_are_read(tmp_path):
    tasks = {"k1": _task(2, 2), "k2": _task(3, 1)}
    challenges = {
        k: {"train": t["train"], "test": [{"input": p["input"]} for p in t["test"]]} for k, t in tasks.items()
    }
    solutions = {k: [p["output"] for p in t["test"]] for k, t in tasks.items()}
    (tmp_path / "x_challenges.json").write_text(json.dumps(challenges))
    (tmp_path / "x_solutions.json").write_text(json.dumps(solutions))
    sel = select_tasks([str(tmp_path)], [])
    assert sorted(t.task_id for t in sel.train) == ["k1", "k2"]
    assert [o.tolist() for _, o in sel.train[0].test] == solutions["k1"]


BAD = {
    "malformed JSON": ('{"train": [', "malformed JSON"),
    "missing test": (json.dumps({"train": _task()["train"]}), "missing or empty 'test'"),
    "missing train": (json.dumps({"test": _task()["test"]}), "missing or empty 'train'"),
    "not a task": (json.dumps([1, 2]), "not an ARC task"),
    "empty test": (json.dumps({"train": _task()["train"], "test": []}), "missing or empty 'test'"),
    "empty grid": (json.dumps({"train": [{"input": [], "output": [[1]]}], "test": _task()["test"]}), "empty grid"),
    "empty row": (json.dumps({"train": [{"input": [[]], "output": [[1]]}], "test": _task()["test"]}), "row 0 is empty"),
    "ragged": (json.dumps({"train": [{"input": [[1, 2], [3]], "output": [[1]]}], "test": _task()["test"]}), "ragged"),
    "colour 10": (
        json.dumps({"train": [{"input": [[1, 10]], "output": [[1]]}], "test": _task()["test"]}),
        "outside 0..9",
    ),
    "colour -1": (
        json.dumps({"train": _task()["train"], "test": [{"input": [[-1]], "output": [[1]]}]}),
        "outside 0..9",
    ),
    "float": (json.dumps({"train": [{"input": [[1.5]], "output": [[1]]}], "test": _task()["test"]}), "not an integer"),
    "string": (json.dumps({"train": [{"input": [["3"]], "output": [[1]]}], "test": _task()["test"]}), "not an integer"),
    "bool": (json.dumps({"train": [{"input": [[True]], "output": [[1]]}], "test": _task()["test"]}), "not an integer"),
    "no output": (json.dumps({"train": [{"input": [[1]]}], "test": _task()["test"]}), "needs 'input' and 'output'"),
    "31x31": (
        json.dumps({"train": [{"input": [[0] * 31] * 31, "output": [[1]]}], "test": _task()["test"]}),
        "larger than ARC's 30x30",
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_input_exits_2_and_writes_nothing(kind, tmp_path, capsys):
    text, message = BAD[kind]
    src = tmp_path / "src"
    _write_tasks(src, {"good": _task()})
    (src / "bad1.json").write_text(text)
    out = tmp_path / "out" / "ds"
    code = main(["--source", str(src), "--out", str(out), "--num-aug", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "bad1.json" in err
    assert not out.exists()
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_other_refusals(tmp_path, capsys):
    out = tmp_path / "ds"
    big = _write_tasks(tmp_path / "big", {"big": _task(side=11)})
    assert main(["--source", str(big), "--out", str(out), "--max-grid-size", "10", "--oversize", "error"]) == 2
    assert "larger than --max-grid-size 10" in capsys.readouterr().err
    assert main(["--source", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / "a_challenges.json").write_text("{}")
    assert main(["--source", str(tmp_path / "k"), "--out", str(out)]) == 2
    assert "without its solutions" in capsys.readouterr().err
    assert main(["--source", "arc-agi-1:bogus", "--out", str(out)]) == 2
    assert not out.exists()
    out.mkdir()
    assert main(["--source", str(big), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_error_during_write_leaves_nothing(small_sources, tmp_path, monkeypatch):
    import hrm_fast.data.build as build

    def boom(job):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(build, "expand_task", boom)
    with pytest.raises(RuntimeError):
        build_dataset(tmp_path / "ds", [small_sources[0]], num_aug=1, progress=False)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DataError):
        build_dataset(tmp_path / "ds", [], [], progress=False)


def test_dataset_fingerprint_recorded_computed_and_path_independent(small_build, small_sources, tmp_path):
    """Issue 11 (3): what a checkpoint depends on (identifiers + split index arrays) has a fingerprint."""
    from hrm_fast.data.identity import FINGERPRINT_KEY, compute_fingerprint, dataset_identity

    recorded = json.loads((small_build / "metadata.json").read_text())[FINGERPRINT_KEY]
    assert recorded.startswith("sha256:") and compute_fingerprint(small_build) == recorded
    # the original HRM layout (no metadata.json, no extras): computed on load, the same value
    hrm = tmp_path / "hrm_layout"
    shutil.copytree(small_build, hrm)
    (hrm / "metadata.json").unlink()
    for split in ("val", "test"):
        (hrm / split / "tasks.json").unlink()
        (hrm / split / "all__test_index.npy").unlink()
    identity = dataset_identity(hrm)
    assert identity.fingerprint == recorded
    assert list(identity.identifiers) == json.loads((small_build / "identifiers.json").read_text())
    # another seed, same sizes: a different build
    other = tmp_path / "seed4"
    build_dataset(other, [small_sources[0]], [small_sources[1]], num_aug=6, seed=4, max_grid_size=8,
                  val_fraction=0.34, progress=False)  # fmt: skip
    assert dataset_identity(other).num_puzzle_identifiers == identity.num_puzzle_identifiers
    assert dataset_identity(other).fingerprint != recorded
    # the index arrays count too: the same names, one puzzle's examples regrouped
    indices = np.load(hrm / "train" / "all__puzzle_indices.npy")
    indices[1] += 1
    np.save(hrm / "train" / "all__puzzle_indices.npy", indices)
    assert compute_fingerprint(hrm) != recorded
