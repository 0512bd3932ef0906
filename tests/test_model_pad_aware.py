"""``model.pad_aware``: each segment runs on the smallest top-left window of the canvas holding the rows' cells.

- the window side: bounding boxes from (0, 0) of non-PAD inputs and non-IGNORE labels, bucketed, capped;
- a full-canvas window is the default path, bit for bit (also when the gather/scatter code runs on it);
- cells outside the window keep their z in a segment, cells inside change, their logits predict PAD;
- with ``pos_encodings=none`` (attention then ignores positions) a window run on an 8x8 canvas equals the default
  model on a 4x4 canvas holding the window's cells: same logits, Q values, loss and gradients;
- ``compile=true`` with pad_aware is refused at start (exit 2); a short run and ``train.evaluate`` work.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_train_run import TINY_RUN, _losses, _run, tiny_data  # noqa: F401

from hrm_fast.config import ConfigError, ModelConfig, load_config
from hrm_fast.data.encode import IGNORE_LABEL, encode_grid
from hrm_fast.model.hrm import HRM, window_positions, window_side
from hrm_fast.model.losses import act_loss

VOCAB, IDS, CANVAS = 12, 20, 8


def tiny(**kw) -> ModelConfig:
    base = dict(hidden_size=32, num_heads=2, H_layers=1, L_layers=2, H_cycles=2, L_cycles=2, halt_max_steps=3,
                puzzle_emb_ndim=32, forward_dtype="float32")
    base.update(kw)
    return ModelConfig(**base)


def make(seq_len: int = CANVAS * CANVAS, seed: int = 0, **kw) -> HRM:
    torch.manual_seed(seed)
    model = HRM(tiny(**kw), VOCAB, seq_len, IDS)
    with torch.no_grad():  # non-trivial puzzle vectors and Q head so every path matters
        model.puzzle_emb.weights.normal_(0, 0.5)
        model.inner.q_head.weight.normal_(0, 0.1)
    return model


def board(shape: tuple[int, int], rng: np.random.Generator, offset: tuple[int, int] = (0, 0),
          canvas: int = CANVAS) -> np.ndarray:
    return encode_grid(rng.integers(0, 10, shape), canvas, offset).astype(np.int64)


def grid_batch(shapes: list[tuple[int, int]], seed: int = 0, canvas: int = CANVAS) -> dict[str, torch.Tensor]:
    """Rows with an input grid and a label grid of ``shapes[i]`` at (0, 0); label PAD -> IGNORE as in batches."""
    rng = np.random.default_rng(seed)
    inputs = np.stack([board(s, rng, canvas=canvas) for s in shapes])
    labels = np.stack([board(s, rng, canvas=canvas) for s in shapes])
    labels[labels == 0] = IGNORE_LABEL
    return {"inputs": torch.tensor(inputs, dtype=torch.int32), "labels": torch.tensor(labels, dtype=torch.int32),
            "puzzle_identifiers": torch.arange(1, len(shapes) + 1, dtype=torch.int32)}


def ignore(n: int = 1) -> torch.Tensor:
    return torch.full((n, CANVAS * CANVAS), IGNORE_LABEL, dtype=torch.int32)


# --------------------------------------------------------------------------- the window
def test_window_side_bounding_boxes_bucketing_and_cap():
    rng = np.random.default_rng(0)
    small = torch.tensor(board((2, 3), rng))[None]  # 2x3 grid + EOS border: 3 rows x 4 columns
    assert window_side(small, ignore(), CANVAS, 1) == 4
    assert window_side(small, ignore(), CANVAS, 3) == 6
    moved = torch.tensor(board((3, 3), rng, offset=(2, 1)))[None]  # rows 2..5 (EOS row 5), columns 1..4
    assert window_side(moved, ignore(), CANVAS, 1) == 6
    assert window_side(moved, ignore(), CANVAS, 4) == CANVAS  # 8, the cap
    assert window_side(moved, ignore(), CANVAS, 5) == CANVAS  # 10 capped at 8
    labels = ignore()
    labels.view(CANVAS, CANVAS)[4, 0] = 2  # a supervised cell in row 4 (PAD labels are IGNORE)
    assert window_side(small, labels, CANVAS, 1) == 5
    both = torch.cat((small, moved))  # the window is the batch's maximum
    assert window_side(both, ignore(2), CANVAS, 1) == 6
    empty = torch.zeros(2, CANVAS * CANVAS, dtype=torch.int32)
    assert window_side(empty, ignore(2), CANVAS, 1) == 1 and window_side(empty, ignore(2), CANVAS, 4) == 4
    assert window_positions(2, CANVAS, 1, torch.device("cpu")).tolist() == [0, 1, 2, 9, 10]
    assert window_positions(2, CANVAS, 0, torch.device("cpu")).tolist() == [0, 1, 8, 9]


def test_pad_aware_config_rules():
    assert load_config(None).compile is None  # true on CUDA
    assert load_config(None, ["model.pad_aware=true"]).compile is False  # unset compile: eager
    with pytest.raises(ConfigError, match="pad_aware=true runs eagerly"):
        load_config("cpu-tiny", ["model.pad_aware=true", "compile=true"])
    with pytest.raises(ConfigError, match="mlp_t"):
        load_config("cpu-tiny", ["model.pad_aware=true", "model.arch=trm", "model.mlp_t=true"])
    with pytest.raises(ValueError, match="square"):
        HRM(tiny(pad_aware=True), VOCAB, 10, IDS)


# --------------------------------------------------------------------------- full canvas = default path
def segments(model: HRM, data: dict[str, torch.Tensor], n: int = 2) -> list[tuple[dict, torch.Tensor, dict]]:
    """``n`` training segments from a fresh carry: (outputs, loss, grads) each, fixed exploration draws."""
    carry = model.initial_carry(data["inputs"].shape[0])
    rows = data["inputs"].shape[0]
    explore, min_steps = torch.linspace(0, 1, rows), torch.full((rows,), 2, dtype=torch.int32)
    out = []
    for _ in range(n):
        model.zero_grad(set_to_none=True)
        model.puzzle_emb.pending.clear()
        carry, outputs = model(carry, data, explore, min_steps)
        loss, _ = act_loss(carry, outputs)
        loss.backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
        grads["puzzle"] = model.puzzle_emb.local_weights.grad.clone()
        out.append(({k: v.detach().clone() for k, v in outputs.items()}, loss.detach(), grads))
    return out


def assert_same(got: list, want: list, exact: bool = True) -> None:
    check = (lambda a, b, k: torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)) if exact else (
        lambda a, b, k: torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k))
    for (out_a, loss_a, grad_a), (out_b, loss_b, grad_b) in zip(got, want, strict=True):
        assert out_a.keys() == out_b.keys() and grad_a.keys() == grad_b.keys()
        for k in out_a:
            check(out_a[k], out_b[k], k)
        check(loss_a, loss_b, "loss")
        for k in grad_a:
            check(grad_a[k], grad_b[k], k)


@pytest.mark.parametrize("pos", ["rope", "learned"])
def test_a_full_canvas_window_is_the_default_path_bit_for_bit(pos):
    data = grid_batch([(3, 3), (CANVAS, CANVAS - 2)])  # the second row fills the canvas (EOS below is cut off)
    assert window_side(data["inputs"], data["labels"], CANVAS, 4) == CANVAS
    want = segments(make(pos_encodings=pos).train(), data)
    aware = make(pos_encodings=pos, pad_aware=True).train()
    assert aware.window(data) is None  # k == C: the default code runs
    assert_same(segments(aware, data), want)
    # the gather / write-back / scatter code itself, on the whole canvas, gives the same bits
    everything = torch.arange(aware.inner.total_len)
    aware = make(pos_encodings=pos, pad_aware=True).train()
    aware.window = lambda data: everything
    assert_same(segments(aware, data), want)


def test_cells_outside_the_window_keep_their_z_and_predict_pad():
    model = make(pad_aware=True).eval()
    data = grid_batch([(2, 3), (3, 2), (1, 1)])  # bounding box 4x4 with the EOS border
    inside = window_positions(4, CANVAS, 1, torch.device("cpu"))
    outside = torch.tensor([t for t in range(model.inner.total_len) if t not in set(inside.tolist())])
    carry = model.initial_carry(3)
    with torch.no_grad():
        carry, out = model(carry, data)  # every row loads: z = init everywhere, then the window updates
        assert torch.equal(model.window(carry.current_data), inside)
        before = carry.z_H.clone(), carry.z_L.clone()
        carry, out = model(carry, data)
    for z, z0, init in zip((carry.z_H, carry.z_L), before, (model.inner.H_init, model.inner.L_init), strict=True):
        assert torch.equal(z[:, outside], z0[:, outside])
        assert torch.equal(z[:, outside], init.expand_as(z[:, outside]))  # never updated since the reset
        assert (z[:, inside] != z0[:, inside]).any(-1).all()  # every window cell changed
    assert (out["logits"][:, outside - 1].argmax(-1) == 0).all()  # grid cells outside the window predict PAD


# --------------------------------------------------------------------------- a real invariant
@pytest.mark.parametrize("arch", ["hrm", "trm"])
def test_window_run_equals_the_default_model_on_the_window_sized_canvas(arch):
    """Without positions, attention is permutation-equivariant: a window run on the 8x8 canvas must equal the
    default model run on a 4x4 canvas holding exactly the window's cells (the same weights)."""
    kw = dict(pos_encodings="none", arch=arch, bootstrap_q=True)
    shapes = [(2, 3), (3, 2), (3, 3)]
    big_data, small_data = grid_batch(shapes), grid_batch(shapes, canvas=4)
    aware = make(pad_aware=True, **kw).train()
    small = make(seq_len=16, **kw).train()
    small.load_state_dict(aware.state_dict())
    got, want = segments(aware, big_data, 3), segments(small, small_data, 3)
    cells = window_positions(4, CANVAS, 1, torch.device("cpu"))[1:] - 1
    for (out, _, _), (small_out, _, _) in zip(got, want, strict=True):
        assert torch.equal(out["logits"][:, cells], small_out["logits"])
        out["logits"] = out["logits"][:, cells]
    assert_same(got, want, exact=False)  # the loss sums over 64 vs 16 positions (more zeros): not always bit-exact


