"""TRM (``model.arch=trm``): structure, the full-last-cycle gradient, halting without Q-continue, mlp_t, FLOPs,
EMA (update, compiled step, checkpoints, exact resume, evaluation), import of TRM checkpoints."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_train_run import TINY_RUN, _env, _losses, _run, _train_cmd, _weights, tiny_data  # noqa: F401

from hrm_fast import checkpoint as ck
from hrm_fast.config import ConfigError, ModelConfig, TrainConfig, load_config
from hrm_fast.eval.runner import EvalStep
from hrm_fast.flops import block_params, config_flops
from hrm_fast.model.hrm import HRM
from hrm_fast.model.losses import act_loss
from hrm_fast.training.ema import EMA
from hrm_fast.training.optim import build_optimizers, set_lr
from hrm_fast.training.step import TrainStep

VOCAB, SEQ, IDS, PREFIX = 12, 9, 20, 3
ROOT = Path(__file__).resolve().parents[1]


def tiny(**kw) -> ModelConfig:
    base = dict(arch="trm", hidden_size=32, num_heads=2, L_layers=2, H_cycles=3, L_cycles=2, halt_max_steps=4,
                puzzle_emb_ndim=32, puzzle_emb_tokens=PREFIX, forward_dtype="float32", bootstrap_q=False)
    base.update(kw)
    return ModelConfig(**base)


def make(seed: int = 0, **kw) -> HRM:
    torch.manual_seed(seed)
    model = HRM(tiny(**kw), VOCAB, SEQ, IDS)
    with torch.no_grad():  # non-trivial puzzle vectors and Q head so every path matters
        model.puzzle_emb.weights.normal_(0, 0.5)
        model.inner.q_head.weight.normal_(0, 0.1)
    return model


def batch(b: int = 4, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {"inputs": torch.randint(0, VOCAB, (b, SEQ), generator=g, dtype=torch.int32),
           "labels": torch.randint(0, VOCAB, (b, SEQ), generator=g, dtype=torch.int32),
           "puzzle_identifiers": torch.randint(1, 6, (b,), generator=g, dtype=torch.int32)}
    out["labels"][:, -2:] = -100
    return out


def draws(b: int, seed: int, max_steps: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + seed)
    return torch.rand(b, generator=g), torch.randint(2, max_steps + 1, (b,), generator=g, dtype=torch.int32)


# --------------------------------------------------------------------------- structure
def test_trm_paper_has_about_7m_parameters_and_its_flops():
    cfg = load_config("trm-paper")
    with torch.device("meta"):
        model = HRM(cfg.model, VOCAB, cfg.data.seq_len, 1)
    block = 512 * 1536 + 512 * 512 + 512 * 3072 + 1536 * 512  # one post-norm block, as HRM's
    heads = 12 * 512 + 512 * 12 + 512 * 2 + 2
    assert sum(p.numel() for p in model.parameters()) == 2 * block + heads == 6_829_058
    assert not any(n.startswith("inner.H_level") for n, _ in model.named_parameters())
    f = config_flops(cfg)
    # docs/hrm.md §7: TRM ARC (2 blocks, T=3, n=4, S=916, no bootstrap): 30 passes, 10 with grad, 50 -> 0.40 TFLOP
    assert (f.seq_len, f.forward_passes, f.grad_passes, f.bootstrap_passes, f.train_equivalents) == (916, 30, 10, 0, 50)
    assert round(f.block_pass / 1e9, 2) == 7.96 and round(f.train_segment / 1e12, 2) == 0.40


def test_info_prints_trm_parameters_and_flops(capsys):
    from hrm_fast.info import main

    assert main(["preset=trm-paper"]) == 0
    out = capsys.readouterr().out
    assert "trainable parameters: 6,829,058" in out and "architecture: TRM" in out
    assert "train segment: 398 GFLOP" in out and "eval segment: 239 GFLOP" in out
    assert main(["preset=trm-4090"]) == 0
    hours = float(capsys.readouterr().out.split("~")[-1].split(" h on one RTX 4090")[0])
    assert 4 <= hours <= 8  # the single-4090 preset is sized for 4-8 h at 50% MFU


def test_forward_shapes_and_prefix():
    model = make().train()
    carry, out = model(model.initial_carry(4), batch(4), *draws(4, 0))
    assert out["logits"].shape == (4, SEQ, VOCAB)
    assert out["q_halt_logits"].shape == out["q_continue_logits"].shape == (4,)
    assert "target_q_continue" not in out
    assert carry.z_H.shape == carry.z_L.shape == (4, SEQ + PREFIX, 32)
    x = model.embed(batch(4))
    assert torch.equal(x[:, 1:PREFIX], torch.zeros(4, PREFIX - 1, 32))  # the vector fills token 0, the rest is padding


def test_config_rules_name_their_keys():
    with pytest.raises(ValueError, match="model.mlp_t=true needs model.arch=trm"):
        ModelConfig(mlp_t=True)
    with pytest.raises(ValueError, match="model.puzzle_emb_tokens=1 tokens cannot hold model.puzzle_emb_ndim=64"):
        ModelConfig(hidden_size=32, num_heads=2, puzzle_emb_ndim=64, puzzle_emb_tokens=1)
    with pytest.raises(ConfigError, match="model.arch"):
        load_config("cpu-tiny", ["model.arch=xyz"])
    assert load_config("cpu-tiny").model.arch == "hrm"


# --------------------------------------------------------------------------- the full-last-cycle gradient
def hand_unrolled_grads(model: HRM, data: dict[str, torch.Tensor], cut: str) -> dict[str, torch.Tensor]:
    """The TRM recurrence with autograd on everywhere and z detached by hand: ``cut`` = "cycle" (before the last
    cycle: TRM), "update" (before the last L and y update: HRM's 1-step gradient) or "none" (full BPTT)."""
    inner, cfg = model.inner, model.config
    net, cos, sin = inner.L_level, inner.cos, inner.sin
    model.zero_grad()
    x = model.embed(data)
    y = inner.H_init.expand(x.shape).clone()
    z = inner.L_init.expand(x.shape).clone()
    for cycle in range(cfg.H_cycles):
        last = cycle == cfg.H_cycles - 1
        if last and cut == "cycle":
            y, z = y.detach(), z.detach()
        for n in range(cfg.L_cycles):
            if last and n == cfg.L_cycles - 1 and cut == "update":
                y, z = y.detach(), z.detach()
            z = net(z, y + x, cos, sin)
        y = net(y, z, cos, sin)
    loss = inner.lm_head(y[:, PREFIX:]).square().mean() + inner.q_head(y[:, 0])[:, 0].sum()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    grads["puzzle"] = model.puzzle_emb.local_weights.grad.clone()
    return grads


@pytest.mark.parametrize("fast", [False, True])
def test_full_last_cycle_gradient_equals_hand_unrolled_run(fast):
    model = make().train()
    model.fast_paths = fast
    data = batch(3)
    want = hand_unrolled_grads(model, data, cut="cycle")
    model.zero_grad()
    carry = model.initial_carry(3)
    carry, out = model(carry, data, *draws(3, 0))
    (out["logits"].square().mean() + out["q_halt_logits"].sum()).backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    got["puzzle"] = model.puzzle_emb.local_weights.grad.clone()
    for name, g in want.items():
        torch.testing.assert_close(got[name], g, rtol=1e-5, atol=1e-6, msg=name)
    # and it is neither HRM's 1-step gradient nor full back-propagation through time
    for other in ("update", "none"):
        alt = hand_unrolled_grads(model, data, cut=other)
        assert not torch.allclose(alt["inner.L_level.layers.0.mlp.down_proj.weight"],
                                  want["inner.L_level.layers.0.mlp.down_proj.weight"], rtol=1e-3, atol=1e-6), other
        assert not torch.allclose(alt["puzzle"], want["puzzle"], rtol=1e-3, atol=1e-6), other


# --------------------------------------------------------------------------- halting without Q-continue
def _with_q(model: HRM, q_halt: float, q_cont: float) -> None:
    """Every row's (q_halt, q_continue) logits := the given values (zero Q weights, the values as bias)."""
    with torch.no_grad():
        model.inner.q_head.weight.zero_()
        model.inner.q_head.bias.copy_(torch.tensor([q_halt, q_cont]))


@pytest.mark.parametrize(("q_halt", "q_cont", "halts"), [(0.5, 2.0, True), (-0.5, -2.0, False)])
def test_trm_halts_when_q_halt_is_positive_not_when_it_beats_q_continue(q_halt, q_cont, halts):
    model = make(halt_exploration_prob=0.0).train()
    _with_q(model, q_halt, q_cont)
    carry = model.initial_carry(3)
    carry, out = model(carry, batch(3), *draws(3, 0))  # first segment: steps 1 < halt_max_steps
    assert carry.halted.tolist() == [halts] * 3
    assert "target_q_continue" not in out
    loss, metrics = act_loss(carry, out)
    assert float(metrics["q_continue_loss"]) == 0.0
    # HRM's rule on the same logits decides the opposite
    hrm = HRM(ModelConfig(hidden_size=32, num_heads=2, H_layers=1, L_layers=1, H_cycles=1, L_cycles=1,
                          halt_max_steps=4, puzzle_emb_ndim=32, forward_dtype="float32", halt_exploration_prob=0.0),
              VOCAB, SEQ, IDS).train()
    _with_q(hrm, q_halt, q_cont)
    c2 = hrm.initial_carry(3)
    hrm(c2, batch(3), *draws(3, 0))
    assert c2.halted.tolist() == [not halts] * 3


def test_trm_exploration_eval_and_bootstrap_variant():
    model = make(halt_exploration_prob=1.0).train()
    _with_q(model, 3.0, 0.0)
    carry = model.initial_carry(2)
    min_steps = torch.tensor([2, 3], dtype=torch.int32)
    halted = []
    for _ in range(3):
        carry, _ = model(carry, batch(2), torch.zeros(2), min_steps)
        halted.append(carry.halted.tolist())
    assert halted == [[False, False], [True, False], [False, True]]  # no halting before the drawn minimum
    model.eval()
    carry = model.initial_carry(2)
    for step in range(4):  # eval halts only at halt_max_steps, whatever q says
        carry, _ = model(carry, batch(2))
        assert carry.halted.tolist() == [step == 3] * 2
    # bootstrap_q=true is TRM's no_ACT_continue=False: HRM's rule and a Q-continue target from a TRM pass
    boot = make(bootstrap_q=True, halt_exploration_prob=0.0).train()
    _with_q(boot, 0.5, 2.0)
    carry = boot.initial_carry(2)
    carry, out = boot(carry, batch(2), *draws(2, 0))
    assert carry.halted.tolist() == [False, False] and out["target_q_continue"].shape == (2,)


# --------------------------------------------------------------------------- mlp_t and pos_encodings none
def test_mlp_t_block_normalises_over_the_sequence_axis():
    model = make(mlp_t=True, pos_encodings="none", L_layers=1)
    block = model.inner.L_level.layers[0]
    s = SEQ + PREFIX
    assert block.mlp_t.gate_up_proj.weight.shape == (2 * 256, s)  # SwiGLU over S=12 positions: inner 256
    h = torch.randn(2, s, 32)

    def swiglu(mlp, t):
        gate, up = (t @ mlp.gate_up_proj.weight.T).chunk(2, -1)
        return (torch.nn.functional.silu(gate) * up) @ mlp.down_proj.weight.T

    def rms(t):
        return t * torch.rsqrt(t.square().mean(-1, keepdim=True) + 1e-5)

    t = h.transpose(1, 2)
    mid = rms(t + swiglu(block.mlp_t, t)).transpose(1, 2)
    want = rms(mid + swiglu(block.mlp, mid))
    torch.testing.assert_close(block(h, model.inner.cos, model.inner.sin), want, rtol=1e-5, atol=1e-5)
    assert block_params(model.config, s) == 3 * s * 256 + 3 * 32 * model.config.intermediate_size
    with torch.device("meta"):
        n = sum(p.numel() for p in HRM(model.config, VOCAB, SEQ, IDS).parameters())
    assert n == block_params(model.config, s) + VOCAB * 32 * 2 + 32 * 2 + 2


def test_no_positions_make_attention_permutation_equivariant():
    data = batch(2)
    perm = torch.randperm(SEQ, generator=torch.Generator().manual_seed(0))
    permuted = {**data, "inputs": data["inputs"][:, perm], "labels": data["labels"][:, perm]}
    for pos, equivariant in (("none", True), ("rope", False)):
        model = make(pos_encodings=pos).eval()
        a = model(model.initial_carry(2), data)[1]["logits"]
        b = model(model.initial_carry(2), permuted)[1]["logits"]
        assert torch.allclose(a[:, perm], b, atol=1e-5) == equivariant, pos


# --------------------------------------------------------------------------- EMA and the compiled step
def test_ema_update_and_applied():
    model = make()
    ema = EMA(model, 0.9)
    assert "puzzle_emb.weights" not in ema.names and "inner.embed_tokens.weight" in ema.names
    before = [s.clone() for s in ema.shadow]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update()
    for b, s, p in zip(before, ema.shadow, ema.params):
        torch.testing.assert_close(s, 0.9 * b + 0.1 * p.detach())
    online = {n: p.detach().clone() for n, p in model.named_parameters()}
    with ema.applied():
        assert all(torch.equal(p, s) for p, s in zip(ema.params, ema.shadow))
    assert all(torch.equal(p, online[n]) for n, p in model.named_parameters())


def small(**kw) -> HRM:  # few unrolled blocks: keeps the CPU compile short
    return make(L_layers=1, H_cycles=2, L_cycles=1, halt_max_steps=3, halt_exploration_prob=0.5, **kw)


def _steps(model: HRM, compile: bool, steps: int = 5, device: str = "cpu", cuda_graph: bool = False
           ) -> tuple[list[float], EMA]:
    tc = TrainConfig(global_batch_size=4, lr=1e-3, lr_warmup_steps=3, max_steps=10, grad_clip=1.0)
    opts = build_optimizers(model, tc)
    ema = EMA(model, 0.8)
    step = TrainStep(model, opts, [model.initial_carry(4, device)], loss_type="stablemax", global_batch_size=4,
                     grad_clip=1.0, compile=compile, cuda_graph=cuda_graph, ema=ema)
    losses = []
    for s in range(steps):
        set_lr(opts, s + 1, 10, tc)
        explore, min_steps = draws(4, s, 3)
        out = step({k: v.to(device) for k, v in batch(4, s).items()}, explore.to(device), min_steps.to(device))
        losses.append(float(out.loss_sum))
    return losses, ema


def test_compiled_trm_step_with_ema_has_no_graph_breaks_and_matches_eager_for_5_steps():
    model = small().train()
    tc = TrainConfig(global_batch_size=4, max_steps=10, grad_clip=1.0)
    step = TrainStep(model, build_optimizers(model, tc), [model.initial_carry(4)], loss_type="stablemax",
                     global_batch_size=4, grad_clip=1.0, compile=False, ema=EMA(model, 0.8))
    step._load_inputs(batch(4, 0), *draws(4, 0, 3), 1.0)
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        report = torch._dynamo.explain(step._body)()
    assert report.graph_break_count == 0, report.break_reasons
    assert report.graph_count == 1
    evaluator = EvalStep(model.eval(), 4, "cpu", compile=False)
    evaluator.start(batch(4, 0))
    report = torch._dynamo.explain(evaluator._body)()
    assert report.graph_break_count == 0, report.break_reasons

    a, b = small().train(), small().train()
    want, ema_a = _steps(a, compile=False)
    torch._dynamo.utils.counters.clear()
    got, ema_b = _steps(b, compile=True)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    assert len(set(want)) == 5
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want), rtol=1e-5, atol=1e-5)
    for n, x, y in zip(ema_a.names, ema_a.shadow, ema_b.shadow):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5, msg=n)
    moved = [not torch.equal(s, p) for s, p in zip(ema_a.shadow, ema_a.params)]
    assert any(moved)  # the average lags the weights


