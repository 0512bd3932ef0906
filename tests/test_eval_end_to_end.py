"""train.evaluate end to end on a tiny built dataset: the oracle path (labels as predictions through the same
crop -> invert -> vote code) scores 100%; an untrained checkpoint yields valid files and scores in [0, 1]."""

import json
import shutil

import numpy as np
import pytest
import torch

from hrm_fast.eval.results import decode_into, finalize
from hrm_fast.eval.score import main as score_main
from hrm_fast.eval.submission import validate_submission
from hrm_fast.eval.views import EvalDataError, load_eval_split
from hrm_fast.eval.vote import VoteBox

SCORINGS = ("kaggle", "arc_prize", "all_or_nothing")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from hrm_fast.data.build import build_dataset

    out = tmp_path_factory.mktemp("data") / "tiny"
    build_dataset(out, ["arc-agi-1"], ["arc-agi-1"], num_aug=12, max_grid_size=6, val_fraction=0.2,
                  subset=20, workers=0, progress=False)  # fmt: skip
    return out


@pytest.fixture(scope="module")
def checkpoint(dataset, tmp_path_factory):
    from hrm_fast.checkpoint import save_checkpoint
    from hrm_fast.config import load_config
    from hrm_fast.model.hrm import HRM

    cfg = load_config("cpu-tiny", [
        f"data.path={dataset}", "data.max_grid_size=6", "model.hidden_size=32", "model.num_heads=2",
        "model.H_layers=1", "model.L_layers=1", "model.H_cycles=1", "model.L_cycles=1", "model.halt_max_steps=2",
        "model.puzzle_emb_ndim=32", "eval.batch_size=32", "eval.ks=[1,2,10,100]",
    ])  # fmt: skip
    n_ids = len(json.loads((dataset / "identifiers.json").read_text()))
    torch.manual_seed(0)
    model = HRM(cfg.model, vocab_size=12, seq_len=36, num_puzzle_identifiers=n_ids)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "step_0", model, cfg)


def oracle(split, rows, out):
    votes = VoteBox()
    for s in range(0, len(rows), 50):
        chunk = rows[s : s + 50]
        labels = np.asarray(split.labels[chunk])
        decode_into(votes, labels, [split.task_ids[r] for r in chunk], [split.augs[r] for r in chunk],
                    split.test_index[chunk], np.full(len(chunk), 0.5), split.canvas)  # fmt: skip
    return finalize(votes, split.tasks, out)


@pytest.mark.parametrize("name", ["test", "val"])
def test_oracle_on_built_dataset_scores_100(dataset, tmp_path, name):
    split = load_eval_split(dataset, name)
    assert any(not a.is_identity for a in split.augs) and any(a.dihedral in (1, 3, 6, 7) for a in split.augs)
    scores = oracle(split, split.select("all"), tmp_path)
    assert scores["views"] == split.num_rows
    for s in SCORINGS:
        assert all(v == 1.0 for v in scores[s].values()), scores[s]
    assert scores["test_outputs"] == sum(len(t["test"]) for t in split.tasks.values())


def test_select_views_identity_first(dataset):
    split = load_eval_split(dataset, "test")
    rows = split.select(1)
    keys = [(split.task_ids[r], int(split.test_index[r])) for r in rows]
    assert len(keys) == len(set(keys)) == sum(len(t["test"]) for t in split.tasks.values())
    assert all(split.augs[r].is_identity for r in rows)
    assert len(split.select(3)) == 3 * len(rows) and len(split.select("all")) == split.num_rows


def test_tasks_rebuilt_without_extras(dataset, tmp_path):
    """A dataset from the original HRM builder has no tasks.json / test index: rebuilt from the rows."""
    copy = tmp_path / "hrm_layout"
    shutil.copytree(dataset, copy)
    (copy / "test" / "tasks.json").unlink()
    (copy / "test" / "all__test_index.npy").unlink()
    split = load_eval_split(copy, "test")
    assert split.tasks_rebuilt
    original = load_eval_split(dataset, "test")
    assert sorted(split.tasks) == sorted(original.tasks)
    for tid, task in original.tasks.items():  # same test pairs, in some order
        key = lambda p: json.dumps(p, sort_keys=True)  # noqa: E731
        assert sorted(map(key, split.tasks[tid]["test"])) == sorted(map(key, task["test"]))
    scores = oracle(split, split.select("all"), tmp_path / "out")
    assert scores["pass@2"] == {s: 1.0 for s in SCORINGS}


