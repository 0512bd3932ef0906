"""Compare two evaluations of the same test set: which test outputs were gained and lost, and how the scores
moved per concept, source and grid size.

    python -m hrm_fast.eval.compare EVAL_A EVAL_B [--k 2] [--html FILE]

EVAL_A / EVAL_B: folders written by ``python -m train.evaluate`` (their ``tasks.csv``; ``scores.json`` for the
checkpoint facts). Only the test outputs present in both are compared (the others are counted). Prints the
comparison and writes it as a self-contained HTML page (default ``EVAL_B/compare-vs-<EVAL_A name>.html``).
Exit code 2 on bad input.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hrm_fast.eval.breakdown import NO_CONCEPT, OutputRow, breakdown, read_rows_csv
from hrm_fast.eval.score import SCORINGS, pass_at_k
from hrm_fast.eval.submission import write_text_atomic
from hrm_fast.eval.views import EvalDataError

Key = tuple[str, int]  # (task id, test index)
COMPARED_GROUPINGS = ("concept", "source", "size")


@dataclass
class Comparison:
    """B relative to A at pass@k over the test outputs both evaluated."""

    k: int
    common: int  # test outputs in both
    only_a: int
    only_b: int
    gained: list[OutputRow]  # B's rows solved in B, not in A
    lost: list[OutputRow]  # B's rows solved in A, not in B
    totals: dict[str, tuple[float, float]]  # scoring -> (A, B) at pass@k
    groups: dict[str, dict[str, tuple[int, float, float]]] = field(default_factory=dict)
    # grouping -> {group: (test outputs, A's kaggle pass@k, B's kaggle pass@k)}

    @property
    def unchanged(self) -> bool:
        return not self.gained and not self.lost and all(a == b for a, b in self.totals.values())


def _ranks(rows: Sequence[OutputRow]) -> dict[str, list[int | None]]:
    ranks: dict[str, list[int | None]] = {}
    for r in rows:
        ranks.setdefault(r.task, []).append(r.correct_rank)
    return ranks


def compare_rows(rows_a: Sequence[OutputRow], rows_b: Sequence[OutputRow], k: int = 2) -> Comparison:
    """The comparison of two evaluations' rows (``tasks.csv``) at pass@``k``."""
    a = {(r.task, r.test_index): r for r in rows_a}
    b = {(r.task, r.test_index): r for r in rows_b}
    keys = [key for key in b if key in a]
    if not keys:
        raise EvalDataError("the two evaluations have no test output in common (different test sets?)")
    ca, cb = [a[key] for key in keys], [b[key] for key in keys]
    ta, tb = pass_at_k(_ranks(ca), [k]), pass_at_k(_ranks(cb), [k])
    out = Comparison(
        k=k, common=len(keys), only_a=len(a) - len(keys), only_b=len(b) - len(keys),
        gained=[rb for ra, rb in zip(ca, cb) if rb.solved_at(k) and not ra.solved_at(k)],
        lost=[rb for ra, rb in zip(ca, cb) if ra.solved_at(k) and not rb.solved_at(k)],
        totals={s: (ta[s][f"pass@{k}"], tb[s][f"pass@{k}"]) for s in SCORINGS},
    )  # fmt: skip
    for g in COMPARED_GROUPINGS:
        ga, gb = breakdown(ca, g, [k]), breakdown(cb, g, [k])  # same rows by key: same groups
        out.groups[g] = {name: (e["test_outputs"], ga[name]["kaggle"][f"pass@{k}"], e["kaggle"][f"pass@{k}"])
                         for name, e in gb.items()}
    return out


def _facts(folder: Path) -> str:
    """"checkpoint (step N)" from the folder's scores.json, or the folder name."""
    try:
        scores = json.loads((folder / "scores.json").read_text())
    except (OSError, json.JSONDecodeError):
        return str(folder)
    ckpt = scores.get("checkpoint", str(folder))
    return f"{ckpt} (step {scores['step']})" if scores.get("step") is not None else str(ckpt)


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _pp(d: float) -> str:
    return f"{100 * d:+.2f} pp"


def format_text(cmp: Comparison, name_a: str, name_b: str) -> str:
    """The comparison as plain text (what the CLI prints)."""
    k = cmp.k
    lines = [f"A: {name_a}", f"B: {name_b}",
             f"{cmp.common} test outputs in both (only in A: {cmp.only_a}, only in B: {cmp.only_b}); pass@{k}"]
    for s, (va, vb) in cmp.totals.items():
        lines.append(f"  {s:<15} {_pct(va):>8} -> {_pct(vb):>8}  ({_pp(vb - va)})")
    for g, groups in cmp.groups.items():
        if g == "concept" and list(groups) == [NO_CONCEPT]:
            continue
        lines.append(f"by {g} (kaggle pass@{k}):")
        width = max(len(n) for n in groups)
        for name, (n, va, vb) in groups.items():
            lines.append(f"  {name:<{width}} {n:>5} outputs  {_pct(va):>8} -> {_pct(vb):>8}  ({_pp(vb - va)})")
    for what, rows in (("gained", cmp.gained), ("lost", cmp.lost)):
        lines.append(f"{what} ({'solved in B, not in A' if what == 'gained' else 'solved in A, not in B'}): "
                     f"{len(rows)}")
        lines += [f"  {r.task} test {r.test_index}" + (f" [{r.concept}]" if r.concept else "") for r in rows]
    lines.append("no change" if cmp.unchanged else f"net: {len(cmp.gained) - len(cmp.lost):+d} test outputs")
    return "\n".join(lines)


