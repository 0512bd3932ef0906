"""The built-in check of an export: run it on encoded grids and compare with the PyTorch eager model.

The eager side is the real evaluation loop (``HRM.forward`` on a fresh carry, with its ACT reset and halt ops,
``segments`` times), so a pass also proves that the exported static graph computes what evaluation computes.

Rules. float32: logits and q_halt within ``1e-4 * max(1, max |eager|)`` of eager; when that fails (HRM's
recurrence amplifies rounding: over many segments two correct fp32 implementations drift apart), a float64
run of the same program is the oracle and the export's error against it may be at most twice eager
float32's own error (the project's rule for a same-dtype reference). Argmax tokens must equal eager's
except at near-ties (eager's top-2 logit margin within twice the logits difference). float16: eager float32
is the oracle and the export's error against it may be at most twice eager float16's own error plus
``1e-3 * max(1, max |eager|)``; token agreement with float32 is reported, not required (fp16 rounding
legitimately flips near-ties).
"""

from __future__ import annotations

import contextlib
import copy
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from hrm_fast.data.encode import encode_grid
from hrm_fast.eval.views import EvalDataError, load_eval_split
from hrm_fast.export.build import ExportSpec, puzzle_input
from hrm_fast.model.hrm import HRM
from hrm_fast.model.layers import CastedEmbedding
from hrm_fast.model.precision import dtype_of

norm_ops = importlib.import_module("hrm_fast.ops.add_rms_norm")  # the module; hrm_fast.ops.add_rms_norm is the op
Batch = tuple[torch.Tensor, torch.Tensor]  # tokens int32 [B, S], puzzle ids int32 [B]
Runner = Callable[[tuple[torch.Tensor, ...]], tuple[np.ndarray, np.ndarray]]


def grid_batches(model: HRM, spec: ExportSpec, canvas: int, data_path: str | Path | None, n_batches: int,
                 seed: int = 0) -> tuple[list[Batch], str]:
    """``n_batches`` batches of real encoded grids: rows of ``data_path``'s test split whose puzzles are exported
    (spread over the split), topped up with random valid grids (seeded). Returns (batches, where they came from)."""
    need = n_batches * spec.batch
    allowed = (np.arange(model.num_puzzle_identifiers) if not isinstance(spec.puzzles, list)
               else np.asarray(spec.puzzles))
    tokens = np.zeros((0, model.seq_len), dtype=np.int32)
    pids = np.zeros(0, dtype=np.int32)
    source = "random valid grids"
    if data_path is not None:
        try:
            split = load_eval_split(data_path, "test")
            if split.inputs.shape[1] == model.seq_len:
                ok = np.flatnonzero(np.isin(split.puzzle_ids, allowed))
                rows = ok[np.linspace(0, len(ok) - 1, min(need, len(ok))).astype(int)] if len(ok) else ok
                tokens = np.asarray(split.inputs[np.sort(rows)], dtype=np.int32)
                pids = split.puzzle_ids[np.sort(rows)].astype(np.int32)
                source = f"{len(rows)} rows of {split.path}"
        except EvalDataError:
            pass
    rng = np.random.default_rng(seed)
    extra = need - len(tokens)
    if extra > 0:
        made = []
        for _ in range(extra):
            h, w = rng.integers(1, canvas + 1, size=2)
            made.append(encode_grid(rng.integers(0, 10, size=(h, w)), canvas).astype(np.int32))
        choices = allowed[allowed > 0] if (allowed > 0).any() else allowed  # id 0 is the blank puzzle
        tokens = np.concatenate([tokens, np.stack(made)])
        pids = np.concatenate([pids, rng.choice(choices, size=extra).astype(np.int32)])
        source += f" + {extra} random valid grids" if source != "random valid grids" else ""
    b = spec.batch
    return [(torch.from_numpy(tokens[i : i + b].copy()), torch.from_numpy(pids[i : i + b].copy()))
            for i in range(0, need, b)], source


def program_inputs(spec: ExportSpec, model: HRM, batch: Batch) -> tuple[torch.Tensor, ...]:
    """What the exported program is fed for a batch: tokens, then table rows, puzzle vectors or nothing."""
    tokens, pids = batch
    kind = puzzle_input(spec, model)
    if kind == "ids":
        if isinstance(spec.puzzles, list):
            pids = torch.from_numpy(np.searchsorted(np.asarray(spec.puzzles), pids.numpy()).astype(np.int32))
        return tokens, pids
    if kind == "vectors":
        return tokens, model.puzzle_emb.weights[pids.long()].to(dtype_of(spec.dtype))
    return (tokens,)


