"""The speed layer: model fast paths keep the semantics; the one-program train/eval steps match the eager loop.

CPU: the compiled training step has zero graph breaks and gives the eager loop's losses for 5 steps.
CUDA (marked ``gpu``, skipped without a device): CUDA-graph replay equals the eager step.
"""

from __future__ import annotations

import pytest
import torch

from hrm_fast.config import ModelConfig, TrainConfig
from hrm_fast.eval.runner import EvalRunner, EvalStep
from hrm_fast.model.hrm import HRM
from hrm_fast.model.layers import CastedLinear, cast_weights_once
from hrm_fast.model.losses import act_loss
from hrm_fast.training.optim import build_optimizers, set_lr
from hrm_fast.training.step import TrainStep

VOCAB, SEQ, IDS = 12, 9, 20


def make(seed: int = 0, device: str = "cpu", **kw) -> HRM:
    base = dict(hidden_size=32, num_heads=2, H_layers=2, L_layers=2, H_cycles=2, L_cycles=2, halt_max_steps=3,
                puzzle_emb_ndim=32, forward_dtype="float32", halt_exploration_prob=0.5)
    base.update(kw)
    torch.manual_seed(seed)
    model = HRM(ModelConfig(**base), VOCAB, SEQ, IDS).to(device)
    with torch.no_grad():  # non-trivial Q head and puzzle vectors so halting and the puzzle path matter
        model.inner.q_head.weight.normal_(0, 0.1)
        model.puzzle_emb.weights.normal_(0, 0.5)
    return model


def batch(b: int, seed: int, device: str = "cpu") -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {"inputs": torch.randint(0, VOCAB, (b, SEQ), generator=g, dtype=torch.int32),
           "labels": torch.randint(0, VOCAB, (b, SEQ), generator=g, dtype=torch.int32),
           "puzzle_identifiers": torch.randint(1, 6, (b,), generator=g, dtype=torch.int32)}  # repeats: summed rows
    out["labels"][:, -2:] = -100
    return {k: v.to(device) for k, v in out.items()}


def draws(b: int, seed: int, max_steps: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + seed)
    return torch.rand(b, generator=g), torch.randint(2, max_steps + 1, (b,), generator=g, dtype=torch.int32)


def train_cfg(**kw) -> TrainConfig:
    base = dict(global_batch_size=4, lr=1e-3, lr_warmup_steps=3, max_steps=10, weight_decay=0.1, grad_clip=None)
    base.update(kw)
    return TrainConfig(**base)


def eager_loop(model: HRM, tc: TrainConfig, steps: int, accum: int = 1) -> list[float]:
    """The plain training loop (model, act_loss, backward, torch optimizers): the oracle for TrainStep."""
    opts = build_optimizers(model, tc)
    micro = tc.global_batch_size // accum
    carries = [model.initial_carry(micro) for _ in range(accum)]
    losses = []
    for s in range(steps):
        for o in opts:
            o.zero_grad(set_to_none=True)
        set_lr(opts, s + 1, 10, tc)  # warm-up: a new learning rate every step
        data, (explore, min_steps) = batch(tc.global_batch_size, s), draws(tc.global_batch_size, s)
        total = 0.0
        for i, carry in enumerate(carries):
            rows = slice(i * micro, (i + 1) * micro)
            _, out = model(carry, {k: v[rows] for k, v in data.items()}, explore[rows], min_steps[rows])
            loss, _ = act_loss(carry, out)
            (loss / tc.global_batch_size).backward()
            total += float(loss.detach())
        if tc.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], tc.grad_clip)
        for o in opts:
            o.step()
        losses.append(total)
    return losses


def step_loop(model: HRM, tc: TrainConfig, steps: int, accum: int = 1, device: str = "cpu", **kw) -> list[float]:
    opts = build_optimizers(model, tc)
    micro = tc.global_batch_size // accum
    step = TrainStep(model, opts, [model.initial_carry(micro, device) for _ in range(accum)],
                     loss_type="stablemax", global_batch_size=tc.global_batch_size, grad_clip=tc.grad_clip, **kw)
    losses = []
    for s in range(steps):
        set_lr(opts, s + 1, 10, tc)
        explore, min_steps = draws(tc.global_batch_size, s)
        out = step(batch(tc.global_batch_size, s, device), explore.to(device), min_steps.to(device))
        losses.append(float(out.loss_sum))
    return losses


def params_of(model: HRM) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def assert_same_state(a: HRM, b: HRM, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    pa, pb = params_of(a), params_of(b)
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], rtol=rtol, atol=atol, msg=k)


