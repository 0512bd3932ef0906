"""python -m hrm_fast.export: ONNX (onnxruntime) and torch.export programs of a tiny checkpoint equal the eager
evaluation loop over every segment; --puzzles none fed the right row equals the full model; bad input exits 2."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime as ort
import pytest
import torch

from hrm_fast.export.__main__ import main
from hrm_fast.export.bench import main as bench_main
from hrm_fast.export.verify import eager_segments

BATCH = 2


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from hrm_fast.data.build import build_dataset

    out = tmp_path_factory.mktemp("data") / "tiny"
    build_dataset(out, ["arc-agi-1"], ["arc-agi-1"], num_aug=1, max_grid_size=6, val_fraction=0.0,
                  subset=20, workers=0, progress=False)  # fmt: skip
    return out


@pytest.fixture(scope="module")
def checkpoint(dataset, tmp_path_factory):
    from hrm_fast.checkpoint import save_checkpoint
    from hrm_fast.config import load_config
    from hrm_fast.model.hrm import HRM

    cfg = load_config("cpu-tiny", [
        f"data.path={dataset}", "data.max_grid_size=6", "model.hidden_size=32", "model.num_heads=2",
        "model.H_layers=1", "model.L_layers=1", "model.H_cycles=1", "model.L_cycles=2", "model.halt_max_steps=3",
        "model.puzzle_emb_ndim=48",
    ])  # fmt: skip
    n_ids = len(json.loads((dataset / "identifiers.json").read_text()))
    torch.manual_seed(0)
    model = HRM(cfg.model, vocab_size=12, seq_len=36, num_puzzle_identifiers=n_ids)
    with torch.no_grad():  # an untrained model has all-zero puzzle rows and a constant q head: make both matter
        model.puzzle_emb.weights.normal_()
        model.inner.q_head.weight.normal_(0, 0.1)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "step_0", model, cfg)


@pytest.fixture(scope="module")
def model(checkpoint):
    from hrm_fast.checkpoint import load_checkpoint

    return load_checkpoint(checkpoint)[0].eval()


def held_out_rows(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Real encoded grids: the last BATCH rows of the test split (the export verified on others too)."""
    from hrm_fast.eval.views import load_eval_split

    split = load_eval_split(dataset, "test")
    rows = np.arange(split.num_rows - BATCH, split.num_rows)
    return torch.from_numpy(np.asarray(split.inputs[rows], np.int32)), torch.from_numpy(split.puzzle_ids[rows])


def assert_matches_eager(out: np.ndarray, q: np.ndarray, model, batch, output: str = "logits") -> None:
    """out/q of every segment [N, B, ...] equal the eager loop: max abs <= 1e-4, argmax tokens identical."""
    ref, ref_q = eager_segments(model, batch, model.config.halt_max_steps)
    assert out.shape[0] == ref.shape[0] == 3
    if output == "logits":
        assert np.abs(out - ref).max() <= 1e-4
        out = out.argmax(-1)
    assert np.array_equal(out, ref.argmax(-1))
    assert np.abs(q - ref_q).max() <= 1e-4
    assert np.ptp(ref_q) > 0  # the q head is not constant, so q_halt is really compared


