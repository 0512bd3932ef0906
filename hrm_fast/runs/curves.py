"""Training curves of one or more runs as one matplotlib figure: loss, token / exact accuracy, validation metrics
and learning rate, each against the optimizer step (left) and the cumulative training FLOPs (right).

Runs are overlaid (one colour per run, one line style per metric). FLOPs = step x ``hrm_fast.flops.step_flops``
of the run's ``config.yaml`` (model FLOPs of the training segments; validation and ARC evaluation excluded).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter

from hrm_fast.config import ConfigError, load_config
from hrm_fast.flops import step_flops
from hrm_fast.runs.catalog import finite
from hrm_fast.training.runlog import read_metrics

# (panel title, y label, metrics drawn in it)
PANELS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("loss", "LM loss", ("train/lm_loss", "val/lm_loss")),
    ("training accuracy", "accuracy", ("train/accuracy", "train/exact_accuracy")),
    ("validation", "accuracy", ("val/accuracy", "val/exact_accuracy", "eval/kaggle@2")),
    ("learning rate", "learning rate", ("train/lr",)),
)
STYLES = ("-", "--", ":", "-.")
X_AXES = (("step", "step"), ("flops", "training FLOPs (model, cumulative)"))


class RunError(ValueError):
    """A run folder cannot be plotted; the message names the folder or file."""


@dataclass
class RunCurves:
    """One run's metrics: ``series[name] = (steps, values)`` with non-finite values dropped."""

    name: str
    path: Path
    series: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    flops_per_step: float | None = None  # None without a readable config.yaml


def load_run(path: str | Path, name: str | None = None) -> RunCurves:
    """The curves of the run folder ``path`` (its ``metrics.jsonl`` and ``config.yaml``)."""
    path = Path(path)
    metrics = path / "metrics.jsonl"
    if not metrics.is_file():
        raise RunError(f"{metrics}: missing (is {path} a run folder of python -m train.run?)")
    try:
        records = read_metrics(metrics)
    except ValueError as e:
        raise RunError(f"{metrics}: not JSON lines ({e})") from e
    run = RunCurves(name or path.name, path)
    for rec in records:
        step = rec.get("step")
        if step is None:
            continue
        for key, value in rec.items():
            v = finite(value) if key not in ("step", "time") else None
            if v is not None:
                steps, values = run.series.setdefault(key, ([], []))
                steps.append(int(step))
                values.append(v)
    if (path / "config.yaml").is_file():
        try:
            run.flops_per_step = step_flops(load_config(str(path / "config.yaml")))
        except ConfigError:
            run.flops_per_step = None
    return run


def _names(paths: Sequence[Path]) -> list[str]:
    """Folder names, or the full paths when two runs share a name."""
    names = [p.name for p in paths]
    return names if len(set(names)) == len(names) else [str(p) for p in paths]


def curves_figure(runs: Sequence[str | Path | RunCurves]) -> Figure:
    """The figure: one row per panel of PANELS, columns x = step and x = training FLOPs; runs overlaid."""
    paths = [r.path if isinstance(r, RunCurves) else Path(r) for r in runs]
    loaded = [r if isinstance(r, RunCurves) else load_run(r, n) for r, n in zip(runs, _names(paths))]
    fig = Figure(figsize=(13, 3.0 * len(PANELS) + 0.6), layout="constrained")
    axes = fig.subplots(len(PANELS), len(X_AXES), squeeze=False)
    colours = [f"C{i % 10}" for i in range(len(loaded))]
    for row, (title, ylabel, metrics) in enumerate(PANELS):
        present = [m for m in metrics if any(m in r.series for r in loaded)]
        for col, (kind, xlabel) in enumerate(X_AXES):
            ax = axes[row][col]
            for run, colour in zip(loaded, colours):
                if kind == "flops" and run.flops_per_step is None:
                    continue
                for metric in present:
                    if metric not in run.series:
                        continue
                    steps, values = run.series[metric]
                    xs = steps if kind == "step" else [s * run.flops_per_step for s in steps]
                    style = STYLES[metrics.index(metric) % len(STYLES)]
                    marker = "o" if len(steps) < 30 else None
                    ax.plot(xs, values, style, color=colour, marker=marker, markersize=3, lw=1.2,
                            label=f"{run.name}: {metric}")
            ax.set_title(title + ("" if kind == "step" else " (vs FLOPs)"), fontsize=10)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            if kind == "flops":  # runs of different sizes differ by orders of magnitude
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())
            if present:  # which line style is which metric (colours are runs: the figure legend)
                handles = [Line2D([], [], color="#333333", ls=STYLES[metrics.index(m) % len(STYLES)], label=m)
                           for m in present]
                ax.legend(handles=handles, fontsize=7, loc="best")
            else:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="#999999")
    no_flops = [r.name for r in loaded if r.flops_per_step is None]
    fig.legend(handles=[Line2D([], [], color=c, lw=2, label=r.name) for r, c in zip(loaded, colours)],
               loc="outside upper center", ncols=min(len(loaded), 4), fontsize=9, frameon=False)
    if no_flops:
        fig.text(0.99, 0.0, "no config.yaml (no FLOPs axis): " + ", ".join(no_flops), ha="right", fontsize=7)
    return fig


def write_curves(runs: Sequence[str | Path], out: str | Path, dpi: int = 100) -> Path:
    """:func:`curves_figure` of ``runs`` saved as a PNG at ``out`` (written beside, then renamed)."""
    out = Path(out)
    fig = curves_figure(runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    fig.savefig(tmp, format="png", dpi=dpi)
    tmp.replace(out)
    return out