# --------------------------------------------------------------------------- model fast paths
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fast_paths_keep_outputs_and_gradients(dtype):
    results = []
    for fast in (True, False):
        model = make(forward_dtype=dtype).train()
        model.fast_paths = fast
        carry = model.initial_carry(4)
        outs = []
        for s in range(3):
            explore, min_steps = draws(4, s)
            _, out = model(carry, batch(4, s), explore, min_steps)
            loss, _ = act_loss(carry, out)
            loss.backward()
            outs.append((out["logits"].detach().float(), out["q_halt_logits"].detach(), out["target_q_continue"],
                         carry.z_H.float().clone(), carry.halted.clone()))  # fmt: skip
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        results.append((outs, grads))
    (fast_outs, fast_grads), (ref_outs, ref_grads) = results
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == "float32" else dict(rtol=2e-2, atol=2e-2)
    for a, b in zip(fast_outs, ref_outs):
        for x, y in zip(a[:-1], b[:-1]):
            torch.testing.assert_close(x, y, **tol)
        assert torch.equal(a[-1], b[-1])
    for name in ref_grads:
        torch.testing.assert_close(fast_grads[name], ref_grads[name], **tol, msg=name)


def test_bootstrap_q_only_pass_equals_the_full_pass():
    model = make().train()
    inner = model.inner
    z = torch.randn(3, SEQ + 1, 32)
    x = model.embed(batch(3, 0)).detach()
    with torch.no_grad():
        _, _, _, full = inner(z, z.clone(), x)
        z_h, _, logits, part = inner(z, z.clone(), x, q_only=True, fast=True)
    assert logits is None and z_h.shape == (3, 1, 32)
    torch.testing.assert_close(part, full, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(part[:, 0], part[:, 1])  # non-trivial q


def test_no_grad_cycles_run_in_inference_mode_only_on_the_fast_path():
    seen = []
    model = make(H_cycles=2, L_cycles=2).train()
    model.inner.L_level.register_forward_hook(
        lambda m, a, o: seen.append((torch.is_grad_enabled(), torch.is_inference_mode_enabled())))
    for fast in (True, False):
        seen.clear()
        model.fast_paths = fast
        explore, min_steps = draws(2, 0)
        model(model.initial_carry(2), batch(2, 0), explore, min_steps)
        no_grad_calls = [inf for grad, inf in seen if not grad]
        assert len(no_grad_calls) == 3 + 4  # 3 inner + 4 bootstrap L updates
        assert all(no_grad_calls) if fast else not any(no_grad_calls)
        assert [inf for grad, inf in seen if grad] == [False]


def test_cast_weights_once_reuses_one_copy_and_keeps_master_gradients():
    model = make(forward_dtype="bfloat16").train()
    lin = model.inner.L_level.layers[0].mlp.down_proj
    assert isinstance(lin, CastedLinear)
    with cast_weights_once(model.inner, torch.bfloat16):
        w1, _ = lin.weights_for(torch.bfloat16)
        w2, _ = lin.weights_for(torch.bfloat16)
        assert w1 is w2 and w1.dtype == torch.bfloat16
        x = torch.randn(2, lin.weight.shape[1], dtype=torch.bfloat16)
        (lin(x).float().sum() + lin(x).float().sum()).backward()
    assert lin.cast_cache is None
    want = 2 * x.float().sum(0).expand(32, -1)  # d/dW of sum(x W^T), twice
    torch.testing.assert_close(lin.weight.grad, want, rtol=2e-2, atol=2e-2)
    with cast_weights_once(model.inner, torch.float32):  # fp32 masters in an fp32 forward: nothing to cache
        assert lin.cast_cache is None


# --------------------------------------------------------------------------- the one-program steps
@pytest.mark.parametrize(("optimizer", "matrices", "clip", "accum"),
                         [("adam_atan2", "none", None, 1), ("adamw", "none", 0.5, 2), ("adam_atan2", "muon", None, 1)])
def test_train_step_eager_equals_the_plain_loop(optimizer, matrices, clip, accum):
    tc = train_cfg(optimizer=optimizer, matrix_optimizer=matrices, grad_clip=clip, grad_accum=accum)
    a, b = make(), make()
    want = eager_loop(a, tc, 4, accum)
    got = step_loop(b, tc, 4, accum, compile=False)
    assert want[0] != want[-1]  # the weights moved
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want), rtol=1e-5, atol=1e-5)
    assert_same_state(a, b)


def small(**kw) -> HRM:  # few unrolled blocks: keeps the CPU compile short
    return make(H_layers=1, L_layers=1, H_cycles=1, L_cycles=2, **kw)


@pytest.mark.parametrize("matrices", ["none", "muon"])
def test_compiled_train_step_has_no_graph_breaks(matrices):
    model = small().train()
    tc = train_cfg(grad_clip=1.0, matrix_optimizer=matrices)
    step = TrainStep(model, build_optimizers(model, tc), [model.initial_carry(4)], loss_type="stablemax",
                     global_batch_size=4, grad_clip=1.0, compile=False)
    explore, min_steps = draws(4, 0)
    step._load_inputs(batch(4, 0), explore, min_steps, 1.0)
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        report = torch._dynamo.explain(step._body)()
    assert report.graph_break_count == 0, report.break_reasons
    assert report.graph_count == 1