# --------------------------------------------------------------------------- end to end
def test_compile_with_pad_aware_is_refused_at_start(tmp_path):
    run = tmp_path / "r"
    res = _run(TINY_RUN + ["data.path=unused", "train.max_steps=2", "compile=true", "model.pad_aware=true",
                           f"run.dir={run}"])
    assert res.returncode == 2 and "model.pad_aware=true runs eagerly" in res.stderr, res.stderr[-2000:]
    assert not run.exists()


def test_a_pad_aware_run_trains_and_evaluates(tiny_data, tmp_path, capsys):  # noqa: F811
    from train.evaluate import main

    run = tmp_path / "run"
    res = _run(TINY_RUN + [f"data.path={tiny_data}", "model.pad_aware=true", "train.max_steps=6",
                           "checkpoint.every=3", f"run.dir={run}"])
    assert res.returncode == 0, res.stderr[-3000:]
    assert "compile=False" in res.stdout
    losses = _losses(run)
    assert sorted(losses) == list(range(1, 7)) and all(np.isfinite(list(losses.values())))
    out = tmp_path / "eval"
    assert main([f"checkpoint={run / 'last'}", f"out={out}", "eval.views=2", "progress=false"]) == 0
    assert "kaggle" in capsys.readouterr().out and (out / "submission.json").exists()
