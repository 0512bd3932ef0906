"""``model.pad_aware``: each segment runs every row on a k x k window of the canvas over that row's own cells.

- the windows: each row's bounding box of non-PAD inputs and non-IGNORE labels, k the batch's largest (bucketed,
  capped), each window at its row's box, moved back inside the canvas at the edges; it always holds the box;
- a full-canvas window is the default path, bit for bit (also when the gather/scatter code runs on it);
- cells outside a row's window keep their z in a segment, cells inside change, their logits predict PAD;
- each row runs on its own window: alone, it gives what it gives in a batch with rows elsewhere on the canvas;
- with ``pos_encodings=none`` (attention then ignores positions) a window run on an 8x8 canvas, rows at different
  places, equals the default model on a 4x4 canvas holding the windows' cells: same logits, Q values, loss and
  gradients;
- ``data.bucket_batches``: each pool of batches holds the same rows, sorted by box side (up, then down), and
  the batches' windows shrink; the sampler state names it;
- ``compile=true`` with pad_aware is refused at start (exit 2); a short run (bucketed) and ``train.evaluate`` work.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_train_run import TINY_RUN, _losses, _run, tiny_data  # noqa: F401

from hrm_fast.config import ConfigError, ModelConfig, load_config
from hrm_fast.data.boxes import box_sides
from hrm_fast.data.dataset import PuzzleDataset, TrainSampler
from hrm_fast.data.encode import IGNORE_LABEL, encode_grid
from hrm_fast.model.hrm import HRM, row_windows, window_positions
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


def grid_batch(shapes: list[tuple[int, int]], seed: int = 0, canvas: int = CANVAS,
               offsets: list[tuple[int, int]] | None = None) -> dict[str, torch.Tensor]:
    """Rows with an input grid and a label grid of ``shapes[i]`` at ``offsets[i]`` (default (0, 0)); label PAD ->
    IGNORE as in batches. The grids' colours depend on ``seed`` and ``shapes`` only."""
    rng = np.random.default_rng(seed)
    offsets = offsets or [(0, 0)] * len(shapes)
    inputs = np.stack([board(s, rng, o, canvas) for s, o in zip(shapes, offsets, strict=True)])
    labels = np.stack([board(s, rng, o, canvas) for s, o in zip(shapes, offsets, strict=True)])
    labels[labels == 0] = IGNORE_LABEL
    return {"inputs": torch.tensor(inputs, dtype=torch.int32), "labels": torch.tensor(labels, dtype=torch.int32),
            "puzzle_identifiers": torch.arange(1, len(shapes) + 1, dtype=torch.int32)}


def ignore(n: int = 1) -> torch.Tensor:
    return torch.full((n, CANVAS * CANVAS), IGNORE_LABEL, dtype=torch.int32)


# --------------------------------------------------------------------------- the window
def windows(inputs: torch.Tensor, labels: torch.Tensor, step: int) -> tuple[int, list[list[int]]]:
    side, origins = row_windows(inputs, labels, CANVAS, step)
    return side, origins.tolist()


def test_row_windows_boxes_origins_bucketing_and_cap():
    rng = np.random.default_rng(0)
    small = torch.tensor(board((2, 3), rng))[None]  # 2x3 grid + EOS border: 3 rows x 4 columns from (0, 0)
    assert windows(small, ignore(), 1) == (4, [[0, 0]])
    assert windows(small, ignore(), 3) == (6, [[0, 0]])
    moved = torch.tensor(board((3, 3), rng, offset=(2, 1)))[None]  # rows 2..5 (EOS row 5), columns 1..4
    assert windows(moved, ignore(), 1) == (4, [[2, 1]])
    assert windows(moved, ignore(), 3) == (6, [[2, 1]])  # 2 + 6 = 8: still inside
    assert windows(moved, ignore(), 5) == (5, [[2, 1]])
    assert windows(moved, ignore(), 9) == (CANVAS, [[0, 0]])  # 9 capped at 8
    corner = torch.tensor(board((2, 2), rng, offset=(6, 5)))[None]  # rows 6..7 (EOS cut off), columns 5..7
    assert windows(corner, ignore(), 4) == (4, [[4, 4]])  # moved up and left to stay on the canvas
    labels = ignore()
    labels.view(CANVAS, CANVAS)[4, 0] = 2  # a supervised cell in row 4 (PAD labels are IGNORE)
    assert windows(small, labels, 1) == (5, [[0, 0]])
    both = torch.cat((small, moved, corner))  # k is the batch's maximum; each row keeps its own origin
    assert windows(both, ignore(3), 1) == (4, [[0, 0], [2, 1], [4, 4]])
    empty = torch.zeros(2, CANVAS * CANVAS, dtype=torch.int32)
    assert windows(empty, ignore(2), 1) == (1, [[0, 0], [0, 0]])
    assert windows(empty, ignore(2), 4) == (4, [[0, 0], [0, 0]])
    origins = torch.tensor([[0, 0], [1, 2]])
    assert window_positions(2, CANVAS, 1, origins).tolist() == [[0, 1, 2, 9, 10], [0, 11, 12, 19, 20]]
    assert window_positions(2, CANVAS, 0, origins).tolist() == [[0, 1, 8, 9], [10, 11, 18, 19]]