@torch.inference_mode()
def eager_segments(model: HRM, batch: Batch, segments: int) -> tuple[np.ndarray, np.ndarray]:
    """The evaluation loop: fresh carry, ``segments`` calls of ``HRM.forward`` -> logits [N, B, S, V] (float32, or
    float64 for a float64 model), q_halt fp32 [N, B]."""
    tokens, pids = batch
    carry = model.initial_carry(tokens.shape[0])
    data = {"inputs": tokens, "labels": torch.zeros_like(tokens), "puzzle_identifiers": pids}
    logits, q = [], []
    for _ in range(segments):
        carry, out = model(carry, data)
        value = out["logits"]
        logits.append((value if value.dtype == torch.float64 else value.float()).numpy().copy())
        q.append(out["q_halt_logits"].float().numpy().copy())
    return np.stack(logits), np.stack(q)


def torch_runner(exported: torch.export.ExportedProgram) -> Runner:
    module = exported.module()

    def run(args: tuple[torch.Tensor, ...]) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            out, q = module(*args)
        return out.float().numpy() if out.is_floating_point() else out.numpy(), q.numpy()

    return run


def ort_runner(path: Path, input_names: list[str], threads: int = 0) -> Runner:
    """onnxruntime on the CPU execution provider (``threads`` 0 = its default, all cores)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(args: tuple[torch.Tensor, ...]) -> tuple[np.ndarray, np.ndarray]:
        out, q = session.run(None, {n: a.numpy() for n, a in zip(input_names, args)})
        return out.astype(np.float32) if out.dtype.kind == "f" else out, q

    return run


@dataclass
class Check:
    """One exported runner against eager, over every verification batch and compared segment."""

    name: str
    logits_max_abs: float | None
    q_halt_max_abs: float
    token_mismatches: int
    near_tie_mismatches: int
    tokens: int
    ok: bool
    rule: str

    def line(self) -> str:
        logits = "n/a (tokens output)" if self.logits_max_abs is None else f"{self.logits_max_abs:.3g}"
        same = self.tokens - self.token_mismatches
        ties = f", {self.near_tie_mismatches} at near-ties" if self.near_tie_mismatches else ""
        return (f"{self.name}: logits max abs diff {logits}, q_halt {self.q_halt_max_abs:.3g}; tokens identical "
                f"{same}/{self.tokens} ({100 * same / self.tokens:.2f}%){ties} [{self.rule}] -> "
                + ("OK" if self.ok else "DISAGREES"))

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _stack(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Per-batch (out [n, B, ...], q [n, B]) joined along the batch axis."""
    return np.concatenate([p[0] for p in parts], axis=1), np.concatenate([p[1] for p in parts], axis=1)


def compare(name: str, got: tuple[np.ndarray, np.ndarray], ref: tuple[np.ndarray, np.ndarray],
            ref_fp16: tuple[np.ndarray, np.ndarray] | None, output: str,
            oracle: tuple[np.ndarray, np.ndarray] | None = None) -> Check:
    """``got``: the export's (logits or tokens, q) [n, B, ...]; ``ref``: eager (logits, q) in float32 (the
    export dtype for fp32 exports, the fp32 oracle for fp16 ones); ``ref_fp16``: eager float16 for fp16 exports;
    ``oracle``: the float64 run for the fallback rule of fp32 exports."""
    out, q = got
    ref_logits, ref_q = ref
    scale = max(1.0, float(np.abs(ref_logits).max()))
    q_scale = max(1.0, float(np.abs(ref_q).max()))
    q_err = float(np.abs(q - ref_q).max())
    logits_err = float(np.abs(out - ref_logits).max()) if output == "logits" else None
    tokens = out.argmax(-1) if output == "logits" else out
    ref_tokens = ref_logits.argmax(-1)
    mismatch = tokens != ref_tokens
    if ref_fp16 is None:
        tol, q_tol = 1e-4 * scale, 1e-4 * q_scale
        rule = f"float32: tolerance {tol:.2g}"
        if oracle is not None:
            err64 = float(np.abs(out - oracle[0]).max()) if logits_err is not None else 0.0
            base64 = float(np.abs(ref_logits - oracle[0]).max())
            q_err64, q_base64 = float(np.abs(q - oracle[1]).max()), float(np.abs(ref_q - oracle[1]).max())
            rule = (f"float32 vs a float64 run: error {err64:.2g} (q {q_err64:.2g}) allowed 2x eager's "
                    f"{base64:.2g} (q {q_base64:.2g}) + 1e-6 x scale")
            logits_ok = logits_err is None or err64 <= 2 * base64 + 1e-6 * scale
            q_ok = q_err64 <= 2 * q_base64 + 1e-6 * q_scale
        else:
            logits_ok = logits_err is None or logits_err <= tol
            q_ok = q_err <= q_tol
        top2 = np.sort(ref_logits, axis=-1)[..., -2:]
        near_tie = (top2[..., 1] - top2[..., 0]) <= 2 * max(tol, logits_err or 0.0)
        ok = logits_ok and q_ok and not (mismatch & ~near_tie).any()
        rule += ", tokens equal but near-ties"
        n_ties = int((mismatch & near_tie).sum())
    else:
        base = float(np.abs(ref_fp16[0] - ref_logits).max())
        q_base = float(np.abs(ref_fp16[1] - ref_q).max())
        tol, q_tol = 2 * base + 1e-3 * scale, 2 * q_base + 1e-3 * q_scale
        ok = q_err <= q_tol and (logits_err is None or logits_err <= tol)
        agree16 = float((ref_fp16[0].argmax(-1) == ref_tokens).mean())
        rule = (f"float16 vs eager float32: allowed {tol:.2g} = 2x eager float16's error {base:.2g} + 1e-3 x scale; "
                f"eager float16 agrees on {100 * agree16:.2f}% of tokens")
        n_ties = 0
    return Check(name, logits_err, q_err, int(mismatch.sum()), n_ties, int(mismatch.size), ok, rule)


