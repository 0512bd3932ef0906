"""From a checkpoint to an exported file: options, the model in the export dtype, torch.export and ONNX.

Exporter choice: ``torch.onnx.export(..., dynamo=True)`` (onnxscript) is given the ``torch.export`` program
itself, so the ONNX file and the ``.pt2`` file come from one and the same traced graph. The TorchScript
exporter is deprecated in torch 2.x and would trace the model a second, different way; it has no
advantage here because the graph is static (no data-dependent control flow to script).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from hrm_fast import ops
from hrm_fast.checkpoint import load_state_into
from hrm_fast.data.encode import COLOUR_OFFSET, EOS_ID, PAD_ID
from hrm_fast.export.program import InferenceProgram, PuzzleInput
from hrm_fast.model.hrm import HRM
from hrm_fast.model.precision import dtype_of

OPSET = 18  # ONNX opset: TensorRT 8.6+ (JetPack 5.1.2 and later) parses it
FILES = {"onnx": "model.onnx", "pt2": "model.pt2"}


class ExportError(ValueError):
    """An option or checkpoint that cannot be exported, or an export that failed verification."""


@dataclass
class ExportSpec:
    """What to export. ``puzzles``: ``"all"``, ``"none"`` (puzzle vectors as an input) or a list of puzzle ids."""

    format: Literal["onnx", "pt2"]
    segments: int
    dtype: Literal["float32", "float16"]
    batch: int
    puzzles: str | list[int]
    output: Literal["logits", "tokens"]
    per_segment: bool
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def file(self) -> str:
        return FILES[self.format]


def parse_puzzles(text: str) -> str | list[int]:
    """``all`` | ``none`` | comma-separated ids and ranges (``1,4,7-9``) -> "all" / "none" / sorted unique ids."""
    if text in ("all", "none"):
        return text
    ids: set[int] = set()
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            ids.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ExportError(f"--puzzles {text!r}: expected all, none or ids like 1,4,7-9") from None
    if not ids:
        raise ExportError(f"--puzzles {text!r}: no ids")
    return sorted(ids)


def check_spec(spec: ExportSpec, model: HRM) -> None:
    """Refuse options the checkpoint cannot serve (ExportError naming the option)."""
    n_max = model.config.halt_max_steps
    if not 1 <= spec.segments <= n_max:
        raise ExportError(f"--segments {spec.segments}: evaluation runs 1..halt_max_steps={n_max} segments from a "
                          "fresh carry (a further segment would restart the rows)")
    if spec.batch < 1:
        raise ExportError(f"--batch {spec.batch}: must be >= 1")
    if model.puzzle_emb is None and spec.puzzles != "all":
        raise ExportError(f"--puzzles {spec.puzzles}: this checkpoint has no puzzle embedding "
                          "(model.puzzle_emb_ndim=0); leave --puzzles at its default")
    if isinstance(spec.puzzles, list):
        n_ids = model.num_puzzle_identifiers
        bad = [i for i in spec.puzzles if not 0 <= i < n_ids]
        if bad:
            raise ExportError(f"--puzzles: ids {bad[:5]} are outside the checkpoint's puzzle table (0..{n_ids - 1})")


def model_in_dtype(model: HRM, dtype: str) -> HRM:
    """A copy of ``model`` whose forward dtype is ``dtype`` (same weights; reference ops), in eval mode."""
    cfg = model.config.model_copy(update={"forward_dtype": dtype, "ops": "reference"})
    with ops.backend(ops.get_backend()):  # HRM() sets the process-wide ops backend: restore it afterwards
        out = HRM(cfg, model.vocab_size, model.seq_len, model.num_puzzle_identifiers)
    load_state_into(out, model.state_dict(), "the loaded checkpoint")
    return out.eval()


def puzzle_input(spec: ExportSpec, model: HRM) -> PuzzleInput:
    if model.puzzle_emb is None:
        return "none"
    return "vectors" if spec.puzzles == "none" else "ids"


def build_program(spec: ExportSpec, model: HRM) -> InferenceProgram:
    """The :class:`InferenceProgram` of ``model`` (already in the export dtype) for ``spec``."""
    kind = puzzle_input(spec, model)
    table = None
    if kind == "ids":
        weights = model.puzzle_emb.weights
        table = weights if spec.puzzles == "all" else weights[torch.tensor(spec.puzzles)]
    return InferenceProgram(model, spec.segments, kind, table, spec.output, spec.per_segment).eval()


def example_inputs(spec: ExportSpec, model: HRM) -> tuple[torch.Tensor, ...]:
    """Placeholder inputs with the exported shapes and dtypes."""
    tokens = torch.full((spec.batch, model.seq_len), PAD_ID, dtype=torch.int32)
    kind = puzzle_input(spec, model)
    if kind == "ids":
        return tokens, torch.zeros(spec.batch, dtype=torch.int32)
    if kind == "vectors":
        return tokens, torch.zeros(spec.batch, model.config.puzzle_emb_ndim, dtype=dtype_of(spec.dtype))
    return (tokens,)


def io_names(spec: ExportSpec, model: HRM) -> tuple[list[str], list[str]]:
    kind = puzzle_input(spec, model)
    inputs = ["tokens"] + {"ids": ["puzzle_ids"], "vectors": ["puzzle_vectors"], "none": []}[kind]
    outputs = ["logits" if spec.output == "logits" else "predicted_tokens", "q_halt_logits"]
    return inputs, outputs


def export_program(program: InferenceProgram, args: tuple[torch.Tensor, ...]) -> torch.export.ExportedProgram:
    """``torch.export`` of the program (static shapes, reference ops, no autograd)."""
    with torch.no_grad(), ops.backend("reference"):
        return torch.export.export(program, args, strict=False)


def write_file(spec: ExportSpec, exported: torch.export.ExportedProgram, args: tuple[torch.Tensor, ...],
               names: tuple[list[str], list[str]], path: Path) -> None:
    """Save the program as ``.pt2`` or translate it to a single-file ONNX model."""
    if spec.format == "pt2":
        torch.export.save(exported, str(path))
        return
    import logging
    import warnings

    import onnx_ir
    import onnxscript.optimizer

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # notes such as "torchvision is not installed"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # protobuf caps one file at 2 GiB: larger weights (e.g. a full ARC puzzle table) go to model.onnx.data
        weights = sum(t.numel() * t.element_size() for t in exported.state_dict.values())
        weights += sum(t.numel() * t.element_size() for t in exported.constants.values() if isinstance(t, torch.Tensor))
        program = torch.onnx.export(exported, args, None, input_names=names[0], output_names=names[1],
                                    opset_version=OPSET, optimize=False, verbose=False)
        # The exporter's default optimization folds Transpose(weight) into a new constant at every use, and the
        # unrolled recurrence uses each weight many times (file size x uses); fold only small constants.
        onnxscript.optimizer.optimize(program.model, input_size_limit=1024, output_size_limit=1024)
        # Per-node debug metadata (Python stack traces with local paths, FX text) is a third of a small file.
        for node in onnx_ir.traversal.RecursiveGraphIterator(program.model.graph):
            for key in [k for k in node.metadata_props if k != "namespace"]:
                del node.metadata_props[key]
        program.save(str(path), external_data=weights > 2**31 - 2**28)


def describe(spec: ExportSpec, model: HRM, canvas: int, checkpoint: str) -> dict[str, Any]:
    """The ``model.json`` a consumer needs to encode inputs and decode outputs."""
    inputs, outputs = io_names(spec, model)
    args = example_inputs(spec, model)
    lead = [spec.segments] if spec.per_segment else []
    out_shapes = {
        "logits": ([*lead, spec.batch, model.seq_len, model.vocab_size], spec.dtype),
        "predicted_tokens": ([*lead, spec.batch, model.seq_len], "int32"),
        "q_halt_logits": ([*lead, spec.batch], "float32"),
    }
    kind = puzzle_input(spec, model)
    puzzles: dict[str, Any] = {"input": kind}
    if kind == "ids":
        ids = list(range(model.num_puzzle_identifiers)) if spec.puzzles == "all" else spec.puzzles
        puzzles["ids"] = "all" if spec.puzzles == "all" else ids
        puzzles["rows"] = len(ids)
        puzzles["note"] = ("puzzle_ids[i] is a row of the exported table: the checkpoint's puzzle id itself with "
                           "--puzzles all, else its position in 'ids'")
    elif kind == "vectors":
        puzzles["ndim"] = model.config.puzzle_emb_ndim
        puzzles["note"] = "puzzle_vectors[i] = the checkpoint's puzzle_emb.weights row of the puzzle (or a fitted one)"
    return {
        "format": "hrm_fast-export",
        "format_version": 1,
        "file": spec.file,
        "exporter": f"torch.onnx.export(dynamo=True), opset {OPSET}" if spec.format == "onnx" else "torch.export",
        "checkpoint": checkpoint,
        "torch": torch.__version__,
        "dtype": spec.dtype,
        "batch": spec.batch,
        "segments": spec.segments,
        "halt_max_steps": model.config.halt_max_steps,
        "per_segment": spec.per_segment,
        "output": spec.output,
        "seq_len": model.seq_len,
        "canvas": canvas,
        "vocab": {"size": model.vocab_size, "pad": PAD_ID, "eos": EOS_ID, "colour_offset": COLOUR_OFFSET},
        "encoding": (
            f"a grid [H, W] of colours 0..9 is written at the top-left of a {canvas}x{canvas} board as colour+"
            f"{COLOUR_OFFSET}, EOS {EOS_ID} on the row below it and the column right of it, PAD {PAD_ID} elsewhere, "
            "flattened row-major (hrm_fast.data.encode.encode_grid); the predicted board is cropped at the largest "
            "top-left all-colour rectangle (hrm_fast.data.encode.crop_prediction). sigmoid(q_halt_logits) is the "
            "halting confidence evaluation uses to break vote ties."
        ),
        "puzzles": puzzles,
        "inputs": [{"name": n, "shape": list(a.shape), "dtype": str(a.dtype).removeprefix("torch.")}
                   for n, a in zip(inputs, args)],
        "outputs": [{"name": n, "shape": out_shapes[n][0], "dtype": out_shapes[n][1]} for n in outputs],
    }


def canvas_of(model: HRM, configured: int) -> int:
    """The square canvas side for the model's seq_len (the config's max_grid_size when it matches)."""
    return configured if configured * configured == model.seq_len else math.isqrt(model.seq_len)


def spec_from_meta(meta: dict[str, Any]) -> ExportSpec:
    """The :class:`ExportSpec` an export's ``model.json`` was written for."""
    ids = meta["puzzles"].get("ids", "all")
    puzzles = "none" if meta["puzzles"]["input"] == "vectors" else ids
    fmt = "onnx" if meta["file"].endswith(".onnx") else "pt2"
    return ExportSpec(fmt, meta["segments"], meta["dtype"], meta["batch"], puzzles, meta["output"],
                      meta["per_segment"])