def test_onnx_export_equals_eager_over_all_segments(checkpoint, dataset, model, tmp_path, capsys):
    out = tmp_path / "onnx"
    assert main([str(checkpoint), "--format", "onnx", "--per-segment", "--batch", str(BATCH), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "onnxruntime (CPU): logits max abs diff" in printed.out and "-> OK" in printed.out
    assert "rows of" in printed.err  # verified on the checkpoint's dataset
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.onnx"]
    assert not list(tmp_path.glob(".onnx.*"))
    graph = onnx.load(out / "model.onnx").graph
    assert {n.domain for n in graph.node} <= {"", "ai.onnx"}  # standard ONNX ops only (no custom/extension op)
    # each weight stored once although the unrolled segments use it many times
    stored = sum(onnx.numpy_helper.to_array(t).nbytes for t in graph.initializer)
    weights = sum(p.nbytes for p in model.inner.parameters()) + model.puzzle_emb.weights.nbytes
    assert stored < 1.1 * weights + 2**16, (stored, weights)
    meta = json.loads((out / "model.json").read_text())
    assert meta["canvas"] == 6 and meta["vocab"]["size"] == 12 and meta["segments"] == 3
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in session.get_inputs()] == [(i["name"], i["shape"]) for i in meta["inputs"]]
    assert [(o.name, o.shape) for o in session.get_outputs()] == [(o["name"], o["shape"]) for o in meta["outputs"]]
    batch = held_out_rows(dataset)
    logits, q = session.run(None, {"tokens": batch[0].numpy(), "puzzle_ids": batch[1].numpy()})
    assert_matches_eager(logits, q, model, batch)
    assert bench_main([str(out), "--repeats", "1"]) == 0
    rows = json.loads((out / "bench.json").read_text())["rows"]
    assert {r["engine"] for r in rows} == {"onnxruntime CPU", "PyTorch eager"}
    assert all(r["latency_ms"] > 0 and r["batch"] == BATCH for r in rows)


def pt2_program(out):
    program = torch.export.load(str(out / "model.pt2"))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert not [t for t in targets if "hrm_fast" in t or "triton" in t], targets  # reference ops only
    return program.module()


def test_pt2_puzzles_none_fed_the_right_row_equals_full_model(checkpoint, dataset, model, tmp_path):
    out = tmp_path / "pt2"
    args = [str(checkpoint), "--format", "pt2", "--puzzles", "none", "--per-segment", "--batch", str(BATCH)]
    assert main([*args, "--out", str(out)]) == 0
    meta = json.loads((out / "model.json").read_text())
    assert [i["name"] for i in meta["inputs"]] == ["tokens", "puzzle_vectors"]
    tokens, pids = batch = held_out_rows(dataset)
    with torch.no_grad():
        logits, q = pt2_program(out)(tokens, model.puzzle_emb.weights[pids.long()])
    assert_matches_eager(logits.numpy(), q.numpy(), model, batch)


def test_pt2_puzzle_subset_with_token_output(checkpoint, dataset, model, tmp_path):
    tokens, pids = batch = held_out_rows(dataset)
    ids = sorted({*pids.tolist(), 1})
    out = tmp_path / "subset"
    assert main([str(checkpoint), "--format", "pt2", "--puzzles", ",".join(map(str, ids)), "--output", "tokens",
                 "--per-segment", "--batch", str(BATCH), "--out", str(out)]) == 0
    meta = json.loads((out / "model.json").read_text())
    assert meta["puzzles"]["ids"] == ids and meta["outputs"][0]["name"] == "predicted_tokens"
    index = torch.tensor([ids.index(p) for p in pids.tolist()], dtype=torch.int32)
    with torch.no_grad():
        predicted, q = pt2_program(out)(tokens, index)
    assert predicted.dtype == torch.int32
    assert_matches_eager(predicted.numpy(), q.numpy(), model, batch, output="tokens")


def test_disagreeing_export_is_refused_and_nothing_is_left(checkpoint, tmp_path, monkeypatch, capsys):
    import hrm_fast.export.__main__ as cli

    real = cli.build_program

    def perturbed(spec, model):  # what a wrong graph would compute: the export must notice
        program = real(spec, model)
        with torch.no_grad():
            program.inner.lm_head.weight.add_(1e-2)
        return program

    monkeypatch.setattr(cli, "build_program", perturbed)
    out = tmp_path / "bad"
    assert main([str(checkpoint), "--format", "pt2", "--out", str(out)]) == 2
    assert "disagrees with PyTorch eager" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, needle", [
    (["--segments", "4"], "--segments 4"),
    (["--segments", "0"], "--segments 0"),
    (["--batch", "0"], "--batch 0"),
    (["--puzzles", "1,999"], "--puzzles: ids [999]"),
    (["--puzzles", "x"], "--puzzles 'x'"),
    (["--dtype", "bfloat16"], "--dtype: invalid choice: 'bfloat16'"),
    (["--format", "tflite"], "--format: invalid choice: 'tflite'"),
])  # fmt: skip
def test_unsupported_option_exits_2_naming_it(checkpoint, tmp_path, capsys, args, needle):
    argv = [str(checkpoint), "--format", "onnx", *args, "--out", str(tmp_path / "x")]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own choices
        code = exc.code
    assert code == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_checkpoint_of_the_wrong_kind_exits_2_naming_it(checkpoint, tmp_path, capsys):
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.yaml").write_text((checkpoint / "config.yaml").read_text())
    save_file({"w": torch.zeros(2)}, str(foreign / "model.safetensors"), metadata={"format": "pt"})
    a_file = tmp_path / "step_100"
    torch.save({"w": torch.zeros(2)}, a_file)
    for ckpt, needle in ((foreign, "not an hrm_fast checkpoint"), (a_file, "pass its all_config.yaml"),
                         (tmp_path / "missing", "no such checkpoint directory")):
        assert main([str(ckpt), "--format", "pt2", "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert needle in err and str(ckpt.name) in err
    assert not (tmp_path / "x").exists()