@pytest.mark.gpu
@pytest.mark.parametrize("compile", [False, True])
def test_cuda_graph_trm_step_with_ema_replays_like_eager(compile):
    a, b = small().cuda().train(), small().cuda().train()
    want, ema_a = _steps(a, compile=False, device="cuda", cuda_graph=False)
    got, ema_b = _steps(b, compile=compile, device="cuda", cuda_graph=True)
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want), rtol=1e-4, atol=1e-4)
    for n, x, y in zip(ema_a.names, ema_a.shadow, ema_b.shadow):
        torch.testing.assert_close(x, y, rtol=1e-3, atol=1e-4, msg=n)


# --------------------------------------------------------------------------- checkpoints: EMA, import-trm
def _outputs(model: HRM) -> dict[str, torch.Tensor]:
    carry = model.initial_carry(3)
    data = batch(3)
    model(carry, data)
    return model(carry, data)[1]


def test_checkpoint_keeps_ema_and_evaluation_loads_it(tmp_path):
    cfg = load_config("trm-paper", ["model.hidden_size=32", "model.num_heads=2", "model.puzzle_emb_ndim=32",
                                    "data.max_grid_size=3"])
    model = HRM(cfg.model, VOCAB, SEQ, IDS).eval()
    ema = EMA(model, 0.5)
    with torch.no_grad():
        for s in ema.shadow:
            s.add_(0.01)
    ck.save_checkpoint(tmp_path / "c", model, cfg, ema=ema.state_dict())
    online, _ = ck.load_checkpoint(tmp_path / "c", ema=False)
    averaged, _ = ck.load_checkpoint(tmp_path / "c")
    for n, p in averaged.named_parameters():
        assert torch.equal(p, ema.shadow[ema.names.index(n)]), n
        assert torch.equal(dict(online.named_parameters())[n], dict(model.named_parameters())[n]), n
    assert torch.equal(averaged.puzzle_emb.weights, model.puzzle_emb.weights)
    from hrm_fast.eval.pipeline import load_for_eval  # train.evaluate's loader: the EMA weights too

    evaluated, _, _ = load_for_eval(tmp_path / "c", torch.device("cpu"))
    assert all(torch.equal(p, ema.shadow[ema.names.index(n)]) for n, p in evaluated.named_parameters())
    fresh = EMA(model, 0.5)
    assert ck.load_ema_state(fresh, tmp_path / "c")
    assert all(torch.equal(x, y) for x, y in zip(fresh.shadow, ema.shadow))


