"""``python -m hrm_fast.export CKPT --format onnx|pt2 --out DIR``: export HRM inference, then verify it.

Writes ``DIR/model.onnx`` (or ``model.pt2``) and ``DIR/model.json`` only after the export ran on real encoded
grids and agreed with the PyTorch eager evaluation loop (see :mod:`hrm_fast.export.verify`); otherwise exit 2
and nothing is left at DIR. Bad options or a checkpoint of the wrong kind: one line naming it, exit 2.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from hrm_fast import ops
from hrm_fast.checkpoint import CheckpointError
from hrm_fast.config import ConfigError
from hrm_fast.entry import exit_2_on
from hrm_fast.eval.submission import write_json_atomic
from hrm_fast.eval.views import EvalDataError
from hrm_fast.export.build import (
    ExportError,
    ExportSpec,
    build_program,
    canvas_of,
    check_spec,
    describe,
    example_inputs,
    export_program,
    io_names,
    model_in_dtype,
    parse_puzzles,
    write_file,
)
from hrm_fast.export.verify import grid_batches, ort_runner, torch_runner, verify


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hrm_fast.export", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="hrm_fast checkpoint folder (or a run folder: its best, else last), or an "
                                      "original HRM checkpoint file with --hrm-config")
    p.add_argument("--format", required=True, choices=("onnx", "pt2"))
    p.add_argument("--out", required=True, help="output folder (replaced only after a verified export)")
    p.add_argument("--segments", type=int, default=None, help="ACT segments to unroll (default halt_max_steps, "
                                                               "what evaluation runs)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16"))
    p.add_argument("--batch", type=int, default=1, help="static batch size (default 1)")
    p.add_argument("--puzzles", default="all", help="all (the whole puzzle table, input = puzzle id), ids like "
                                                   "1,4,7-9 (only those rows), or none (puzzle vectors as an input)")
    p.add_argument("--output", default="logits", choices=("logits", "tokens"), help="logits or argmax tokens")
    p.add_argument("--per-segment", action="store_true", help="outputs of every segment, not only the last")
    p.add_argument("--hrm-config", default=None, help="all_config.yaml of an original HRM checkpoint file")
    p.add_argument("--data", default=None, help="dataset whose test grids verify the export (default: the "
                                                "checkpoint's data.path; random valid grids when absent)")
    p.add_argument("--verify-batches", type=int, default=2, help="batches of --batch grids to verify on")
    return p


def run(args: argparse.Namespace) -> Path:
    """Export and verify; returns the written folder. Raises ExportError (and the loaders' errors)."""
    import torch

    from hrm_fast.eval.pipeline import load_for_eval

    loaded, config, source = load_for_eval(args.checkpoint, torch.device("cpu"), args.hrm_config)
    segments = args.segments if args.segments is not None else config.model.halt_max_steps
    spec = ExportSpec(args.format, segments, args.dtype, args.batch, parse_puzzles(args.puzzles), args.output,
                      args.per_segment)
    check_spec(spec, loaded)
    if args.verify_batches < 1:
        raise ExportError(f"--verify-batches {args.verify_batches}: must be >= 1")
    model = model_in_dtype(loaded, spec.dtype)
    model_fp32 = model_in_dtype(loaded, "float32") if spec.dtype != "float32" else None
    canvas = canvas_of(model, config.data.max_grid_size)
    example = example_inputs(spec, model)
    names = io_names(spec, model)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        t0 = time.perf_counter()
        print(f"exporting {source} ({spec.segments} segments, batch {spec.batch}, {spec.dtype}) as {spec.format}",
              file=sys.stderr)
        exported = export_program(build_program(spec, model), example)
        write_file(spec, exported, example, names, tmp / spec.file)
        size = sum(f.stat().st_size for f in tmp.iterdir())  # with model.onnx.data when the weights went there
        print(f"wrote {spec.file}: {size / 2**20:.1f} MiB in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

        if spec.format == "onnx":
            runners = {"onnxruntime (CPU)": ort_runner(tmp / spec.file, names[0]),
                       "torch.export program": torch_runner(exported)}
        else:
            runners = {"torch.export program (reloaded .pt2)": torch_runner(torch.export.load(str(tmp / spec.file)))}
        data_path = args.data if args.data is not None else config.data.path
        batches, where = grid_batches(model, spec, canvas, data_path, args.verify_batches)
        print(f"verifying on {len(batches)} x {spec.batch} grids ({where}) against PyTorch eager", file=sys.stderr)
        checks = verify(spec, model, model_fp32, batches, runners)
        for check in checks:
            print(check.line())
        if not all(c.ok for c in checks):
            bad = ", ".join(c.name for c in checks if not c.ok)
            raise ExportError(f"{bad} disagrees with PyTorch eager beyond tolerance; nothing written to {out}")

        meta = describe(spec, model, canvas, str(Path(source).resolve()))
        meta["file_bytes"] = size
        meta["verification"] = {"grids": where, "checks": [c.as_dict() for c in checks]}
        write_json_atomic(tmp / "model.json", meta, indent=2)
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


@exit_2_on(ExportError, CheckpointError, ConfigError, EvalDataError)
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    with ops.backend(ops.get_backend()):  # loading a model sets the process-wide backend: restore it
        out = run(args)
    print(f"export verified: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
