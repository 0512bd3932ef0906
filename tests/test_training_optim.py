"""Optimizers and the LR schedule against hand-computed updates."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hrm_fast.config import ModelConfig, TrainConfig
from hrm_fast.model.hrm import HRM, PuzzleEmbedding
from hrm_fast.training.optim import (
    AdamATan2,
    AdamW,
    Muon,
    SparseSignSGD,
    build_optimizers,
    lr_at,
    matrix_parameters,
    orthogonalize,
    set_lr,
)


def test_adam_atan2_matches_hand_computation():
    p0 = np.array([0.5, -1.0, 2.0, 0.0])
    grads = [np.array([0.1, -0.2, 0.0, 3.0]), np.array([-0.3, 0.1, 0.5, 1.0]), np.array([0.2, 0.2, -0.1, -2.0])]
    lr, b1, b2, wd = 0.01, 0.9, 0.95, 0.1
    p = torch.tensor(p0, dtype=torch.float64, requires_grad=True)
    opt = AdamATan2([p], lr=lr, betas=(b1, b2), weight_decay=wd)
    want, m, v = p0.copy(), np.zeros(4), np.zeros(4)
    for t, g in enumerate(grads, start=1):
        p.grad = torch.tensor(g)
        opt.step()
        want = want * (1 - lr * wd)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        want = want - lr / (1 - b1**t) * np.arctan2(m, np.sqrt(v) / np.sqrt(1 - b2**t))
        np.testing.assert_allclose(p.detach().numpy(), want, rtol=1e-6, atol=1e-12)


def test_adam_atan2_accepts_tensor_lr_and_skips_params_without_grad():
    a, b = torch.ones(3, requires_grad=True), torch.ones(3, requires_grad=True)
    opt = AdamATan2([a, b], lr=torch.tensor(0.1))
    a.grad = torch.ones(3)
    opt.step()
    # t=1: m = 0.1 g, sqrt(v / (1 - b2)) = g -> step = lr / 0.1 * atan2(0.1, 1)
    assert torch.allclose(a.detach(), torch.full((3,), 1 - math.atan(0.1)))
    assert torch.equal(b.detach(), torch.ones(3)) and b not in opt.state


def test_adamw_update_follows_torch_adamw():
    """Our AdamW (one update function for step() and the compiled step) against torch.optim.AdamW, 5 fp32 steps
    (its step counters are fp32 tensors, so the bias corrections agree to fp32 precision)."""
    dtype = torch.float32
    torch.manual_seed(0)
    start = [torch.randn(4, 3, dtype=dtype), torch.randn(5, dtype=dtype)]
    ours = [t.clone().requires_grad_() for t in start]
    theirs = [t.clone().requires_grad_() for t in start]
    kw = dict(lr=0.01, betas=(0.9, 0.95), weight_decay=0.1, eps=1e-8)
    a, b = AdamW(ours, **kw), torch.optim.AdamW(theirs, **kw)
    for step in range(5):
        grads = [torch.randn_like(t) for t in start]
        for p, q, g in zip(ours, theirs, grads):
            p.grad, q.grad = g.clone(), g.clone()
        for group in (*a.param_groups, *b.param_groups):
            group["lr"] = 0.01 * (step + 1)
        a.step()
        b.step()
    for p, q, s in zip(ours, theirs, start):
        assert not torch.equal(p, s)
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="amsgrad"):
        AdamW([torch.zeros(1, requires_grad=True)], amsgrad=True)


def test_orthogonalize_flattens_the_spectrum_of_wide_and_tall_matrices():
    torch.manual_seed(0)
    for shape in [(8, 32), (32, 8)]:
        g = torch.randn(shape) * torch.logspace(-1, 0, shape[1])  # singular values spread over 10x and more
        s = torch.linalg.svdvals(orthogonalize(g).float())
        assert s.shape == (8,) and 0.5 < s.min() and s.max() < 1.5, s
        u, _, vh = torch.linalg.svd(g, full_matrices=False)
        assert torch.nn.functional.cosine_similarity(orthogonalize(g).float().flatten(), (u @ vh).flatten(),
                                                     dim=0) > 0.9  # near the orthogonal factor U V^T


def test_muon_update_follows_torch_muon():
    """Our Muon (one update function for step() and the compiled step) against torch.optim.Muon with the
    AdamW-matched lr scale, 5 steps of a wide and a tall matrix with a changing lr; also a 0-d tensor lr."""
    torch.manual_seed(0)
    start = [torch.randn(6, 16), torch.randn(24, 6)]
    ours = [t.clone().requires_grad_() for t in start]
    theirs = [t.clone().requires_grad_() for t in start]
    tensor_lr = [t.clone().requires_grad_() for t in start]
    a = Muon(ours, lr=0.01, weight_decay=0.1)
    b = torch.optim.Muon(theirs, lr=0.01, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    lr_buffer = torch.zeros(())
    c = Muon(tensor_lr, lr=lr_buffer, weight_decay=0.1)
    for step in range(5):
        grads = [torch.randn_like(t) for t in start]
        for p, q, r, g in zip(ours, theirs, tensor_lr, grads):
            p.grad, q.grad, r.grad = g.clone(), g.clone(), g.clone()
        for group in (*a.param_groups, *b.param_groups):
            group["lr"] = 0.01 * (step + 1)
        lr_buffer.fill_(0.01 * (step + 1))
        a.step()
        b.step()
        c.step()
    for p, q, r, s in zip(ours, theirs, tensor_lr, start):
        assert not torch.equal(p, s)
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(r, q, rtol=1e-5, atol=1e-6)
        assert set(a.state[p]) == set(b.state[q]) == {"momentum_buffer"}


def test_sparse_signsgd_updates_only_batch_rows_with_summed_sign():
    emb = PuzzleEmbedding(6, 3, torch.float32).train()
    with torch.no_grad():
        emb.weights.copy_(torch.arange(18, dtype=torch.float32).view(6, 3))
    before = emb.weights.clone()
    ids = torch.tensor([1, 4, 1], dtype=torch.int32)
    out = emb(ids)
    # row grads: id 1 gets [1, -2, 0] + [-3, 1, 0] = [-2, -1, 0]; id 4 gets [0.5, 0.5, -0.5]
    out.backward(torch.tensor([[1.0, -2.0, 0.0], [0.5, 0.5, -0.5], [-3.0, 1.0, 0.0]]))
    opt = SparseSignSGD(emb, lr=0.1, weight_decay=0.5)
    opt.step()
    want = before.clone()
    want[1] = before[1] * (1 - 0.05) - 0.1 * torch.tensor([-1.0, -1.0, 0.0])
    want[4] = before[4] * (1 - 0.05) - 0.1 * torch.tensor([1.0, 1.0, -1.0])
    torch.testing.assert_close(emb.weights, want)
    opt.zero_grad()
    assert emb.local_weights.grad is None and not emb.pending


def test_sparse_signsgd_with_accumulated_micro_batches():
    emb = PuzzleEmbedding(4, 2, torch.float32).train()
    emb(torch.tensor([1, 2], dtype=torch.int32)).backward(torch.tensor([[1.0, 1.0], [1.0, -1.0]]))
    emb(torch.tensor([2, 3], dtype=torch.int32)).backward(torch.tensor([[-3.0, 0.0], [2.0, 2.0]]))
    SparseSignSGD(emb, lr=1.0, weight_decay=0.0).step()
    want = torch.tensor([[0.0, 0.0], [-1.0, -1.0], [1.0, 1.0], [-1.0, -1.0]])  # id 2: sign([-2, -1])
    torch.testing.assert_close(emb.weights, want)


def _dist_worker(rank: int, world: int, store: str, queue) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        emb = PuzzleEmbedding(5, 2, torch.float32).train()
        ids = torch.tensor([[1, 2], [2, 3]][rank], dtype=torch.int32)
        grad = torch.tensor([[[1.0, 1.0], [1.0, -1.0]], [[-3.0, 0.0], [2.0, 2.0]]][rank])
        emb(ids).backward(grad)
        SparseSignSGD(emb, lr=1.0, weight_decay=0.0).step()
        queue.put((rank, emb.weights.tolist()))
    finally:
        dist.destroy_process_group()


def test_sparse_signsgd_gathers_across_ranks(tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    store = tmp_path / "store"  # a file store: no TCP port to collide with other jobs
    procs = [ctx.Process(target=_dist_worker, args=(r, 2, str(store), queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    want = [[0.0, 0.0], [-1.0, -1.0], [1.0, 1.0], [-1.0, -1.0], [0.0, 0.0]]
    assert results[0] == want and results[1] == want


def test_lr_schedule_values():
    base, warm, total = 1e-3, 100, 1100
    assert lr_at(0, total, base, warm, 0.1) == 0.0
    assert lr_at(50, total, base, warm, 0.1) == pytest.approx(0.5e-3)
    assert lr_at(100, total, base, warm, 0.1) == pytest.approx(1e-3)
    assert lr_at(600, total, base, warm, 0.1) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))  # cos(pi/2) = 0
    assert lr_at(1100, total, base, warm, 0.1) == pytest.approx(1e-4)
    assert lr_at(5000, total, base, warm, 0.1) == pytest.approx(1e-4)
    assert lr_at(600, total, base, warm, 1.0) == pytest.approx(1e-3)  # HRM's constant schedule


def test_build_optimizers_order_groups_and_set_lr():
    model = HRM(ModelConfig(hidden_size=32, num_heads=2, H_layers=1, L_layers=1, puzzle_emb_ndim=16,
                            forward_dtype="float32"), 12, 4, 3)  # fmt: skip
    cfg = TrainConfig(lr=1e-3, puzzle_emb_lr=1e-2, lr_warmup_steps=10, max_steps=100)
    sign, main = build_optimizers(model, cfg)
    assert isinstance(sign, SparseSignSGD) and isinstance(main, AdamATan2)
    assert sum(p.numel() for g in main.param_groups for p in g["params"]) == sum(p.numel() for p in model.parameters())
    set_lr([sign, main], 5, 100, cfg)
    assert main.param_groups[0]["lr"] == pytest.approx(5e-4) and sign.param_groups[0]["lr"] == pytest.approx(5e-3)
    _, adamw = build_optimizers(model, cfg.model_copy(update={"optimizer": "adamw"}))
    assert isinstance(adamw, torch.optim.AdamW)
    sign, main, muon = build_optimizers(model, cfg.model_copy(update={"matrix_optimizer": "muon"}))
    names = {id(p): n for n, p in model.named_parameters()}
    in_muon = [names[id(p)] for g in muon.param_groups for p in g["params"]]
    in_adam = [names[id(p)] for g in main.param_groups for p in g["params"]]
    assert isinstance(muon, Muon) and len(in_muon) == len(matrix_parameters(model)) == 8  # 2 blocks x 4 projections
    assert all(".layers." in n for n in in_muon) and not any(".layers." in n for n in in_adam)
    assert sorted(in_muon + in_adam) == sorted(names.values())
    set_lr([sign, main, muon], 5, 100, cfg)
    assert muon.param_groups[0]["lr"] == main.param_groups[0]["lr"] == pytest.approx(5e-4)