@pytest.mark.parametrize("variant", [[], ["model.mlp_t=true", "model.pos_encodings=none"]], ids=["att", "mlp_t"])
def test_trm_layout_export_reimports_to_identical_outputs(tmp_path, variant):
    from hrm_fast.checkpoint import main

    cfg = load_config("trm-paper", ["model.hidden_size=32", "model.num_heads=2", "model.puzzle_emb_ndim=32",
                                    "model.puzzle_emb_tokens=3", "model.forward_dtype=float32",
                                    "data.max_grid_size=3", *variant])
    torch.manual_seed(3)
    model = HRM(cfg.model, VOCAB, SEQ, 7).eval()
    with torch.no_grad():
        model.puzzle_emb.weights.normal_()
        model.inner.q_head.weight.normal_(0, 0.1)
    sd = ck.export_hrm_state_dict(model)
    layer = "mlp_t.gate_up_proj.weight" if variant else "self_attn.qkv_proj.weight"
    for key in ("embed_tokens.embedding_weight", "puzzle_emb.weights", "H_init", "L_init", "q_head.bias",
                f"L_level.layers.1.{layer}", "L_level.layers.0.mlp.down_proj.weight"):  # TRM's key names
        assert "_orig_mod.model.inner." + key in sd, key
    torch.save(sd, tmp_path / "step_7")
    trm_yaml = ck.to_trm_config(cfg)
    assert trm_yaml["arch"]["puzzle_emb_len"] == 3 and trm_yaml["arch"]["no_ACT_continue"] is True
    (tmp_path / "all_config.yaml").write_text(yaml.safe_dump(trm_yaml))
    assert main(["import-trm", str(tmp_path / "step_7"), "--trm-config", str(tmp_path / "all_config.yaml"),
                 "--out", str(tmp_path / "imported"), "--seq-len", "9"]) == 0
    loaded, cfg2 = ck.load_checkpoint(tmp_path / "imported")
    assert cfg2.model.model_dump(exclude={"ops", "dropout", "H_layers"}) == \
        cfg.model.model_dump(exclude={"ops", "dropout", "H_layers"})
    assert cfg2.train.ema and cfg2.train.ema_decay == 0.999
    a, b = _outputs(model), _outputs(loaded.eval())
    for k in ("logits", "q_halt_logits", "q_continue_logits"):
        assert torch.equal(a[k], b[k]), k


