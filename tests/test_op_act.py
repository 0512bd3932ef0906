"""The ACT carry/halting op (C++ extension) against its pure-PyTorch reference."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from hrm_fast.ops import act as act_ops
from hrm_fast.ops.act import reference_halt, reference_reset

ROOT = Path(__file__).resolve().parents[1]
HAS_EXT = act_ops.extension_available("cpu")
needs_ext = pytest.mark.skipif(not HAS_EXT, reason="hrm_fast._C not built (HRM_FAST_SKIP_EXT=1?)")


def test_extension_was_built():
    """A silent build failure must not turn every extension test into reference-vs-reference."""
    if os.environ.get("HRM_FAST_SKIP_EXT") == "1":
        pytest.skip("extension skipped on purpose")
    assert HAS_EXT, "hrm_fast._C is missing: reinstall with `pip install -e . --no-build-isolation`"
    assert hasattr(torch.ops.hrm_fast, "act_reset") and hasattr(torch.ops.hrm_fast, "act_halt")


def make_reset_args(batch, seq, hidden, dtype, data_dtype=torch.int32, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    carry_len = 7

    def rnd(*shape, dt):
        if dt.is_floating_point:
            return torch.randn(*shape, generator=g).to(dt).to(device)
        return torch.randint(0, 100, shape, generator=g).to(dt).to(device)

    return dict(
        z_H=rnd(batch, seq, hidden, dt=dtype),
        z_L=rnd(batch, seq, hidden, dt=dtype),
        steps=torch.randint(0, 9, (batch,), generator=g, dtype=torch.int32).to(device),
        inputs=rnd(batch, carry_len, dt=data_dtype),
        labels=rnd(batch, carry_len, dt=torch.int64),
        puzzle_identifiers=rnd(batch, dt=torch.int32),
        halted=(torch.rand(batch, generator=g) < 0.5).to(device),
        H_init=rnd(hidden, dt=dtype),
        L_init=rnd(hidden, dt=dtype),
        new_inputs=rnd(batch, carry_len, dt=data_dtype),
        new_labels=rnd(batch, carry_len, dt=torch.int64),
        new_puzzle_identifiers=rnd(batch, dt=torch.int32),
    )


def clone_args(args):
    return {k: v.clone() for k, v in args.items()}


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    "batch,seq,hidden,data_dtype",
    [(1, 1, 1, torch.int32), (1, 5, 3, torch.uint8), (3, 17, 8, torch.int64), (8, 33, 64, torch.int32),
     (5, 901, 16, torch.int16)],
)
def test_act_reset_matches_reference_exactly(batch, seq, hidden, dtype, data_dtype):
    for seed in range(3):
        args = make_reset_args(batch, seq, hidden, dtype, data_dtype, seed=seed)
        ref, ext = clone_args(args), clone_args(args)
        reference_reset(**ref)
        torch.ops.hrm_fast.act_reset(**ext)
        for name in args:
            assert torch.equal(ref[name], ext[name]), name
        # Halted rows really restarted; the others kept their state.
        halted = args["halted"]
        assert torch.equal(ext["z_H"][halted], args["H_init"].expand_as(ext["z_H"][halted]))
        assert torch.equal(ext["z_L"][~halted], args["z_L"][~halted])
        assert (ext["steps"][halted] == 0).all()


@needs_ext
def test_act_reset_all_and_none_halted():
    args = make_reset_args(4, 9, 5, torch.float32)
    for flag in (True, False):
        args["halted"].fill_(flag)
        ref, ext = clone_args(args), clone_args(args)
        reference_reset(**ref)
        torch.ops.hrm_fast.act_reset(**ext)
        for name in args:
            assert torch.equal(ref[name], ext[name]), name


def make_halt_args(batch, max_steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        steps=torch.randint(0, max_steps, (batch,), generator=g, dtype=torch.int32),
        halted=torch.zeros(batch, dtype=torch.bool),
        q_halt=torch.randn(batch, generator=g),
        q_continue=torch.randn(batch, generator=g),
        explore_draw=torch.rand(batch, generator=g),
        min_steps_draw=torch.randint(2, max_steps + 1, (batch,), generator=g, dtype=torch.int32)
        if max_steps >= 2 else torch.zeros(batch, dtype=torch.int32),
    )


@needs_ext
@pytest.mark.parametrize("batch", [1, 7, 256])
@pytest.mark.parametrize("max_steps", [1, 2, 16])
@pytest.mark.parametrize("prob", [0.0, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("training", [True, False])
def test_act_halt_matches_reference_bitwise(batch, max_steps, prob, training):
    args = make_halt_args(batch, max_steps, seed=batch * 31 + max_steps)
    ref, ext = clone_args(args), clone_args(args)
    reference_halt(**ref, max_steps=max_steps, exploration_prob=prob, training=training)
    torch.ops.hrm_fast.act_halt(**ext, max_steps=max_steps, exploration_prob=prob, training=training)
    assert torch.equal(ref["steps"], ext["steps"])
    assert torch.equal(ref["halted"], ext["halted"])
    assert torch.equal(ext["steps"], args["steps"] + 1)


def test_act_halt_rules_by_hand():
    """The halting rule on hand-picked rows (runs on whichever implementation the wrapper picks)."""
    steps = torch.tensor([0, 0, 3, 1, 1], dtype=torch.int32)
    halted = torch.zeros(5, dtype=torch.bool)
    q_halt = torch.tensor([1.0, -1.0, -1.0, 2.0, 2.0])
    q_cont = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0])
    draw = torch.tensor([0.9, 0.9, 0.9, 0.05, 0.9])  # row 3 explores
    min_steps = torch.tensor([2, 2, 2, 4, 4], dtype=torch.int32)
    act_ops.act_halt(steps, halted, q_halt, q_cont, draw, min_steps, 4, 0.1, True)
    # row 0: q says halt at step 1; row 1: q says continue; row 2: reaches max_steps;
    # row 3: q says halt but exploration demands >= 4 steps; row 4: q says halt, no exploration.
    assert steps.tolist() == [1, 1, 4, 2, 2]
    assert halted.tolist() == [True, False, True, False, True]
    # Eval mode ignores q: only max_steps halts.
    halted.zero_()
    act_ops.act_halt(steps, halted, q_halt, q_cont, draw, min_steps, 4, 0.1, False)
    assert halted.tolist() == [False, False, True, False, False]


@needs_ext
def test_opcheck():
    args = make_reset_args(3, 5, 4, torch.float32)
    torch.library.opcheck(torch.ops.hrm_fast.act_reset.default, tuple(args.values()))
    h = make_halt_args(6, 8)
    torch.library.opcheck(torch.ops.hrm_fast.act_halt.default, (*h.values(), 8, 0.1, True))


@needs_ext
def test_compiles_fullgraph_without_breaks():
    def segment(a, h):
        act_ops.act_reset(*a)
        q = a[0][:, 0].float().sum(-1)
        act_ops.act_halt(a[2], h["halted"], q, -q, h["explore_draw"], h["min_steps_draw"], 8, 0.1, True)
        return a[0].sum()

    args = make_reset_args(4, 6, 8, torch.float32)
    halt = make_halt_args(4, 8)
    halt["halted"] = args["halted"]
    explanation = torch._dynamo.explain(segment)(tuple(clone_args(args).values()), clone_args(halt))
    assert explanation.graph_break_count == 0
    assert explanation.graph_count == 1

    eager_args, compiled_args = clone_args(args), clone_args(args)
    eager_halt, compiled_halt = clone_args(halt), clone_args(halt)
    eager_halt["halted"], compiled_halt["halted"] = eager_args["halted"], compiled_args["halted"]
    out_eager = segment(tuple(eager_args.values()), eager_halt)
    out_compiled = torch.compile(segment, fullgraph=True, backend="aot_eager")(
        tuple(compiled_args.values()), compiled_halt)
    torch.testing.assert_close(out_eager, out_compiled)
    for name in args:
        assert torch.equal(eager_args[name], compiled_args[name]), name


@needs_ext
@pytest.mark.parametrize(
    "field,bad,message",
    [
        ("z_L", lambda a: a["z_L"][:, :-1].contiguous(), "z_L has shape"),
        ("z_H", lambda a: a["z_H"].double(), "z_L must be"),
        ("H_init", lambda a: a["H_init"][:-1].contiguous(), "H_init must be"),
        ("L_init", lambda a: a["L_init"].half(), "L_init must be"),
        ("steps", lambda a: a["steps"].long(), "steps must be Int"),
        ("halted", lambda a: a["halted"].int(), "halted must be Bool"),
        ("inputs", lambda a: a["inputs"].long(), "inputs is Long"),
        ("new_labels", lambda a: a["new_labels"][:, :-1].contiguous(), "labels has shape"),
        ("puzzle_identifiers", lambda a: a["puzzle_identifiers"][:-1].contiguous(), "puzzle_identifiers must have"),
        ("z_H", lambda a: a["z_H"].transpose(1, 2).contiguous().transpose(1, 2), "z_H must be contiguous"),
        ("z_H", lambda a: a["z_H"][0], "z_H must be [B, S, D]"),
    ],
)
def test_act_reset_rejects_bad_input(field, bad, message):
    args = make_reset_args(3, 5, 4, torch.float32)
    args[field] = bad(args)
    before = clone_args(args)
    with pytest.raises(RuntimeError, match=re.escape(message)):
        torch.ops.hrm_fast.act_reset(**args)
    for name in args:  # nothing was written
        assert torch.equal(before[name], args[name]), name


@needs_ext
@pytest.mark.parametrize(
    "field,bad,message",
    [
        ("q_halt", lambda a: a["q_halt"].double(), "q_halt must be Float"),
        ("explore_draw", lambda a: a["explore_draw"][:-1], "explore_draw must be [6]"),
        ("min_steps_draw", lambda a: a["min_steps_draw"].long(), "min_steps_draw must be Int"),
        ("q_continue", lambda a: a["q_continue"].view(2, 3), "q_continue must be [6]"),
        ("steps", lambda a: torch.zeros(12, dtype=torch.int32)[::2], "steps must be contiguous"),
    ],
)
def test_act_halt_rejects_bad_input(field, bad, message):
    args = make_halt_args(6, 8)
    args[field] = bad(args)
    with pytest.raises(RuntimeError, match=re.escape(message)):
        torch.ops.hrm_fast.act_halt(**args, max_steps=8, exploration_prob=0.1, training=True)
    with pytest.raises(RuntimeError, match="max_steps must be >= 1"):
        torch.ops.hrm_fast.act_halt(**make_halt_args(6, 8), max_steps=0, exploration_prob=0.1, training=True)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_op_matches_reference(dtype):
    assert act_ops.extension_available("cuda"), "extension built without CUDA kernels"
    args = make_reset_args(9, 901, 512, dtype, device="cuda")
    ref, ext = clone_args(args), clone_args(args)
    reference_reset(**ref)
    torch.ops.hrm_fast.act_reset(**ext)
    for name in args:
        assert torch.equal(ref[name], ext[name]), name
    h = {k: v.cuda() for k, v in make_halt_args(300, 16).items()}
    ref, ext = clone_args(h), clone_args(h)
    reference_halt(**ref, max_steps=16, exploration_prob=0.1, training=True)
    torch.ops.hrm_fast.act_halt(**ext, max_steps=16, exploration_prob=0.1, training=True)
    assert torch.equal(ref["halted"], ext["halted"]) and torch.equal(ref["steps"], ext["steps"])


NVCC = shutil.which("nvcc")


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
def test_cuda_kernels_compile_standalone_without_spills(tmp_path):
    """act.cu needs only CUDA headers: nvcc compiles it for sm_89 and sm_90 with no spills."""
    out = subprocess.run(
        [NVCC, "-gencode", "arch=compute_89,code=sm_89", "-gencode", "arch=compute_90,code=sm_90",
         "-Xptxas", "-v", "-O3", "-c", str(ROOT / "csrc/cuda/act.cu"), "-o", str(tmp_path / "act.o")],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    log = out.stdout + out.stderr
    for arch in ("sm_89", "sm_90"):
        assert re.search(rf"Compiling entry function '\S*reset_state_kernel\S*' for '{arch}'", log), log
    spills = [int(n) for n in re.findall(r"(\d+) bytes spill (?:stores|loads)", log)]
    assert spills and max(spills) == 0, log