def test_every_row_window_holds_its_rows_cells():
    """Random grids at random places: every needed cell of every row is inside that row's window."""
    rng = np.random.default_rng(1)
    for _ in range(50):
        shapes = [tuple(rng.integers(1, CANVAS + 1, 2)) for _ in range(3)]
        offsets = [tuple(int(rng.integers(0, CANVAS - d + 1)) for d in s) for s in shapes]
        data = grid_batch(shapes, int(rng.integers(1 << 30)), offsets=offsets)
        for step in (1, 4):
            side, origins = row_windows(data["inputs"], data["labels"], CANVAS, step)
            positions = window_positions(side, CANVAS, 0, origins)
            assert positions.shape[1] == side * side and positions.max() < CANVAS * CANVAS
            needed = (data["inputs"] != 0) | (data["labels"] != IGNORE_LABEL)
            for row in range(3):
                assert set(needed[row].nonzero().flatten().tolist()) <= set(positions[row].tolist())


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
    assert row_windows(data["inputs"], data["labels"], CANVAS, 4)[0] == CANVAS
    want = segments(make(pos_encodings=pos).train(), data)
    aware = make(pos_encodings=pos, pad_aware=True).train()
    assert aware.window(data) is None  # k == C: the default code runs
    assert_same(segments(aware, data), want)
    # the gather / write-back / scatter code itself, on the whole canvas, gives the same bits
    everything = torch.arange(aware.inner.total_len).expand(data["inputs"].shape[0], -1)
    aware = make(pos_encodings=pos, pad_aware=True).train()
    aware.window = lambda data: everything
    assert_same(segments(aware, data), want)


# rows at three places: boxes 3x4 at (0, 0), 4x3 at (3, 4), 2x2 at (5, 1) -> k = 4, origins (0, 0), (3, 4), (4, 1)
SHAPES, OFFSETS, ORIGINS = [(2, 3), (3, 2), (1, 1)], [(0, 0), (3, 4), (5, 1)], [[0, 0], [3, 4], [4, 1]]


def test_cells_outside_the_window_keep_their_z_and_predict_pad():
    model = make(pad_aware=True).eval()
    data = grid_batch(SHAPES, offsets=OFFSETS)
    inside = window_positions(4, CANVAS, 1, torch.tensor(ORIGINS))
    carry = model.initial_carry(3)
    with torch.no_grad():
        carry, out = model(carry, data)  # every row loads: z = init everywhere, then the windows update
        assert torch.equal(model.window(carry.current_data), inside)
        before = carry.z_H.clone(), carry.z_L.clone()
        carry, out = model(carry, data)
    for row in range(3):
        outside = torch.tensor([t for t in range(model.inner.total_len) if t not in set(inside[row].tolist())])
        for z, z0, init in zip((carry.z_H, carry.z_L), before, (model.inner.H_init, model.inner.L_init), strict=True):
            assert torch.equal(z[row, outside], z0[row, outside])
            assert torch.equal(z[row, outside], init.expand_as(z[row, outside]))  # never updated since the reset
            assert (z[row, inside[row]] != z0[row, inside[row]]).any(-1).all()  # every window cell changed
        assert (out["logits"][row, outside - 1].argmax(-1) == 0).all()  # grid cells outside predict PAD


@pytest.mark.parametrize("pos", ["rope", "learned"])
def test_each_row_runs_on_its_own_window(pos):
    """A row alone gives what it gives in the batch (same k): no row reads another row's positions or cells."""
    model = make(pad_aware=True, pos_encodings=pos).eval()
    data = grid_batch([(3, 3), (3, 3), (2, 3)], offsets=[(0, 0), (4, 3), (1, 4)])  # k = 4 for every row
    carry = model.initial_carry(3)
    with torch.no_grad():
        carry, out = model(carry, data)
        for row in range(3):
            alone = {k: v[row : row + 1] for k, v in data.items()}
            _, out_row = model(model.initial_carry(1), alone)
            for key in out:
                torch.testing.assert_close(out_row[key][0], out[key][row], rtol=1e-5, atol=1e-5, msg=key)
    # and the places matter: the same grids at other places give other logits (RoPE / learned positions)
    moved = grid_batch([(3, 3), (3, 3), (2, 3)], offsets=[(0, 0), (0, 0), (0, 0)])
    with torch.no_grad():
        _, out_moved = model(model.initial_carry(3), moved)
    assert not torch.allclose(out_moved["q_halt_logits"][1:], out["q_halt_logits"][1:], atol=1e-4)