def test_import_trm_refuses_mismatches_naming_keys(tmp_path):
    cfg = load_config("trm-paper", ["model.hidden_size=32", "model.num_heads=2", "model.puzzle_emb_ndim=32",
                                    "data.max_grid_size=3"])
    model = HRM(cfg.model, VOCAB, SEQ, 7)
    torch.save({"model": ck.export_hrm_state_dict(model), "step": 5}, tmp_path / "step_5")  # forks' dict format
    wrong = ck.to_trm_config(cfg)
    wrong["arch"]["L_layers"] = 3
    (tmp_path / "all_config.yaml").write_text(yaml.safe_dump(wrong))
    with pytest.raises(ck.CheckpointError, match=r"missing keys: inner\.L_level\.layers\.2\."):
        ck.import_trm(tmp_path / "step_5", tmp_path / "all_config.yaml", tmp_path / "out", seq_len=9)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ck.CheckpointError, match="is a TRM model: use import-trm"):
        ck.import_hrm(tmp_path / "step_5", tmp_path / "all_config.yaml", tmp_path / "out", seq_len=9)
    (tmp_path / "hrm.yaml").write_text(yaml.safe_dump(ck.to_hrm_config(load_config("cpu-tiny"))))
    with pytest.raises(ck.CheckpointError, match="arch.name .* is not TRM's"):
        ck.import_trm(tmp_path / "step_5", tmp_path / "hrm.yaml", tmp_path / "out", seq_len=9)


