"""tasks.csv and the scores.json breakdowns: concepts read from ConceptARC's folders, groups that add up to the
totals, an oracle at 100% in every group, and a CSV that reads back to the same rows."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from hrm_fast.eval.breakdown import (
    CSV_COLUMNS,
    GROUPINGS,
    NO_CONCEPT,
    OutputRow,
    breakdowns,
    load_task_info,
    read_rows_csv,
)
from hrm_fast.eval.results import decode_into, finalize
from hrm_fast.eval.score import SCORINGS
from hrm_fast.eval.views import EvalDataError, load_eval_split
from hrm_fast.eval.vote import VoteBox

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ConceptARC" / "corpus"
needs_conceptarc = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"{CORPUS} not present")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """ConceptARC tasks with grids up to 8x8 (8 tasks in 7 concepts, 3 test inputs each) and ARC-AGI-1
    evaluation tasks of that size, one augmented copy each."""
    from hrm_fast.data.build import build_dataset

    out = tmp_path_factory.mktemp("data") / "concepts"
    build_dataset(out, [], [str(CORPUS), "arc-agi-1"], num_aug=1, max_grid_size=8, workers=0, progress=False)
    return out


def votes_for(split, wrong_every: int = 0) -> VoteBox:
    """The oracle: every view votes for its own label; with ``wrong_every`` > 0, the views of every
    ``wrong_every``-th test input vote for a wrong grid instead (some groups then score below 100%)."""
    votes = VoteBox()
    rows = split.select("all")
    labels = np.asarray(split.labels[rows]).copy()
    keys = sorted({(split.task_ids[r], int(split.test_index[r])) for r in rows})
    bad = set(keys[::wrong_every]) if wrong_every else set()
    for j, r in enumerate(rows):
        if (split.task_ids[r], int(split.test_index[r])) in bad:
            labels[j][labels[j] >= 2] = 2 + (labels[j][labels[j] >= 2] - 1) % 10  # shift every colour by one
    decode_into(votes, labels, [split.task_ids[r] for r in rows], [split.augs[r] for r in rows],
                split.test_index[rows], np.linspace(0.2, 0.9, len(rows)), split.canvas, rows=rows)  # fmt: skip
    return votes


@needs_conceptarc
def test_concept_is_the_conceptarc_group_folder(dataset):
    meta = json.loads((dataset / "metadata.json").read_text())
    info = load_task_info(dataset)
    concept_tasks = [tid for tid, t in meta["tasks"].items() if t["source"] == str(CORPUS)]
    assert len(concept_tasks) == 8
    for tid in concept_tasks:
        folder = Path(meta["tasks"][tid]["origin"]).parent.name
        assert (CORPUS / folder / f"{tid}.json").is_file()  # the group folder the task file sits in
        assert info[tid].concept == folder and tid.startswith(folder)  # ConceptARC names tasks <Concept><n>
    assert len({info[t].concept for t in concept_tasks}) == 7
    arc = [tid for tid, t in meta["tasks"].items() if t["source"] == "arc-agi-1"]
    assert arc and all(info[t].concept == "" for t in arc)


@needs_conceptarc
def test_old_metadata_without_source_and_concept_still_reads(dataset, tmp_path):
    """A dataset built before the builder wrote source/concept: both recovered from origin + build args."""
    copy = tmp_path / "old"
    shutil.copytree(dataset, copy)
    meta = json.loads((copy / "metadata.json").read_text())
    for t in meta["tasks"].values():
        del t["source"], t["concept"]
    (copy / "metadata.json").write_text(json.dumps(meta))
    assert load_task_info(copy) == load_task_info(dataset)
    (copy / "metadata.json").unlink()
    assert load_task_info(copy) == {}  # the original HRM builder writes no metadata.json


@needs_conceptarc
@pytest.mark.parametrize("wrong_every", [0, 3])
def test_breakdowns_add_up_and_oracle_is_100_everywhere(dataset, tmp_path, wrong_every):
    split = load_eval_split(dataset, "test")
    scores = finalize(votes_for(split, wrong_every), split.tasks, tmp_path, task_info=load_task_info(dataset))
    n_tasks, n_out, ks = scores["tasks"], scores["test_outputs"], scores["ks"]
    assert NO_CONCEPT in scores["by_concept"]  # the ARC-AGI-1 tasks
    assert len(scores["by_concept"]) == 8 and set(scores["by_source"]) == {str(CORPUS), "arc-agi-1"}
    for g in GROUPINGS:
        groups = scores[f"by_{g}"]
        assert sum(e["test_outputs"] for e in groups.values()) == n_out, g
        for k in ks:
            solved = sum(e["solved_outputs"][f"pass@{k}"] for e in groups.values())
            assert solved == round(scores["kaggle"][f"pass@{k}"] * n_out), (g, k)
            for e in groups.values():
                assert e["kaggle"][f"pass@{k}"] == e["solved_outputs"][f"pass@{k}"] / e["test_outputs"]
                assert e["all_or_nothing"][f"pass@{k}"] == e["solved_tasks"][f"pass@{k}"] / e["tasks"]
    for g in ("source", "concept"):  # task-level groups: every task in exactly one
        groups = scores[f"by_{g}"]
        assert sum(e["tasks"] for e in groups.values()) == n_tasks
        for k in ks:
            whole = sum(e["solved_tasks"][f"pass@{k}"] for e in groups.values())
            assert whole == round(scores["all_or_nothing"][f"pass@{k}"] * n_tasks)
            mean = sum(e["arc_prize"][f"pass@{k}"] * e["tasks"] for e in groups.values()) / n_tasks
            assert mean == pytest.approx(scores["arc_prize"][f"pass@{k}"])
    if wrong_every == 0:
        for g in GROUPINGS:
            for name, e in scores[f"by_{g}"].items():
                assert all(e[s][f"pass@{k}"] == 1.0 for s in SCORINGS for k in ks), (g, name)
    else:
        assert any(e["kaggle"]["pass@2"] < 1.0 for e in scores["by_concept"].values())
    # tasks.csv: one line per test output, the header of CSV_COLUMNS, and it reads back to the same breakdowns
    with open(tmp_path / "tasks.csv", newline="") as f:
        lines = list(csv.DictReader(f))
    assert len(lines) == n_out and list(lines[0]) == list(CSV_COLUMNS)
    rows = read_rows_csv(tmp_path / "tasks.csv")
    assert breakdowns(rows, ks) == {f"by_{g}": scores[f"by_{g}"] for g in GROUPINGS}
    concept_line = next(x for x in lines if x["concept"])
    tid, i = concept_line["task"], int(concept_line["test_index"])
    pair = split.tasks[tid]["test"][i]
    assert (int(concept_line["output_h"]), int(concept_line["output_w"])) == np.shape(pair["output"])
    assert int(concept_line["demos"]) == len(split.tasks[tid]["train"])
    assert concept_line["solved_pass2"] in ("0", "1") and 0 < float(concept_line["winner_q_halt"]) < 1
    json.loads((tmp_path / "scores.json").read_text())  # the breakdowns are plain JSON


def test_groups_of_a_row():
    row = OutputRow("t", 0, "src", "", 3, 12, 3, 12, 2, 4, 0, 1, 0, 4, 0.5)
    assert row.group("concept") == NO_CONCEPT and row.group("size") == "11-15" and row.group("shape") == "same shape"
    assert row.winner_vote_share == 1.0 and row.solved_at(1)
    with pytest.raises(ValueError, match="grouping"):
        row.group("colour")


def test_bad_tasks_csv_names_the_file(tmp_path):
    with pytest.raises(EvalDataError, match="missing"):
        read_rows_csv(tmp_path / "tasks.csv")
    (tmp_path / "tasks.csv").write_text("task,test_index\nx,0\n")
    with pytest.raises(EvalDataError, match="no column"):
        read_rows_csv(tmp_path / "tasks.csv")


@needs_conceptarc
def test_cli_writes_tasks_csv_and_names_the_checkpoint_step_and_run(dataset, tmp_path, capsys):
    """train.evaluate on a checkpoint inside a run folder: tasks.csv, concepts in scores.json, step and run shown."""
    import torch

    from hrm_fast.checkpoint import save_checkpoint
    from hrm_fast.config import load_config
    from hrm_fast.model.hrm import HRM
    from train.evaluate import main

    cfg = load_config("cpu-tiny", [
        f"data.path={dataset}", "data.max_grid_size=8", "model.hidden_size=32", "model.num_heads=2",
        "model.H_layers=1", "model.L_layers=1", "model.H_cycles=1", "model.L_cycles=1", "model.halt_max_steps=1",
        "model.puzzle_emb_ndim=32", "eval.batch_size=64",
    ])  # fmt: skip
    n_ids = len(json.loads((dataset / "identifiers.json").read_text()))
    torch.manual_seed(0)
    model = HRM(cfg.model, vocab_size=12, seq_len=64, num_puzzle_identifiers=n_ids)
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 7, "train/lm_loss": 1.0}\n')
    ckpt = save_checkpoint(run / "last", model, cfg, state={"step": 7})
    assert main([f"checkpoint={ckpt}", "progress=false"]) == 0
    out = run / "last-eval-test"
    assert "tasks.csv" in capsys.readouterr().out
    scores = json.loads((out / "scores.json").read_text())
    assert scores["step"] == 7 and scores["run"] == str(run.resolve())
    assert len(read_rows_csv(out / "tasks.csv")) == scores["test_outputs"]
    assert len(scores["by_concept"]) == 8 and sum(e["tasks"] for e in scores["by_concept"].values()) == scores["tasks"]
    page = (out / "report.html").read_text()
    assert "<dt>step</dt><dd>7</dd>" in page and 'data-chart="concept"' in page