@contextlib.contextmanager
def float64_norms() -> Iterator[None]:
    """RMSNorm keeps float64 inputs in float64 (the reference computes its statistics in fp32, which would cap
    the oracle's precision at fp32); other dtypes are untouched."""
    original = norm_ops.rms_norm

    def rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
        if x.dtype != torch.float64:
            return original(x, eps)
        return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps)

    norm_ops.rms_norm = rms_norm
    try:
        yield
    finally:
        norm_ops.rms_norm = original


def float64_model(model: HRM) -> HRM:
    """A float64 copy of a float32 eager ``model`` (weights, buffers, carry and activations; q_halt ends in fp32):
    the oracle of the fallback rule, computed by the same evaluation loop as eager, independent of the export."""
    model = copy.deepcopy(model).double()
    model.inner.forward_dtype = torch.float64
    for m in model.modules():
        if isinstance(m, CastedEmbedding):
            m.cast_to = torch.float64
    if model.puzzle_emb is not None:
        model.puzzle_emb.cast_to = torch.float64
    return model


def verify(spec: ExportSpec, model: HRM, model_fp32: HRM | None, batches: list[Batch],
           runners: dict[str, Runner]) -> list[Check]:
    """Run every runner and eager over ``batches``; ``model`` is eager in the export dtype, ``model_fp32`` the
    float32 oracle for float16 exports (None for float32). When a float32 check fails its plain tolerance, a
    float64 copy of ``model`` is run as the oracle of the fallback rule."""
    keep = slice(None) if spec.per_segment else slice(-1, None)
    got: dict[str, list] = {name: [] for name in runners}
    ref, ref16 = [], []
    for batch in tqdm(batches, desc="verify", unit="batch", leave=False):
        args = program_inputs(spec, model, batch)
        for name, run in runners.items():
            out, q = run(args)
            got[name].append((out if spec.per_segment else out[None], q if spec.per_segment else q[None]))
        eager = eager_segments(model, batch, spec.segments)
        if model_fp32 is None:
            ref.append((eager[0][keep], eager[1][keep]))
        else:
            ref16.append((eager[0][keep], eager[1][keep]))
            oracle = eager_segments(model_fp32, batch, spec.segments)
            ref.append((oracle[0][keep], oracle[1][keep]))
    reference_ = _stack(ref)
    reference16 = _stack(ref16) if ref16 else None
    checks = [compare(name, _stack(parts), reference_, reference16, spec.output) for name, parts in got.items()]
    if reference16 is None and not all(c.ok for c in checks):
        model64 = float64_model(model)
        parts = []
        with float64_norms():
            for batch in tqdm(batches, desc="float64 oracle", unit="batch", leave=False):
                out, q = eager_segments(model64, batch, spec.segments)
                parts.append((out[keep], q[keep]))
        oracle64 = _stack(parts)
        checks = [compare(name, _stack(got[name]), reference_, None, spec.output, oracle64) if not c.ok else c
                  for name, c in zip(got, checks)]
    return checks