def test_trm_on_triton_ops_matches_reference_ops():
    import os

    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("Triton needs a GPU or TRITON_INTERPRET=1 (set by tests/conftest.py)")
    from hrm_fast import ops

    model = make(seed=3, L_layers=1, H_cycles=2, L_cycles=1)
    results = []
    for backend in ("reference", "triton"):
        model.zero_grad(set_to_none=True)
        with ops.backend(backend):
            carry = model.initial_carry(3)
            carry, out = model(carry, batch(3), *draws(3, 0))
            (out["logits"].square().mean() + out["q_halt_logits"].sum()).backward()
        results.append((out, {n: p.grad.clone() for n, p in model.named_parameters()}))
    (ref, ref_g), (tri, tri_g) = results
    for key in ("logits", "q_halt_logits"):
        torch.testing.assert_close(tri[key], ref[key], rtol=1e-4, atol=1e-4, msg=key)
    for name, g in ref_g.items():
        torch.testing.assert_close(tri_g[name], g, rtol=1e-3, atol=1e-5, msg=name)



# --------------------------------------------------------------------------- python -m train.run model.arch=trm
# The tiny 6x6 dataset (fixture ``tiny_data``) and the subprocess helpers are the HRM end-to-end tests' own.
TRM_RUN = TINY_RUN + ["model.arch=trm", "model.bootstrap_q=false", "model.puzzle_emb_tokens=2", "model.H_cycles=2",
                      "model.L_cycles=2", "train.ema=true", "train.ema_decay=0.9", "train.lr=3e-3"]