def render_html(cmp: Comparison, name_a: str, name_b: str) -> str:
    """The comparison as one self-contained HTML page (the delta chart as an embedded PNG)."""
    from hrm_fast.eval.charts import delta_bars, png_data_uri
    from hrm_fast.eval.report import CSS

    e = html.escape
    k = cmp.k
    totals = "".join(f"<tr><th>{e(s)}</th><td>{_pct(va)}</td><td>{_pct(vb)}</td><td>{_pp(vb - va)}</td></tr>"
                     for s, (va, vb) in cmp.totals.items())
    net = "no change" if cmp.unchanged else f"{len(cmp.gained)} gained, {len(cmp.lost)} lost"
    parts = [f"<h1>Comparison at pass@{k}</h1><dl class=\"facts\"><dt>A</dt><dd>{e(name_a)}</dd><dt>B</dt>"
             f"<dd>{e(name_b)}</dd><dt>test outputs</dt><dd>{cmp.common} in both (only in A: {cmp.only_a}, only "
             f"in B: {cmp.only_b})</dd><dt>net</dt><dd>{net}</dd></dl>",
             f'<table class="summary"><tr><th>scoring</th><th>A</th><th>B</th><th>B - A</th></tr>{totals}</table>']
    for g, groups in cmp.groups.items():
        if g == "concept" and list(groups) == [NO_CONCEPT]:
            continue
        deltas = {name: vb - va for name, (_, va, vb) in groups.items()}
        if g != "size":  # size buckets keep their order; other groups: biggest loss first
            deltas = dict(sorted(deltas.items(), key=lambda kv: (kv[1], kv[0])))
        fig = delta_bars(deltas, f"kaggle pass@{k}: B - A by {g}")
        rows = "".join(f"<tr><th>{e(name)}</th><td>{n}</td><td>{_pct(va)}</td><td>{_pct(vb)}</td>"
                       f"<td>{_pp(vb - va)}</td></tr>" for name, (n, va, vb) in groups.items())
        parts.append(f'<h2>by {e(g)}</h2><div class="charts"><img class="chart" data-chart="{e(g)}" '
                     f'alt="B - A by {e(g)}" src="{png_data_uri(fig)}"><table class="summary groups"><tr><th></th>'
                     f"<th>test outputs</th><th>A</th><th>B</th><th>B - A</th></tr>{rows}</table></div>")
    for what, rows_ in (("gained", cmp.gained), ("lost", cmp.lost)):
        items = "".join(f"<li>{e(r.task)} test {r.test_index}" + (f' <span class="tag">{e(r.concept)}</span>'
                        if r.concept else "") + "</li>" for r in rows_)  # fmt: skip
        parts.append(f"<h2>{what} ({len(rows_)})</h2><ul>{items}</ul>")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>hrm_fast comparison</title>'
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>")


def load_eval(folder: str | Path) -> list[OutputRow]:
    """The rows of an evaluation folder (its tasks.csv); EvalDataError naming the folder or file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EvalDataError(f"{folder}: no such evaluation folder (written by python -m train.evaluate)")
    return read_rows_csv(folder / "tasks.csv")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hrm_fast.eval.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("eval_a", type=Path, help="evaluation folder A (the baseline)")
    p.add_argument("eval_b", type=Path, help="evaluation folder B")
    p.add_argument("--k", type=int, default=2, help="compare at pass@k (default 2, the official metric)")
    p.add_argument("--html", type=Path, default=None, help="HTML page (default EVAL_B/compare-vs-<EVAL_A name>.html)")
    args = p.parse_args(argv)
    try:
        if args.k < 1:
            raise EvalDataError(f"--k must be >= 1, got {args.k}")
        cmp = compare_rows(load_eval(args.eval_a), load_eval(args.eval_b), args.k)
    except EvalDataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    name_a, name_b = _facts(args.eval_a), _facts(args.eval_b)
    print(format_text(cmp, name_a, name_b))
    out = args.html or args.eval_b / f"compare-vs-{args.eval_a.resolve().name}.html"
    write_text_atomic(out, render_html(cmp, name_a, name_b))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

