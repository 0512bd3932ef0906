"""``python -m hrm_fast.runs list [DIR]`` and ``python -m hrm_fast.runs plot RUN [RUN ...] [--out FILE.png]``.

- ``list``: the run folders under DIR (default ``runs``) with their preset, last logged step (of
  ``train.max_steps``), best validation exact accuracy (and its step) and the steps of the ``last`` and ``best``
  checkpoints.
- ``plot``: one PNG of loss, token / exact accuracy, validation metrics and learning rate against step and
  against training FLOPs, the runs overlaid (default ``curves.png``).

Exit code 2 on bad input (a missing folder, a run without metrics.jsonl).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from hrm_fast.entry import exit_2_on
from hrm_fast.runs.catalog import find_runs, format_table, summarize
from hrm_fast.runs.curves import RunError, write_curves


@exit_2_on(RunError)
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hrm_fast.runs", description="Training runs at a glance.")
    sub = p.add_subparsers(dest="command", required=True)
    lp = sub.add_parser("list", help="the runs under DIR with preset, steps, best val, checkpoints")
    lp.add_argument("dir", nargs="?", default="runs", type=Path, help="folder of run folders (default runs)")
    pp = sub.add_parser("plot", help="PNG of the training curves of one or more runs, overlaid")
    pp.add_argument("runs", nargs="+", type=Path, help="run folders (holding metrics.jsonl)")
    pp.add_argument("--out", type=Path, default=Path("curves.png"), help="PNG to write (default curves.png)")
    args = p.parse_args(argv)
    if args.command == "list":
        if not args.dir.is_dir():
            print(f"error: {args.dir}: no such folder", file=sys.stderr)
            return 2
        runs = find_runs(args.dir)
        if not runs:
            print(f"no runs in {args.dir} (a run folder holds metrics.jsonl or config.yaml)")
            return 0
        print(format_table([summarize(r) for r in runs]))
        return 0
    print(f"wrote {write_curves(args.runs, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