TRM_STEPS = 24


def _ema(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "last" / "ema.safetensors"))


@pytest.fixture(scope="module")
def trm_reference_run(tiny_data, tmp_path_factory) -> tuple[Path, Path]:  # noqa: F811
    """An uninterrupted TRM run with EMA (checkpoint every 3 steps): (run folder, folder of its final weights)."""
    base = tmp_path_factory.mktemp("trm_reference")
    run, weights = base / "run", base / "weights"
    res = _run(TRM_RUN + [f"data.path={tiny_data}", f"train.max_steps={TRM_STEPS}", "checkpoint.every=3",
                          f"run.dir={run}"], HRM_FAST_TEST_DUMP_WEIGHTS=str(weights))
    assert res.returncode == 0, res.stderr[-3000:]
    return run, weights


def test_trm_training_run_learns_and_keeps_ema(trm_reference_run):
    from hrm_fast.distributed import DistInfo
    from hrm_fast.eval.validate import evaluate_split

    run, weights = trm_reference_run
    losses = _losses(run)
    assert sorted(losses) == list(range(1, TRM_STEPS + 1))
    first, last = np.mean([losses[s] for s in range(1, 5)]), np.mean([losses[s] for s in range(TRM_STEPS - 3,
                                                                                               TRM_STEPS + 1)])
    assert last < 0.9 * first, (first, last)
    online, ema = _weights(weights), _ema(run)
    assert set(ema) == {k for k in online if k != "puzzle_emb.weights" and not k.endswith("_init")}
    assert all(not torch.equal(ema[k], online[k]) for k in ema)  # the average lags the weights
    # the end-of-run validation used the EMA weights: the checkpoint's EMA model reproduces the logged metrics
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = next(r for r in logged if "val/accuracy" in r and r["step"] == TRM_STEPS)
    model, cfg = ck.load_checkpoint(run / "last")
    got = evaluate_split(model, cfg, DistInfo(0, 1, 0, torch.device("cpu")), "val", show_progress=False)
    for k, v in got.items():
        assert logged[k] == pytest.approx(v, rel=1e-6, abs=1e-9), k
    plain, _ = ck.load_checkpoint(run / "last", ema=False)
    other = evaluate_split(plain, cfg, DistInfo(0, 1, 0, torch.device("cpu")), "val", show_progress=False)
    assert other != got