def test_missing_split_is_a_clear_error(dataset):
    with pytest.raises(EvalDataError, match="nope"):
        load_eval_split(dataset, "nope")


def test_cli_untrained_checkpoint(checkpoint, dataset, tmp_path, capsys):
    from train.evaluate import main

    out = tmp_path / "eval"
    assert main([f"checkpoint={checkpoint}", f"out={out}", "eval.views=all", "progress=false"]) == 0
    printed = capsys.readouterr().out
    assert "kaggle" in printed and "all_or_nothing" in printed
    scores = json.loads((out / "scores.json").read_text())
    tasks = json.loads((dataset / "test" / "tasks.json").read_text())
    split = load_eval_split(dataset, "test")
    per_input = {}
    for t, i in zip(split.task_ids, split.test_index):
        per_input[t, int(i)] = per_input.get((t, int(i)), 0) + 1
    assert max(per_input.values()) >= 10  # 12 copies + the original
    assert scores["ks"] == [1, 2, 10]  # eval.ks=[1,2,10,100]; 100 needs >= 100 views
    assert scores["views"] == split.num_rows
    for s in SCORINGS:
        vals = list(scores[s].values())
        assert all(0.0 <= v <= 1.0 for v in vals) and vals == sorted(vals)
    sub = json.loads((out / "submission.json").read_text())
    validate_submission(sub, {t: len(v["test"]) for t, v in tasks.items()})
    assert list(sub) == list(tasks)
    solutions = str(dataset / "test" / "tasks.json")
    assert score_main([str(out / "submission.json"), "--solutions", solutions, "--json"]) == 0
    rescored = json.loads(capsys.readouterr().out)
    assert all(rescored[s] == scores[s]["pass@2"] for s in SCORINGS)
    html = (out / "report.html").read_text()
    assert html.count('<section class="item') == scores["test_outputs"]
    assert str(checkpoint) in html


def test_cli_default_out_and_val_split(checkpoint):
    from train.evaluate import main

    assert main([f"checkpoint={checkpoint}", "split=val", "eval.views=2", "progress=false"]) == 0
    out = checkpoint.parent / f"{checkpoint.name}-eval-val"  # beside the checkpoint, which a later save replaces
    scores = json.loads((out / "scores.json").read_text())
    assert scores["max_views_per_test_input"] == 2 and scores["ks"] == [1, 2]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["checkpoint=/nonexistent/ckpt"], "no such checkpoint"),
        (["eval.views=all"], "checkpoint=PATH is required"),
        (["CKPT", "model.hidden_size=64"], "architecture comes from the checkpoint"),
        (["CKPT", "split=train"], "split='train'"),
        (["CKPT", "eval.nope=1"], "nope"),
        (["CKPT", "data.path=/nonexistent/data"], "/nonexistent/data/test"),
        (["CKPT", "bogus"], "key=value"),
    ],
)
def test_cli_bad_input_exit_2(checkpoint, args, needle, capsys):
    from train.evaluate import main

    args = [f"checkpoint={checkpoint}" if a == "CKPT" else a for a in args]
    assert main(args + ["progress=false"]) == 2
    assert needle in capsys.readouterr().err


