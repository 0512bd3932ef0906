"""``python -m train.run init.from=CKPT``: a new run from a checkpoint's weights, puzzle rows mapped by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_solve import TINY, family_tasks, run

from hrm_fast.checkpoint import read_weights
from hrm_fast.data.build import build_dataset
from hrm_fast.solve.rows import map_rows, mean_row

COMMON = ("preset=cpu-tiny", *TINY, "train.global_batch_size=8", "train.lr_warmup_steps=0", "log.tensorboard=false",
          "eval.every=1000", "checkpoint.every=1000", "data.val_fraction=0", "data.eval_sources=[]")


def test_map_rows_copies_known_names_and_starts_the_rest_at_the_mean():
    old = torch.tensor([[0.0, 0.0], [1.0, 2.0], [3.0, 6.0]])
    table, copied = map_rows(old, ["<blank>", "a", "b"], ["<blank>", "b", "new", "a"])
    assert copied == 2
    assert torch.equal(table, torch.tensor([[0.0, 0.0], [3.0, 6.0], [2.0, 4.0], [1.0, 2.0]]))
    assert torch.equal(mean_row(old), torch.tensor([2.0, 4.0]))
    unknown, n = map_rows(old, None, ["<blank>", "a"])
    assert n == 0 and torch.equal(unknown, torch.tensor([[0.0, 0.0], [2.0, 4.0]]))


@pytest.fixture(scope="module")
def source_run(tmp_path_factory) -> Path:
    """A 3-step run on 4 tasks (the checkpoint), and a second dataset sharing 2 of its tasks plus 2 new ones."""
    work = tmp_path_factory.mktemp("init")
    family_tasks(work / "tasks", n=4)
    family_tasks(work / "other", n=4, seed=7)
    (work / "mixed").mkdir()
    for p in sorted((work / "tasks").glob("*.json"))[:2]:
        (work / "mixed" / p.name).write_text(p.read_text())
    for p in sorted((work / "other").glob("*.json"))[2:]:
        (work / "mixed" / f"new_{p.name}").write_text(p.read_text())
    for name in ("tasks", "mixed"):
        build_dataset(work / "data" / name, [str(work / name)], num_aug=2, max_grid_size=4, progress=False)
    run(["-m", "train.run", *COMMON, "data.path=data/tasks", "run.dir=runs/src", "train.max_steps=3"], work)
    return work


def weights(path: Path) -> dict[str, torch.Tensor]:
    return read_weights(path / "model.safetensors")[0]


def test_init_from_maps_rows_by_name_and_starts_a_fresh_run(source_run):
    work = source_run
    out = run(["-m", "train.run", *COMMON, "data.path=data/mixed", "run.dir=runs/ft", "init.from=runs/src/last",
               "init.freeze=embedding", "train.max_steps=2"], work).stdout
    assert "init.from" in out and "puzzle rows: 6 of 12 copied by name" in out, out
    src, new = weights(work / "runs/src/last"), weights(work / "runs/ft/last")
    old_names = json.loads((work / "data/tasks/identifiers.json").read_text())
    new_names = json.loads((work / "data/mixed/identifiers.json").read_text())
    old_index = {n: i for i, n in enumerate(old_names)}
    mean = src["puzzle_emb.weights"][1:].mean(0)
    for j, name in enumerate(new_names[1:], start=1):  # the table is frozen: rows are as initialised
        expected = src["puzzle_emb.weights"][old_index[name]] if name in old_index else mean
        assert torch.equal(new["puzzle_emb.weights"][j], expected), name
    assert any(not torch.equal(src[k], new[k]) for k in src if k != "puzzle_emb.weights")  # the network trained
    state = torch.load(work / "runs/ft/last/state.pt", weights_only=True)
    assert state["step"] == 2  # a new run: its own step count and folder
    records = [json.loads(x) for x in (work / "runs/ft/metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in records) == 2


def test_init_freeze_network_trains_only_the_puzzle_rows(source_run):
    work = source_run
    run(["-m", "train.run", *COMMON, "data.path=data/mixed", "run.dir=runs/fz", "init.from=runs/src",
         "init.freeze=network", "train.max_steps=2"], work)
    src, new = weights(work / "runs/src/last"), weights(work / "runs/fz/last")
    for k in src:
        if k != "puzzle_emb.weights":
            assert torch.equal(src[k], new[k]), k
    assert new["puzzle_emb.weights"].shape[0] == len(json.loads((work / "data/mixed/identifiers.json").read_text()))


def test_init_from_a_missing_checkpoint_exits_2(source_run):
    result = run(["-m", "train.run", *COMMON, "data.path=data/mixed", "run.dir=runs/bad", "init.from=runs/nothing",
                  "train.max_steps=1"], source_run, check=False)
    assert result.returncode == 2 and "runs/nothing" in result.stderr, result.stderr


def test_checkpoint_names_are_found_from_another_working_folder(source_run, monkeypatch, tmp_path):
    from hrm_fast.checkpoint import load_checkpoint
    from hrm_fast.solve.rows import checkpoint_names

    monkeypatch.chdir(tmp_path)  # the checkpoint's data.path (data/tasks) is relative to source_run
    model, config = load_checkpoint(source_run / "runs/src/last")
    names = checkpoint_names(source_run / "runs/src/last", config, model.num_puzzle_identifiers)
    assert names == json.loads((source_run / "data/tasks/identifiers.json").read_text())
    assert checkpoint_names(source_run / "runs/src/last", config, model.num_puzzle_identifiers + 1) is None