def test_trm_sigterm_then_resume_is_bit_identical_with_ema(tiny_data, trm_reference_run, tmp_path):  # noqa: F811
    run, weights = tmp_path / "run", tmp_path / "weights"
    args = TRM_RUN + [f"data.path={tiny_data}", f"train.max_steps={TRM_STEPS}", "checkpoint.every=3",
                      f"run.dir={run}"]
    proc = subprocess.Popen(_train_cmd(args), cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 5:
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.01)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    stopped_at = int(out.split("stopped by SIGTERM at step ")[1].split(":")[0])
    assert 5 <= stopped_at < TRM_STEPS and (run / "last" / "ema.safetensors").exists()

    res = _run(args + ["run.resume=auto"], HRM_FAST_TEST_DUMP_WEIGHTS=str(weights))
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resumed from {run / 'last'} at step {stopped_at}" in res.stdout
    ref_run, ref_weights = trm_reference_run
    assert _losses(run) == _losses(ref_run)  # exact: same floats, step for step
    for got, want in ((_weights(weights), _weights(ref_weights)), (_ema(run), _ema(ref_run))):
        assert got.keys() == want.keys()
        for k in want:
            assert torch.equal(got[k], want[k]), k


def test_train_evaluate_scores_a_trm_checkpoint(trm_reference_run, tmp_path, capsys):
    from train.evaluate import main

    run, _ = trm_reference_run
    out = tmp_path / "eval"
    assert main([f"checkpoint={run}", f"out={out}", "eval.views=1", "progress=false"]) == 0
    scores = json.loads((out / "scores.json").read_text())
    assert scores["views"] > 0 and 0.0 <= scores["kaggle"]["pass@1"] <= 1.0
    assert "kaggle" in capsys.readouterr().out
