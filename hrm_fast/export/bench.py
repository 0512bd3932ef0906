"""``python -m hrm_fast.export.bench DIR``: latency and throughput of an export vs PyTorch eager, same batch.

Times onnxruntime (CPU) on ``DIR/model.onnx`` (or the ``torch.export`` program of ``DIR/model.pt2``) and the
PyTorch eager evaluation loop of the checkpoint named in ``DIR/model.json`` (``HRM.forward`` on a fresh
carry, ``segments`` times, inference mode, fast paths on), on random valid grids of the exported batch
size, with 1 thread and with all threads. Prints a table and writes ``DIR/bench.json``. Wall-clock medians:
on a shared machine compare the rows of one run (CPU seconds are printed too).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from hrm_fast import ops
from hrm_fast.checkpoint import CheckpointError
from hrm_fast.config import ConfigError
from hrm_fast.entry import exit_2_on
from hrm_fast.eval.submission import write_json_atomic
from hrm_fast.export.build import ExportError, model_in_dtype, spec_from_meta
from hrm_fast.export.verify import Batch, grid_batches, ort_runner, program_inputs, torch_runner
from hrm_fast.model.hrm import HRM


@torch.inference_mode()
def eager_episode(model: HRM, batch: Batch, segments: int) -> torch.Tensor:
    """One evaluation episode (fresh carry, ``segments`` segments) -> the last segment's logits."""
    tokens, pids = batch
    carry = model.initial_carry(tokens.shape[0])
    data = {"inputs": tokens, "labels": torch.zeros_like(tokens), "puzzle_identifiers": pids}
    for _ in range(segments):
        carry, out = model(carry, data)
    return out["logits"]


def timed(fn: Any, repeats: int, desc: str) -> dict[str, float]:
    """Median wall and CPU seconds of ``fn()`` over ``repeats`` calls after one warm-up call."""
    fn()
    walls, cpus = [], []
    for _ in tqdm(range(repeats), desc=desc, unit="run", leave=False):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return {"wall_s": float(np.median(walls)), "cpu_s": float(np.median(cpus))}


def bench(folder: Path, checkpoint: str | None, repeats: int) -> list[dict[str, Any]]:
    from hrm_fast.eval.pipeline import load_for_eval

    meta_file = folder / "model.json"
    if not meta_file.exists():
        raise ExportError(f"{meta_file}: missing (not a folder written by python -m hrm_fast.export)")
    meta = json.loads(meta_file.read_text())
    spec = spec_from_meta(meta)
    file = folder / meta["file"]
    if not file.exists():
        raise ExportError(f"{file}: missing")
    ckpt = checkpoint or meta["checkpoint"]
    loaded, _, _ = load_for_eval(ckpt, torch.device("cpu"))
    model = model_in_dtype(loaded, spec.dtype)
    (batch,), _ = grid_batches(model, spec, meta["canvas"], None, 1)
    args = program_inputs(spec, model, batch)
    names = [i["name"] for i in meta["inputs"]]
    all_threads = os.cpu_count() or 1
    rows = []
    for threads in sorted({1, all_threads}):
        torch.set_num_threads(threads)
        if spec.format == "onnx":
            runner, engine = ort_runner(file, names, threads), "onnxruntime CPU"
        else:
            runner, engine = torch_runner(torch.export.load(str(file))), "torch.export program"
        for name, fn in ((engine, lambda r=runner: r(args)),
                         ("PyTorch eager", lambda: eager_episode(model, batch, spec.segments))):
            t = timed(fn, repeats, f"{name}, {threads} thread(s)")
            rows.append({"engine": name, "threads": threads, "batch": spec.batch, "segments": spec.segments,
                         "dtype": spec.dtype, "latency_ms": 1e3 * t["wall_s"], "cpu_ms": 1e3 * t["cpu_s"],
                         "grids_per_s": spec.batch / t["wall_s"]})
    write_json_atomic(folder / "bench.json", {"file": meta["file"], "file_bytes": file.stat().st_size,
                                              "repeats": repeats, "rows": rows}, indent=2)
    return rows


@exit_2_on(ExportError, CheckpointError, ConfigError)
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hrm_fast.export.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("folder", help="an export folder (model.json + model.onnx or model.pt2)")
    p.add_argument("--checkpoint", default=None, help="the checkpoint for the eager side (default: model.json's)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per engine and thread count (median)")
    args = p.parse_args(argv)
    if args.repeats < 1:
        print(f"error: --repeats {args.repeats}: must be >= 1", file=sys.stderr)
        return 2
    with ops.backend(ops.get_backend()):
        rows = bench(Path(args.folder), args.checkpoint, args.repeats)
    print(f"{'engine':<22} {'threads':>7} {'batch':>5} {'segments':>8} {'latency ms':>11} {'CPU ms':>9} {'grids/s':>9}")
    for r in rows:
        print(f"{r['engine']:<22} {r['threads']:>7} {r['batch']:>5} {r['segments']:>8} {r['latency_ms']:>11.1f} "
              f"{r['cpu_ms']:>9.1f} {r['grids_per_s']:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
