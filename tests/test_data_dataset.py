"""Reader, HRM group sampler, rank sharding, resume, eval iterator — on an HRM-layout folder."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hrm_fast.data.build import build_dataset
from hrm_fast.data.dataset import EvalLoader, PuzzleDataset, TrainSampler
from hrm_fast.data.sources import DataError

SEQ = 16
DIGITS = 6


def _write_hrm_layout(root: Path, group_sizes: list[list[int]], split: str = "train") -> dict:
    """A dataset exactly as the original HRM builder lays it out (int64 index arrays, no extras).

    Example i's input starts with i written in base 12 so a batch row can be traced back to i.
    """
    rng = np.random.default_rng(0)
    puzzle_indices, group_indices, identifiers = [0], [0], []
    for sizes in group_sizes:
        for size in sizes:
            puzzle_indices.append(puzzle_indices[-1] + size)
            identifiers.append(len(identifiers) + 1)
        group_indices.append(len(identifiers))
    n = puzzle_indices[-1]
    inputs = rng.integers(0, 12, size=(n, SEQ)).astype(np.uint8)
    for d in range(DIGITS):
        inputs[:, d] = (np.arange(n) // 12**d) % 12
    labels = rng.integers(0, 12, size=(n, SEQ)).astype(np.uint8)
    folder = root / split
    folder.mkdir(parents=True)
    for name, arr in (
        ("inputs", inputs),
        ("labels", labels),
        ("puzzle_identifiers", np.asarray(identifiers)),
        ("puzzle_indices", np.asarray(puzzle_indices)),
        ("group_indices", np.asarray(group_indices)),
    ):
        np.save(folder / f"all__{name}.npy", arr)
    (folder / "dataset.json").write_text(
        json.dumps(
            {
                "pad_id": 0,
                "ignore_label_id": 0,
                "blank_identifier_id": 0,
                "vocab_size": 12,
                "seq_len": SEQ,
                "num_puzzle_identifiers": len(identifiers) + 1,
                "total_groups": len(group_sizes),
                "mean_puzzle_examples": n / len(identifiers),
                "sets": ["all"],
            }
        )
    )
    (root / "identifiers.json").write_text(json.dumps(["<blank>"] + [f"p{i}" for i in identifiers]))
    return {
        "inputs": inputs,
        "labels": labels,
        "puzzle_indices": np.asarray(puzzle_indices),
        "group_indices": np.asarray(group_indices),
    }


def _example_ids(batch) -> np.ndarray:
    digits = batch["inputs"][:, :DIGITS].numpy().astype(np.int64)
    return (digits * 12 ** np.arange(DIGITS)).sum(axis=1)


@pytest.fixture
def hrm_folder(tmp_path):
    rng = np.random.default_rng(1)
    groups = [[int(s) for s in rng.integers(1, 6, size=rng.integers(1, 5))] for _ in range(40)]
    truth = _write_hrm_layout(tmp_path, groups)
    return tmp_path, truth


def test_reads_hrm_layout_and_converts_labels(hrm_folder):
    root, truth = hrm_folder
    ds = PuzzleDataset(root, "train")
    assert ds.test_index is None and ds.tasks == {} and ds.build_metadata == {}
    assert ds.identifiers[0] == "<blank>" and ds.num_groups == 40
    rows = np.array([3, 0, 7, 7])
    batch = ds.batch(rows)
    assert {k: v.dtype for k, v in batch.items()} == dict.fromkeys(
        ("inputs", "labels", "puzzle_identifiers"), torch.int32
    )
    np.testing.assert_array_equal(batch["inputs"].numpy(), truth["inputs"][rows])
    want = truth["labels"][rows].astype(np.int32)
    want[want == 0] = -100
    np.testing.assert_array_equal(batch["labels"].numpy(), want)
    puzzles = np.searchsorted(truth["puzzle_indices"], rows, side="right") - 1
    np.testing.assert_array_equal(batch["puzzle_identifiers"].numpy(), puzzles + 1)


def _puzzle_of(truth, ex):
    return int(np.searchsorted(truth["puzzle_indices"], ex, side="right") - 1)


def _group_of(truth, puzzle):
    return int(np.searchsorted(truth["group_indices"], puzzle, side="right") - 1)


def test_sampler_group_semantics(hrm_folder):
    root, truth = hrm_folder
    ds = PuzzleDataset(root, "train")
    gbs = 12
    sampler = TrainSampler(ds, gbs, seed=5)
    n_batches = len(sampler.plan(0))
    batches = [next(it) for it in [iter(sampler)] for _ in range(n_batches)]
    assert sampler.state_dict()["iteration"] == 0 and sampler.state_dict()["batch_in_iteration"] == n_batches
    groups_seen = []
    for batch in batches:
        ex = _example_ids(batch)
        assert len(ex) == gbs and len(set(ex.tolist())) == gbs
        puzzles = [_puzzle_of(truth, e) for e in ex]
        # a puzzle's rows are contiguous in the batch, and complete unless it is the batch's last puzzle
        runs = [puzzles[0]]
        for p in puzzles[1:]:
            if p != runs[-1]:
                runs.append(p)
        assert len(runs) == len(set(runs))
        for p in runs[:-1]:
            size = truth["puzzle_indices"][p + 1] - truth["puzzle_indices"][p]
            assert puzzles.count(p) == size
        groups_seen += [_group_of(truth, p) for p in runs]
    assert len(groups_seen) == len(set(groups_seen))  # each group at most once per epoch
    # only the final partial batch (< gbs rows, so fewer than gbs groups) is dropped
    assert len(groups_seen) >= 40 - (gbs - 1)
    # over many epochs, groups with several copies are sampled through different copies
    members = {}
    for it in range(1, 30):
        for row in sampler.plan(it).reshape(-1):
            p = _puzzle_of(truth, row)
            members.setdefault(_group_of(truth, p), set()).add(p)
    multi = [g for g in range(40) if truth["group_indices"][g + 1] - truth["group_indices"][g] > 1]
    assert any(len(members.get(g, ())) > 1 for g in multi)


def test_sampler_is_seeded(hrm_folder):
    root, _ = hrm_folder
    ds = PuzzleDataset(root, "train")
    a, b, c = (TrainSampler(ds, 8, seed=s).plan(0) for s in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)


def test_rank_sharding_partitions_each_global_batch(hrm_folder):
    root, _ = hrm_folder
    ds = PuzzleDataset(root, "train")
    world, gbs = 4, 16
    full = iter(TrainSampler(ds, gbs, seed=9))
    ranks = [iter(TrainSampler(ds, gbs, rank=r, world_size=world, seed=9)) for r in range(world)]
    for _step in range(12):  # crosses iteration boundaries
        global_ids = _example_ids(next(full))
        parts = [_example_ids(next(r)) for r in ranks]
        assert all(len(p) == gbs // world for p in parts)
        joined = np.concatenate(parts)
        assert len(set(joined.tolist())) == gbs  # no example on two ranks in one step
        np.testing.assert_array_equal(joined, global_ids)


def test_resume_gives_the_same_batches(hrm_folder):
    root, _ = hrm_folder
    ds = PuzzleDataset(root, "train")
    a = TrainSampler(ds, 8, seed=3)
    it = iter(a)
    n_first = len(a.plan(0)) + 2  # stop inside the second iteration
    for _ in range(n_first):
        next(it)
    state = json.loads(json.dumps(a.state_dict()))
    after = [_example_ids(next(it)) for _ in range(len(a.plan(1)) + 3)]
    b = TrainSampler(ds, 8, seed=3)
    b.load_state_dict(state)
    resumed = [_example_ids(batch) for batch, _ in zip(b, range(len(after)))]
    for x, y in zip(after, resumed):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError):
        TrainSampler(ds, 16, seed=3).load_state_dict(state)


def test_eval_loader_covers_everything_once_with_padding(hrm_folder):
    root, truth = hrm_folder
    ds = PuzzleDataset(root, "train")
    n = ds.num_examples
    gbs, world = 8, 2
    seen = []
    for rank in range(world):
        loader = EvalLoader(ds, gbs, rank=rank, world_size=world)
        assert len(loader) == -(-n // gbs)
        for batch, index in loader:
            assert batch["inputs"].shape == (gbs // world, SEQ)
            pad = index < 0
            assert (batch["puzzle_identifiers"][pad] == 0).all() and (batch["labels"][pad] == -100).all()
            assert (batch["inputs"][pad] == 0).all()
            real = index[~pad].numpy()
            np.testing.assert_array_equal(_example_ids({"inputs": batch["inputs"][~pad]}), real)
            seen.extend(real.tolist())
    assert sorted(seen) == list(range(n))


def test_batch_too_large_and_missing_split(hrm_folder):
    root, _ = hrm_folder
    ds = PuzzleDataset(root, "train")
    with pytest.raises(DataError):
        next(iter(TrainSampler(ds, 10_000)))
    with pytest.raises(DataError, match="test"):
        PuzzleDataset(root, "test")


def test_reads_our_build_with_extras(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    task = {"train": [{"input": [[1, 2]], "output": [[2], [1]]}], "test": [{"input": [[3]], "output": [[4, 4]]}] * 2}
    (src / "t0.json").write_text(json.dumps(task))
    build_dataset(tmp_path / "ds", [], [str(src)], num_aug=3, seed=0, max_grid_size=5, progress=False)
    test = PuzzleDataset(tmp_path / "ds", "test")
    assert test.canvas == 5 and test.tasks["t0"] == task
    assert test.test_index.tolist() == [0, 1] * test.num_puzzles
    assert test.build_metadata["format_version"] == 1
    train = PuzzleDataset(tmp_path / "ds", "train")
    batch = next(iter(TrainSampler(train, 1, seed=0)))  # one demo per epoch
    assert batch["inputs"].shape == (1, 25)
