"""Print the latest benchmark results (``.benchmarks/latest.json``) as one table.

    pytest bench/ --benchmark-only && python -m bench.report

Columns: median time, and where the benchmark recorded them, tokens/s, examples/s, peak memory,
FLOPs per call, achieved TFLOP/s and % of the device's bf16 peak (CUDA only), and the speed-up
against the ``reference`` entry of the same group.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.conftest import RESULTS


def _fmt_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _fmt(value, spec: str = ".3g") -> str:
    return "" if value is None else format(value, spec)


def rows_of(results: dict) -> list[list[str]]:
    by_group: dict[str, dict[str, float]] = {}
    for b in results["benchmarks"]:
        impl = b["extra_info"].get("impl")
        if impl is not None:
            by_group.setdefault(b["group"] or "", {})[impl] = b["stats"]["median"]
    rows = []
    for b in sorted(results["benchmarks"], key=lambda b: (b["group"] or "", b["name"])):
        info, median = b["extra_info"], b["stats"]["median"]
        flops = info.get("flops")
        tflops = flops / median / 1e12 if flops else None
        base = by_group.get(b["group"] or "", {}).get("reference")
        speedup = base / median if base and info.get("impl") not in (None, "reference") else None
        rows.append([
            b["group"] or "", b["name"], _fmt_time(median),
            _fmt(info.get("tokens_per_s"), ".4g"), _fmt(info.get("examples_per_s"), ".4g"),
            _fmt(info.get("peak_mem_mb"), ".4g"), _fmt(flops, ".3g"), _fmt(tflops, ".3g"),
            _fmt(info.get("pct_of_peak"), ".1f"), f"{speedup:.2f}x" if speedup else "",
        ])
    return rows


HEADER = ["group", "benchmark", "median", "tokens/s", "examples/s", "peak MB", "FLOPs", "TFLOP/s", "% peak",
          "vs reference"]


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(HEADER), line(["-" * w for w in widths]), *map(line, rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="?", type=Path, default=RESULTS, help="results JSON (default: %(default)s)")
    args = parser.parse_args(argv)
    if not args.results.exists():
        print(f"{args.results}: no results yet; run `pytest bench/ --benchmark-only` first", file=sys.stderr)
        return 2
    results = json.loads(args.results.read_text())
    print(f"{results['device']}  torch {results['torch']}  {results['time']}")
    print(format_table(rows_of(results)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