@pytest.mark.parametrize("device, needle", [("cuda", "no CUDA device"), ("tpu", "device must be auto, cpu or cuda")])
def test_cli_unavailable_device_exit_2(checkpoint, tmp_path, monkeypatch, capsys, device, needle):
    from train.evaluate import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "eval"
    assert main([f"checkpoint={checkpoint}", f"device={device}", f"out={out}", "progress=false"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and device in err
    assert not out.exists()


def test_cli_refuses_dataset_of_another_canvas(checkpoint, tmp_path, capsys):
    from hrm_fast.data.build import build_dataset
    from train.evaluate import main

    other = tmp_path / "canvas7"
    build_dataset(other, ["arc-agi-1"], ["arc-agi-1"], num_aug=1, max_grid_size=7, subset=5, workers=0,
                  progress=False)  # fmt: skip
    assert main([f"checkpoint={checkpoint}", f"data.path={other}", "progress=false"]) == 2
    assert "seq_len 36" in capsys.readouterr().err


def test_evaluate_checkpoint_appends_metrics_line(checkpoint, tmp_path):
    from hrm_fast.checkpoint import load_checkpoint
    from hrm_fast.eval.pipeline import evaluate_checkpoint

    model, config = load_checkpoint(checkpoint)
    model.train()
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 1, "loss": 2.0}\n')
    scores = evaluate_checkpoint(model, config, "test", tmp_path / "out", views=1, metrics_path=metrics, step=7,
                                 progress=False)  # fmt: skip
    assert model.training  # mode restored
    lines = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert len(lines) == 2 and lines[1]["step"] == 7
    assert lines[1]["eval/kaggle@2"] == scores["kaggle"]["pass@2"]
    assert set(lines[1]) >= {f"eval/{s}@{k}" for s in SCORINGS for k in (1, 2)}


def test_predictions_do_not_depend_on_batching(checkpoint, dataset):
    """Padding rows and batch composition must not change a row's prediction (rows are independent)."""
    from hrm_fast.checkpoint import load_checkpoint
    from hrm_fast.eval.predict import predict_views

    model, config = load_checkpoint(checkpoint)
    split = load_eval_split(dataset, "test")
    rows = split.select("all")[:10]
    steps = config.model.halt_max_steps

    def run(bs, compile=False):
        out = list(predict_views(model, split, rows, bs, steps, torch.device("cpu"), progress=False, compile=compile))
        return tuple(np.concatenate([o[i] for o in out]) for i in range(3))

    r1, t1, q1 = run(1)
    r7, t7, q7 = run(7)  # 7 + 3 real rows, the second batch padded with 4 blank rows
    assert np.array_equal(r1, rows) and np.array_equal(r7, rows)
    assert t1.shape == (10, 36) and t1.dtype == np.uint8 and t1.max() < 12
    assert np.array_equal(t1, t7)
    np.testing.assert_allclose(q1, q7, rtol=1e-5, atol=1e-6)
    assert np.all((q1 > 0) & (q1 < 1))
    rc, tc, qc = run(7, compile=True)  # the compiled EvalStep (compile=true, as on CUDA by default)
    assert np.array_equal(rc, rows)
    assert (tc != t7).mean() <= 0.01  # fp32 compiled vs eager: an argmax near a tie may flip, nothing more
    np.testing.assert_allclose(qc, q7, rtol=1e-4, atol=1e-5)


def test_cli_original_hrm_checkpoint_with_config(checkpoint, tmp_path, capsys):
    """checkpoint=FILE hrm_config=all_config.yaml (original HRM layout) gives the same answers as ours."""
    import yaml

    from hrm_fast.checkpoint import export_hrm_state_dict, load_checkpoint, to_hrm_config
    from train.evaluate import main

    model, config = load_checkpoint(checkpoint)
    step_file, hrm_cfg = tmp_path / "step_0", tmp_path / "all_config.yaml"
    torch.save(export_hrm_state_dict(model), step_file)
    hrm_cfg.write_text(yaml.safe_dump(to_hrm_config(config)))
    assert main([f"checkpoint={step_file}", "progress=false"]) == 2
    assert "hrm_config=" in capsys.readouterr().err
    assert main([f"checkpoint={step_file}", f"hrm_config={hrm_cfg}", "eval.batch_size=32", "progress=false"]) == 0
    assert main([f"checkpoint={checkpoint}", f"out={tmp_path / 'ours'}", "progress=false"]) == 0
    theirs = tmp_path / "step_0-eval-test"
    ours = tmp_path / "ours"
    sub = json.loads((ours / "submission.json").read_text())
    assert json.loads((theirs / "submission.json").read_text()) == sub
    a, b = (json.loads((d / "scores.json").read_text()) for d in (theirs, ours))
    assert a["empty_crop_fraction"] == b["empty_crop_fraction"] < 0.5  # real answers, not placeholders


def _rebuild(dataset, out, **changes):
    """Another build with the fixture's arguments except ``changes``."""
    from hrm_fast.data.build import build_dataset

    args = dict(num_aug=12, max_grid_size=6, val_fraction=0.2, subset=20, workers=0, progress=False) | changes
    build_dataset(out, ["arc-agi-1"], ["arc-agi-1"], **args)
    return out


def test_cli_on_a_rebuilt_dataset_maps_puzzles_by_name(checkpoint, dataset, tmp_path, capsys):
    """Issue 11 (3): a same-size rebuild with another --seed was evaluated with the wrong puzzle embeddings,
    unnoticed. Now puzzles are mapped by name; views of puzzles the checkpoint does not know are not run."""
    from hrm_fast.checkpoint import read_dataset_identity
    from train.evaluate import main

    other = _rebuild(dataset, tmp_path / "seed7", seed=7)
    known = set(read_dataset_identity(checkpoint).identifiers)
    split = load_eval_split(other, "test")
    names = [split.identifiers[p] for p in split.puzzle_ids]
    unknown_rows = sum(1 for n in names if n not in known)
    assert 0 < unknown_rows < len(names)  # the originals are known (same names), most augmented copies are not
    out = tmp_path / "eval"
    assert main([f"checkpoint={checkpoint}", f"data.path={other}", f"out={out}", "eval.views=all",
                 "progress=false"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "mapped by name" in printed and "unknown to the checkpoint" in printed
    scores = json.loads((out / "scores.json").read_text())
    assert scores["unknown_puzzle_views"] == unknown_rows and scores["views"] == len(names) - unknown_rows
    assert scores["unknown_puzzles"] == len({n for n in names if n not in known})
    assert "puzzle unknown to the checkpoint" in (out / "report.html").read_text()
    # the same build: nothing mapped, nothing skipped
    assert main([f"checkpoint={checkpoint}", f"out={tmp_path / 'same'}", "eval.views=1", "progress=false"]) == 0
    assert "mapped by name" not in capsys.readouterr().out
    assert json.loads((tmp_path / "same" / "scores.json").read_text())["unknown_puzzle_views"] == 0


def test_mapped_rows_use_their_own_puzzle_row_of_the_checkpoint(checkpoint, dataset, tmp_path):
    """A smaller build (fewer puzzles: only ids beyond the table were caught before): every row that runs
    carries the checkpoint's identifier of its own puzzle name; the others are never selected."""
    from hrm_fast.checkpoint import read_dataset_identity

    ckpt_names = read_dataset_identity(checkpoint).identifiers
    split = load_eval_split(_rebuild(dataset, tmp_path / "small", subset=8), "test")
    mapped = split.mapped_to(ckpt_names)
    assert mapped.unknown is not None
    for r in range(split.num_rows):
        name = split.identifiers[split.puzzle_ids[r]]
        if mapped.unknown[r]:
            assert name not in ckpt_names and mapped.puzzle_ids[r] == 0
        else:
            assert ckpt_names[mapped.puzzle_ids[r]] == name
    for views in ("all", 2):
        assert not mapped.unknown[mapped.select(views)].any()


def test_cli_old_checkpoint_without_identity_warns(checkpoint, tmp_path, capsys):
    from train.evaluate import main

    old = tmp_path / "old"
    shutil.copytree(checkpoint, old)
    (old / "dataset_identity.json").unlink()
    (old / "identifiers.json").unlink()
    assert main([f"checkpoint={old}", f"out={tmp_path / 'eval'}", "eval.views=1", "progress=false"]) == 0
    assert "records no dataset identity" in capsys.readouterr().out
    (old / "dataset_identity.json").write_text("[" * 100_000)  # unreadable: one line, exit 2
    (old / "identifiers.json").write_text("[]")
    assert main([f"checkpoint={old}", f"out={tmp_path / 'eval2'}", "progress=false"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{old}: cannot read its dataset identity" in err


def test_cli_prints_the_checkpoints_step_and_run(checkpoint, tmp_path, capsys):
    """Issue 11 (6): the quick start's checkpoint=runs/<run> evaluates `best` (possibly an early step) silently."""
    from hrm_fast.checkpoint import load_checkpoint, save_checkpoint
    from train.evaluate import main

    model, config = load_checkpoint(checkpoint)
    run = tmp_path / "run"
    save_checkpoint(run / "best", model, config, state={"step": 160})
    save_checkpoint(run / "last", model, config, state={"step": 640})
    (run / "config.yaml").write_text((checkpoint / "config.yaml").read_text())
    assert main([f"checkpoint={run}", f"out={tmp_path / 'eval'}", "eval.views=1", "progress=false"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == f"checkpoint {run / 'best'}: step 160, run {run} (its last checkpoint is at step 640)"
    assert json.loads((tmp_path / "eval" / "scores.json").read_text())["step"] == 160