def test_compiled_eval_segment_has_no_graph_breaks():
    model = small().eval()
    step = EvalStep(model, 4, "cpu", compile=False)
    step.start(batch(4, 0))
    report = torch._dynamo.explain(step._body)()
    assert report.graph_break_count == 0, report.break_reasons


def test_compiled_train_step_matches_eager_for_5_steps():
    tc = train_cfg(grad_clip=1.0)
    a, b = small(), small()
    want = eager_loop(a, tc, 5)
    torch._dynamo.utils.counters.clear()
    got = step_loop(b, tc, 5, compile=True)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1  # no recompiles as the lr changes
    assert len(set(want)) == 5
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want), rtol=1e-5, atol=1e-5)
    assert_same_state(a, b)


def test_eval_step_equals_the_model_loop():
    model = make(halt_max_steps=3).eval()
    data = batch(4, 3)
    carry = model.initial_carry(4)
    with torch.no_grad():
        model.fast_paths = False
        for _ in range(3):
            _, out = model(carry, data)
        _, want = act_loss(carry, out)
        model.fast_paths = True
    step = EvalStep(model, 4, "cpu", compile=False)
    got_out, got = step.run(data)
    torch.testing.assert_close(got_out["logits"], out["logits"], rtol=1e-5, atol=1e-5)
    for k in want:
        torch.testing.assert_close(got[k].float(), want[k].float(), rtol=1e-5, atol=1e-5, msg=k)
    assert step.carry.steps.tolist() == [3, 3, 3, 3]


def test_eval_runner_compiled_equals_eager_and_falls_back_on_failure(monkeypatch):
    """EvalRunner: the compiled EvalStep (reused over batches) gives the eager loop's outputs and metrics; when
    the compiled step fails at its first batch it warns and answers with the eager loop."""
    model = make(halt_max_steps=3).eval()
    eager = EvalRunner(model, 4, "cpu", compile=False)
    compiled = EvalRunner(model, 4, "cpu", compile=True)
    for seed in (5, 6):  # a second batch reuses the compiled step
        want_out, want = eager(batch(4, seed))
        got_out, got = compiled(batch(4, seed))
        # fp32, compiled (fused, reordered) vs eager: the tolerance of the other compiled-vs-eager tests
        torch.testing.assert_close(got_out["logits"], want_out["logits"], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(got_out["q_halt_logits"], want_out["q_halt_logits"], rtol=1e-4, atol=1e-4)
        for k in want:
            torch.testing.assert_close(got[k].float(), want[k].float(), rtol=1e-4, atol=1e-4, msg=k)
    assert compiled.compile and compiled._step is not None
    assert eager(batch(4, 5), metrics=False)[1] == {}

    monkeypatch.setenv("HRM_FAST_TEST_FAIL_AT", "first_eval_step")
    failing = EvalRunner(model, 4, "cpu", compile=True)
    with pytest.warns(RuntimeWarning, match="compiled eval step failed at its first batch"):
        got_out, got = failing(batch(4, 7))
    assert not failing.compile
    want_out, want = eager(batch(4, 7))
    torch.testing.assert_close(got_out["logits"], want_out["logits"])
    for k in want:
        torch.testing.assert_close(got[k], want[k], msg=k)


def test_train_step_requires_draws_when_exploring():
    model = make().train()
    step = TrainStep(model, build_optimizers(model, train_cfg()), [model.initial_carry(4)], loss_type="stablemax",
                     global_batch_size=4, compile=False)
    with pytest.raises(ValueError, match="exploration draws"):
        step(batch(4, 0))


# --------------------------------------------------------------------------- CUDA graphs (GPU only)
@pytest.mark.gpu
@pytest.mark.parametrize("compile", [False, True])
def test_cuda_graph_train_step_replay_equals_eager(compile):
    tc = train_cfg(grad_clip=1.0)
    a, b = make(device="cuda"), make(device="cuda")
    want = step_loop(a, tc, 4, device="cuda", compile=False, cuda_graph=False)
    got = step_loop(b, tc, 4, device="cuda", compile=compile, cuda_graph=True)
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want), rtol=1e-4, atol=1e-4)
    assert_same_state(a, b, rtol=1e-3, atol=1e-4)


@pytest.mark.gpu
def test_cuda_graph_eval_step_replay_equals_eager():
    model = make(device="cuda").eval()
    data = batch(4, 5, "cuda")
    eager = EvalStep(model, 4, "cuda", compile=False, cuda_graph=False)
    want_out, want = (dict(x) for x in eager.run(data))
    want_out, want = {k: v.clone() for k, v in want_out.items()}, {k: v.clone() for k, v in want.items()}
    graphed = EvalStep(model, 4, "cuda", compile=True, cuda_graph=True)
    for _ in range(2):  # replays again on a fresh batch start
        got_out, got = graphed.run(data)
        torch.testing.assert_close(got_out["logits"], want_out["logits"], rtol=1e-4, atol=1e-4)
        for k in want:
            torch.testing.assert_close(got[k].float(), want[k].float(), rtol=1e-4, atol=1e-4, msg=k)