# --------------------------------------------------------------------------- a real invariant
@pytest.mark.parametrize("arch", ["hrm", "trm"])
def test_window_run_equals_the_default_model_on_the_window_sized_canvas(arch):
    """Without positions, attention is permutation-equivariant: a window run on the 8x8 canvas, rows at different
    places, must equal the default model run on a 4x4 canvas holding exactly the windows' cells (same weights)."""
    kw = dict(pos_encodings="none", arch=arch, bootstrap_q=True)
    shapes, offsets = [(2, 3), (3, 2), (3, 3)], [(0, 0), (4, 3), (2, 4)]  # windows at the boxes, none moved
    big_data, small_data = grid_batch(shapes, offsets=offsets), grid_batch(shapes, canvas=4)
    aware = make(pad_aware=True, **kw).train()
    small = make(seq_len=16, **kw).train()
    small.load_state_dict(aware.state_dict())
    got, want = segments(aware, big_data, 3), segments(small, small_data, 3)
    cells = window_positions(4, CANVAS, 0, torch.tensor(offsets))[..., None].expand(-1, -1, VOCAB)
    for (out, _, _), (small_out, _, _) in zip(got, want, strict=True):
        out["logits"] = out["logits"].gather(1, cells)
        assert torch.equal(out["logits"], small_out["logits"])
    assert_same(got, want, exact=False)  # the loss sums over 64 vs 16 positions (more zeros): not always bit-exact


# --------------------------------------------------------------------------- size-bucketed batches
def test_bucketed_sampler_sorts_each_pool_by_box_side(tiny_data):  # noqa: F811
    ds = PuzzleDataset(tiny_data, "train")
    plain, bucketed = (TrainSampler(ds, 4, seed=0, bucket_batches=n).plan(0) for n in (0, 8))
    assert bucketed.shape == plain.shape and len(plain) > 16
    sides = []
    for pool, lo in enumerate(range(0, len(plain), 8)):
        rows = bucketed[lo : lo + 8].reshape(-1)
        assert np.array_equal(np.sort(rows), np.sort(plain[lo : lo + 8].reshape(-1)))  # the same examples
        batch = ds.batch(rows)
        side = box_sides(batch["inputs"], batch["labels"], ds.canvas).numpy()
        assert (np.diff(side) >= 0).all() if pool % 2 == 0 else (np.diff(side) <= 0).all()
        sides.append(side)
    assert len(set(np.concatenate(sides).tolist())) > 2  # the data has grids of several sizes

    def mean_window(plan: np.ndarray) -> float:
        return float(np.mean([row_windows(**{k: v for k, v in ds.batch(rows).items() if k != "puzzle_identifiers"},
                                          canvas=ds.canvas, step=1)[0] for rows in plan]))

    assert mean_window(bucketed) < mean_window(plain)
    batches = iter(TrainSampler(ds, 4, seed=0, bucket_batches=8))
    for rows in bucketed[:3]:  # iteration yields the bucketed plan
        assert torch.equal(next(batches)["inputs"], ds.batch(rows)["inputs"])
    state = TrainSampler(ds, 4, seed=0, bucket_batches=8).state_dict()
    assert state["bucket_batches"] == 8
    with pytest.raises(ValueError, match="bucket_batches"):
        TrainSampler(ds, 4, seed=0).load_state_dict(state)
    del state["bucket_batches"]  # a checkpoint from before the key resumes HRM's order
    TrainSampler(ds, 4, seed=0).load_state_dict(state)


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
    res = _run(TINY_RUN + [f"data.path={tiny_data}", "model.pad_aware=true", "data.bucket_batches=4",
                           "train.max_steps=6", "checkpoint.every=3", f"run.dir={run}"])
    assert res.returncode == 0, res.stderr[-3000:]
    assert torch.load(run / "last" / "state.pt", weights_only=False)["sampler"]["bucket_batches"] == 4
    assert "compile=False" in res.stdout
    losses = _losses(run)
    assert sorted(losses) == list(range(1, 7)) and all(np.isfinite(list(losses.values())))
    out = tmp_path / "eval"
    assert main([f"checkpoint={run / 'last'}", f"out={out}", "eval.views=2", "progress=false"]) == 0
    assert "kaggle" in capsys.readouterr().out and (out / "submission.json").exists()
