"""Matplotlib charts of an evaluation (accuracy by group, calibration, score deltas) and their embedding
as base64 PNG ``data:`` URIs, so HTML pages stay one self-contained file.

Figures are built with ``matplotlib.figure.Figure`` (the Agg canvas, no pyplot state); every function
returns the Figure so tests can check axes and data instead of pixels.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from hrm_fast.eval.breakdown import OutputRow

PASS1, PASS2 = "#9ecae1", "#3182bd"  # light / dark blue: pass@1, pass@2


def png_data_uri(fig: Figure, dpi: int = 100) -> str:
    """``data:image/png;base64,...`` of ``fig`` (tight bounding box)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def short_label(name: str) -> str:
    """A group name for an axis: the last two parts of a path (``ConceptARC/corpus``), else the name."""
    parts = [p for p in name.replace("\\", "/").split("/") if p]
    return "/".join(parts[-2:]) if len(parts) > 2 else name


def accuracy_bars(groups: Mapping[str, Mapping[str, Any]], title: str, horizontal: bool = True) -> Figure:
    """Kaggle pass@1 and pass@2 (fraction of test outputs solved) per group, labelled ``solved/outputs``.

    ``groups``: a ``scores.json`` breakdown (``breakdown.breakdown``); horizontal bars, one row per group, in
    the given order (vertical bars with ``horizontal=False``, for ordered groups such as size buckets)."""
    names = list(groups)
    shown = [short_label(g) for g in names]
    p1 = np.array([groups[g]["kaggle"]["pass@1"] for g in names]) * 100
    p2 = np.array([groups[g]["kaggle"]["pass@2"] for g in names]) * 100
    labels = [f"{groups[g]['solved_outputs']['pass@2']}/{groups[g]['test_outputs']}" for g in names]
    pos = np.arange(len(names))
    if horizontal:
        fig = Figure(figsize=(5.0, 1.2 + 0.3 * len(names)), layout="constrained")
        ax = fig.add_subplot()
        ax.barh(pos + 0.2, p1, 0.4, color=PASS1, label="pass@1")
        ax.barh(pos - 0.2, p2, 0.4, color=PASS2, label="pass@2")
        ax.set_yticks(pos, shown)
        ax.invert_yaxis()
        ax.set_xlim(0, 112)
        ax.set_xlabel("test outputs solved (%)")
        for y, x, text in zip(pos, p2, labels):
            ax.text(min(x, 100) + 1, y - 0.2, text, va="center", fontsize=7)
    else:
        fig = Figure(figsize=(max(3.6, 0.8 * len(names) + 1.4), 3.2), layout="constrained")
        ax = fig.add_subplot()
        ax.bar(pos - 0.2, p1, 0.4, color=PASS1, label="pass@1")
        ax.bar(pos + 0.2, p2, 0.4, color=PASS2, label="pass@2")
        ax.set_xticks(pos, shown)
        ax.set_ylim(0, 110)
        ax.set_ylabel("test outputs solved (%)")
        for x, y, text in zip(pos, p2, labels):
            ax.text(x + 0.2, min(y, 100) + 2, text, ha="center", fontsize=7)
    ax.set_title(title, fontsize=10)
    fig.legend(fontsize=7, loc="outside lower center", ncols=2, frameon=False)
    ax.grid(axis="x" if horizontal else "y", alpha=0.3)
    return fig


def calibration(rows: Sequence[OutputRow], bins: int = 10) -> Figure:
    """Reliability of the two confidences of the winning answer: its vote share and its mean sigmoid(q_halt).

    Per confidence bin: the fraction of winners that are right (pass@1, line, left axis) and how many test
    outputs fall in the bin (grey bars, right axis); the diagonal is perfect calibration. Test outputs
    without any candidate are left out."""
    fig = Figure(figsize=(8.0, 3.3), layout="constrained")
    with_answer = [r for r in rows if r.candidates]
    correct = np.array([r.solved_at(1) for r in with_answer], dtype=float)
    edges = np.linspace(0, 1, bins + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    for i, (name, values) in enumerate((
        ("winner's vote share", [r.winner_vote_share for r in with_answer]),
        ("winner's q-halt confidence (mean sigmoid)", [r.winner_q_halt for r in with_answer]),
    )):  # fmt: skip
        ax = fig.add_subplot(1, 2, i + 1)
        conf = np.asarray(values, dtype=float)
        which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
        counts = np.bincount(which, minlength=bins)
        hits = np.bincount(which, weights=correct, minlength=bins)
        counts_ax = ax.twinx()
        counts_ax.bar(centers, counts, width=0.9 / bins, color="#cccccc", zorder=0)
        counts_ax.set_ylabel("test outputs", fontsize=8, color="#777777")
        ax.set_zorder(counts_ax.get_zorder() + 1)
        ax.patch.set_visible(False)
        ax.plot([0, 1], [0, 1], "--", color="#999999", lw=1, label="perfectly calibrated")
        keep = counts > 0
        ax.plot(centers[keep], hits[keep] / counts[keep], "o-", color=PASS2, label="fraction right (pass@1)")
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(name)
        ax.set_ylabel("winner right")
        ax.set_title(f"{name}: {len(conf)} test outputs", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("calibration of the vote winner", fontsize=10)
    return fig


def delta_bars(deltas: Mapping[str, float], title: str) -> Figure:
    """Horizontal bars of score changes in percentage points per group (green up, red down)."""
    names = list(deltas)
    vals = np.array([deltas[g] for g in names]) * 100
    fig = Figure(figsize=(5.5, 1.2 + 0.3 * max(len(names), 1)), layout="constrained")
    ax = fig.add_subplot()
    pos = np.arange(len(names))
    ax.barh(pos, vals, color=["#27ae60" if v > 0 else "#c0392b" if v < 0 else "#999999" for v in vals])
    ax.set_yticks(pos, [short_label(g) for g in names])
    ax.invert_yaxis()
    ax.axvline(0, color="#333333", lw=0.8)
    lim = max(5.0, float(np.abs(vals).max()) * 1.15) if len(vals) else 5.0
    ax.set_xlim(-lim, lim)
    ax.set_xlabel("change in test outputs solved at pass@2 (percentage points)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return fig
