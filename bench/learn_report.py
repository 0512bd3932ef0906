"""Learning curves and the results table of the learning benchmark, from every run JSON in a folder.

``curves.png``: held-out metrics (test ARC Prize pass@2, test changed-cell accuracy, test token accuracy, test
lm loss, val changed-cell accuracy) against training FLOPs (top row) and against training wall time (bottom
row); one line per (recipe, budget): the mean over seeds, the band spanning the seeds (min to max).
``table.md``: per (recipe, budget, checkpoint) the mean ± spread over seeds, spread = half the range
(max - min) / 2, so mean ± spread covers every seed; n = number of seeds.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from hrm_fast.eval.submission import write_text_atomic

SPLITS = ("val", "test")
PANELS = (("test", "arc_prize@2", "test pass@2 (ARC Prize)"),
          ("test", "changed_cell_accuracy", "test changed-cell acc"),
          ("test", "token_accuracy", "test token acc"), ("test", "lm_loss", "test lm loss"),
          ("val", "changed_cell_accuracy", "val changed-cell acc"))
COLUMNS = (("test", "arc_prize@1", "test pass@1"), ("test", "arc_prize@2", "test pass@2"),
           ("test", "exact_accuracy", "test exact"), ("test", "token_accuracy", "test token"),
           ("test", "changed_cell_accuracy", "test changed-cell"), ("test", "lm_loss", "test lm loss"),
           ("val", "arc_prize@2", "val pass@2"), ("val", "token_accuracy", "val token"),
           ("val", "changed_cell_accuracy", "val changed-cell"), ("val", "lm_loss", "val lm loss"))


def load_runs(folder: Path) -> list[dict[str, Any]]:
    """Every benchmark run JSON in ``folder`` (ValueError naming a file that is not one)."""
    runs = []
    for path in sorted(folder.glob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: cannot read ({err})") from None
        if not isinstance(rec, dict) or not str(rec.get("format", "")).startswith("hrm_fast-learn/"):
            continue
        if not rec.get("points"):
            continue
        runs.append(rec)
    return runs


def _groups(runs: list[dict[str, Any]]) -> dict[tuple[str, float], list[dict[str, Any]]]:
    out: dict[tuple[str, float], list[dict[str, Any]]] = defaultdict(list)
    for rec in runs:
        out[(rec["recipe"], float(rec["budget"]))].append(rec)
    return dict(sorted(out.items(), key=lambda kv: (kv[0][1], kv[0][0] != "baseline", kv[0][0])))


def _aligned(recs: list[dict[str, Any]], split: str, key: str, x: str) -> tuple[np.ndarray, np.ndarray]:
    """(x [P], values [seeds, P]) over the checkpoints every seed has reached; x averaged over seeds."""
    n = min(len(r["points"]) for r in recs)
    xs = np.array([[p[x] for p in r["points"][:n]] for r in recs], dtype=float)
    ys = np.array([[p[split][key] for p in r["points"][:n]] for r in recs], dtype=float)
    return xs.mean(0), ys


def draw_curves(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(PANELS), figsize=(4.2 * len(PANELS), 7.5), squeeze=False)
    for (recipe, budget), recs in _groups(runs).items():
        label = f"{recipe} @ {budget:.0e} (n={len(recs)})"
        for row, (x, scale, xlabel) in enumerate((("flops", 1.0, "training FLOPs"),
                                                  ("wall_s", 60.0, "training wall time (min, 1 thread)"))):
            for col, (split, key, title) in enumerate(PANELS):
                ax = axes[row][col]
                xv, ys = _aligned(recs, split, key, x)
                line, = ax.plot(xv / scale, ys.mean(0), marker="o", label=label)
                ax.fill_between(xv / scale, ys.min(0), ys.max(0), color=line.get_color(), alpha=0.2)
                ax.set_title(title, fontsize=10)
                ax.set_xlabel(xlabel, fontsize=9)
                ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("hrm_fast learning benchmark: ARC-AGI-1 tasks <= 10x10 (mean over seeds, band = min..max)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)


def _cell(values: np.ndarray) -> str:
    mean, spread = float(values.mean()), float(values.max() - values.min()) / 2
    return f"{mean:.4f} ± {spread:.4f}" if len(values) > 1 else f"{mean:.4f}"


def table_markdown(runs: list[dict[str, Any]]) -> str:
    head = ["recipe", "budget", "checkpoint FLOPs", "n", "train wall min", "train CPU min", *[c[2] for c in COLUMNS]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (recipe, budget), recs in _groups(runs).items():
        n = min(len(r["points"]) for r in recs)
        for i in range(n):
            pts = [r["points"][i] for r in recs]
            cells = [recipe, f"{budget:.0e}", f"{np.mean([p['flops'] for p in pts]):.2e}", str(len(recs)),
                     _cell(np.array([p["wall_s"] / 60 for p in pts])), _cell(np.array([p["cpu_s"] / 60 for p in pts]))]
            cells += [_cell(np.array([p[s][k] for p in pts], dtype=float)) for s, k, _ in COLUMNS]
            lines.append("| " + " | ".join(cells) + " |")
    # reference scores (copy the input, all black) of the first run; all runs of one suite share them
    first = next((r for r in runs if "black_token_accuracy" in r["points"][0]["test"]), runs[0])["points"][0]
    copy = ", ".join(f"{s} {first[s]['copy_token_accuracy']:.4f}" for s in SPLITS)
    black = ", ".join(f"{s} {first[s]['black_token_accuracy']:.4f} / {first[s]['black_changed_cell_accuracy']:.4f}"
                      for s in SPLITS if "black_token_accuracy" in first[s])
    seeds = sorted({(r["recipe"], f"{float(r['budget']):.0e}", r["seed"], r.get("views", "all"),
                     r.get("finished", False)) for r in runs})
    notes = ["", "mean ± spread over seeds (spread = (max - min) / 2); n = seeds. pass@k: ARC Prize score (mean over "
             "tasks of the solved fraction of test outputs) with voting over the augmented views (every view, or at "
             "most `views` per test input). Cell metrics pooled over the views (see bench/learn_eval.py); copying "
             f"the input scores token accuracy {copy} and changed-cell accuracy 0"
             + (f"; predicting black everywhere scores token / changed-cell accuracy {black}" if black else "")
             + ". Wall and CPU time: training only (measurements excluded), one CPU thread.",
             "", "runs: " + ", ".join(f"{r} {b} seed {s} views {v}{'' if f else ' (unfinished)'}"
                                 for r, b, s, v, f in seeds)]
    return "\n".join(lines + notes) + "\n"


def write_report(folder: Path) -> tuple[Path, Path]:
    """Draw ``curves.png`` and write ``table.md`` in ``folder`` from its run JSONs; returns both paths."""
    runs = load_runs(folder)
    if not runs:
        raise ValueError(f"{folder}: no learning-benchmark run JSONs with measured checkpoints")
    png, table = folder / "curves.png", folder / "table.md"
    draw_curves(runs, png)
    write_text_atomic(table, table_markdown(runs))
    return png, table
