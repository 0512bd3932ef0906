"""A self-contained HTML report of an evaluation (no network: inline CSS and JS, grids drawn on canvas).

Top: the scores table (three scorings x pass@k) and run facts (checkpoint, its step and run). Then the
summary: matplotlib charts embedded as PNG ``data:`` URIs (accuracy by concept, source and grid size, the
calibration of the vote winner) and the breakdown tables. Below: one card per test input with the task's
demonstration pairs (collapsed), the input, the expected output, attempt 1 and attempt 2 (canonical ARC
palette), their votes and mean sigmoid(q_halt); buttons filter solved / unsolved (solved = right answer
within the two attempts).
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hrm_fast.eval.breakdown import NO_CONCEPT, OutputRow
from hrm_fast.eval.submission import write_text_atomic
from hrm_fast.eval.vote import Candidate, rank_of

# The canonical ARC colours 0..9 (fchollet/ARC-AGI testing interface, HRM arc_eval notebook).
PALETTE = (
    "#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00",
    "#AAAAAA", "#F012BE", "#FF851B", "#7FDBFF", "#870C25",
)  # fmt: skip


@dataclass
class ReportItem:
    """Everything shown for one test input."""

    task_id: str
    test_index: int
    input: np.ndarray  # uint8 [H, W], original orientation
    expected: np.ndarray | None  # uint8 [H, W] or None when unknown
    candidates: Sequence[Candidate]  # ranked, best first
    num_views: int
    num_empty: int
    demos: Sequence[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # the task's (input, output)
    source: str = ""
    concept: str = ""
    num_unknown: int = 0  # views not run: their puzzle is unknown to the checkpoint (another dataset build)

    @property
    def correct_rank(self) -> int | None:
        """0-based rank of the expected grid among the candidates, None if absent or unknown."""
        return None if self.expected is None else rank_of(list(self.candidates), self.expected)

    @property
    def solved(self) -> bool:
        r = self.correct_rank
        return r is not None and r < 2


def _encode_grid(grid: np.ndarray | None) -> str:
    """Compact attribute form "W:cells" (row-major digits), or "" for no grid."""
    if grid is None or grid.size == 0:
        return ""
    return f"{grid.shape[1]}:" + "".join(str(int(v)) for v in grid.reshape(-1))


def _figure(label: str, grid: np.ndarray | None, note: str = "", cls: str = "") -> str:
    shape = f" {grid.shape[0]}×{grid.shape[1]}" if grid is not None and grid.size else " (none)"
    return (
        f'<figure class="{cls}"><canvas data-g="{_encode_grid(grid)}"></canvas>'
        f"<figcaption><b>{html.escape(label)}</b>{shape}<br>{html.escape(note)}</figcaption></figure>"
    )


def _item_html(item: ReportItem) -> str:
    cands = list(item.candidates)
    rank = item.correct_rank
    total = max(item.num_views, 1)
    figs = [_figure("input", item.input), _figure("expected", item.expected)]
    for j in range(2):
        if j < len(cands):
            c = cands[j]
            ok = rank == j
            note = f"votes {c.votes}/{item.num_views} · q {c.mean_q_halt:.3f}"
            figs.append(_figure(f"attempt {j + 1}", c.grid, note, "ok" if ok else "bad"))
        else:
            note = "no answer (submission holds [[0]])" if j == 0 else "no other answer (submission repeats attempt 1)"
            figs.append(_figure(f"attempt {j + 1}", None, note, "bad"))
    status = "solved" if item.solved else "unsolved"
    rank_txt = "not among candidates" if rank is None else f"rank {rank + 1} of {len(cands)}"
    if item.expected is None:
        rank_txt = "no expected output"
    others = ", ".join(f"{c.votes}" for c in cands[2:8]) + (" …" if len(cands) > 8 else "")
    meta = (
        f"views {item.num_views} · distinct answers {len(cands)} · empty crops {item.num_empty} "
        f"({100 * item.num_empty / total:.0f}%) · right answer: {rank_txt}"
        + (f" · votes of answers 3+: {others}" if others else "")
    )
    tid = html.escape(item.task_id)
    tags = "".join(f'<span class="tag">{html.escape(t)}</span>' for t in (item.concept, item.source) if t)
    unknown = (
        f'<span class="badge unknown">{item.num_unknown} views not run: puzzle unknown to the checkpoint</span> '
        if item.num_unknown else ""
    )
    return (
        f'<section class="item {status}" data-task="{tid}" data-concept="{html.escape(item.concept)}">'
        f'<h3><span class="badge">{status}</span> {unknown}{tid} · test {item.test_index} {tags}</h3>'
        f'{_demos_html(item)}'
        f'<div class="grids">{"".join(figs)}</div><p class="meta">{html.escape(meta)}</p></section>'
    )


def _demos_html(item: ReportItem) -> str:
    """The task's demonstration pairs in a collapsed <details>."""
    if not item.demos:
        return ""
    pairs = "".join(
        f'<div class="pair">{_figure(f"demo {j + 1} input", inp)}<span class="arrow">→</span>'
        f'{_figure(f"demo {j + 1} output", out)}</div>'
        for j, (inp, out) in enumerate(item.demos)
    )
    n = len(item.demos)
    return (f'<details class="demos"><summary>{n} demonstration pair{"s" if n != 1 else ""}</summary>'
            f'<div class="grids">{pairs}</div></details>')


def _chart(name: str, fig: Any, alt: str) -> str:
    from hrm_fast.eval.charts import png_data_uri

    return f'<img class="chart" data-chart="{name}" alt="{html.escape(alt)}" src="{png_data_uri(fig)}">'


def _groups_table(title: str, groups: Mapping[str, Mapping[str, Any]]) -> str:
    ks = [k for k in next(iter(groups.values()))["kaggle"]]
    head = "".join(f"<th>kaggle {html.escape(k)}</th>" for k in ks)
    rows = "".join(
        f"<tr><th>{html.escape(g)}</th><td>{e['tasks']}</td><td>{e['test_outputs']}</td>"
        + "".join(f"<td>{100 * e['kaggle'][k]:.1f}%</td>" for k in ks)
        + f"<td>{100 * e['arc_prize']['pass@2']:.1f}%</td><td>{100 * e['all_or_nothing']['pass@2']:.1f}%</td></tr>"
        for g, e in groups.items()
    )
    return (f'<table class="summary groups"><caption>{html.escape(title)}</caption><tr><th></th><th>tasks</th>'
            f"<th>test outputs</th>{head}<th>arc_prize pass@2</th><th>all_or_nothing pass@2</th></tr>{rows}</table>")


def summary_html(rows: Sequence[OutputRow], groups: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """The summary section: charts (by concept when the data has concepts, by source when several, by grid
    size, calibration) and a table per grouping. ``groups``: ``{"by_concept": breakdown, ...}``."""
    from hrm_fast.eval.charts import accuracy_bars, calibration

    charts = []
    concepts = {k: v for k, v in groups.get("by_concept", {}).items() if k != NO_CONCEPT}
    if concepts:
        # weakest concepts first: that is where to look (and what to train more); tasks without one are left out
        ordered = dict(sorted(concepts.items(), key=lambda kv: (kv[1]["kaggle"]["pass@2"], kv[0])))
        charts.append(_chart("concept", accuracy_bars(ordered, "accuracy by concept (weakest first)"),
                             "accuracy by concept"))
    if len(groups.get("by_source", {})) > 1:
        charts.append(_chart("source", accuracy_bars(groups["by_source"], "accuracy by source"), "accuracy by source"))
    if groups.get("by_size"):
        charts.append(_chart("size", accuracy_bars(groups["by_size"], "accuracy by grid size (larger side)",
                                                   horizontal=False), "accuracy by grid size"))
    if rows:
        charts.append(_chart("calibration", calibration(rows), "calibration of the vote winner"))
    names = {"by_concept": "by concept", "by_source": "by source", "by_size": "by grid size (larger side of "
             "test input and expected output)", "by_shape": "by shape (test input vs expected output)"}
    tables = "".join(_groups_table(names.get(k, k), v) for k, v in groups.items() if v)
    return (f'<section id="summary"><h2>Summary</h2><div class="charts">{"".join(charts)}</div>'
            f'<details class="tables"><summary>breakdown tables</summary>{tables}</details></section>')


def _summary_html(pass_k: Mapping[str, Mapping[str, float]]) -> str:
    ks = list(next(iter(pass_k.values())).keys())
    head = "".join(f"<th>{html.escape(k)}</th>" for k in ks)
    names = {
        "kaggle": "Kaggle (micro over test outputs)",
        "arc_prize": "ARC Prize (per-task mean)",
        "all_or_nothing": "All-or-nothing per task (HRM)",
    }
    rows = "".join(
        f"<tr><th>{html.escape(names.get(s, s))}</th>"
        + "".join(f"<td>{100 * v:.2f}%</td>" for v in vals.values())
        + "</tr>"
        for s, vals in pass_k.items()
    )
    return f'<table class="summary"><tr><th>scoring</th>{head}</tr>{rows}</table>'


CSS = """
body{font-family:system-ui,sans-serif;margin:16px;background:#fafafa;color:#222}
h1{font-size:20px;margin:0 0 8px}
table.summary{border-collapse:collapse;margin:8px 0}
table.summary th,table.summary td{border:1px solid #ccc;padding:4px 10px;text-align:right}
table.summary th:first-child{text-align:left}
dl.facts{display:grid;grid-template-columns:max-content auto;gap:2px 12px;font-size:13px}
dl.facts dt{color:#666} dl.facts dd{margin:0}
.controls{position:sticky;top:0;background:#fafafa;padding:6px 0;border-bottom:1px solid #ddd;z-index:1}
.controls button{margin-right:6px;padding:4px 10px;border:1px solid #888;background:#fff;border-radius:4px}
.controls button.on{background:#333;color:#fff}
section.item{background:#fff;border:1px solid #ddd;border-radius:6px;margin:10px 0;padding:8px}
section.item h3{font-size:14px;margin:0 0 6px}
.badge{font-size:11px;padding:1px 6px;border-radius:3px;color:#fff;background:#c0392b}
.solved .badge{background:#27ae60} .badge.unknown{background:#e67e22}
.grids{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
figure{margin:0;padding:4px;border:2px solid transparent;border-radius:4px}
figure.ok{border-color:#27ae60} figure.bad{border-color:#e74c3c33}
figcaption{font-size:12px;color:#444;margin-top:3px}
canvas{display:block;background:#555}
p.meta{font-size:12px;color:#555;margin:6px 0 0}
h2{font-size:17px;margin:14px 0 6px}
.charts{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
img.chart{background:#fff;border:1px solid #ddd;border-radius:6px;max-width:100%}
table.groups{font-size:13px;margin:10px 16px 10px 0;display:inline-table;vertical-align:top}
table.groups caption{text-align:left;font-weight:bold;padding:2px 0}
.tag{font-size:11px;font-weight:normal;padding:1px 6px;margin-left:4px;border-radius:3px;background:#eee;color:#444}
details.demos{margin:0 0 8px;font-size:12px} details.demos summary{cursor:pointer;color:#555}
.pair{display:flex;align-items:center;gap:2px;margin-right:10px} .arrow{font-size:18px;color:#888}
body.hide-solved .item.solved, body.hide-unsolved .item.unsolved{display:none}
"""

_JS = """
const PALETTE = %s;
function draw(cv){
  const s = cv.dataset.g; if(!s){cv.width=40;cv.height=40;return;}
  const i = s.indexOf(':'), w = +s.slice(0,i), cells = s.slice(i+1), h = cells.length / w;
  const c = Math.max(4, Math.min(16, Math.floor(200 / Math.max(w, h))));
  cv.width = w * c + 1; cv.height = h * c + 1;
  const g = cv.getContext('2d');
  for(let y=0;y<h;y++) for(let x=0;x<w;x++){
    g.fillStyle = PALETTE[+cells[y*w+x]]; g.fillRect(x*c+1, y*c+1, c-1, c-1);
  }
}
document.querySelectorAll('canvas').forEach(draw);
function show(which){
  document.body.classList.toggle('hide-solved', which==='unsolved');
  document.body.classList.toggle('hide-unsolved', which==='solved');
  document.querySelectorAll('.controls button').forEach(b=>b.classList.toggle('on', b.dataset.f===which));
}
document.querySelectorAll('.controls button').forEach(b=>b.addEventListener('click',()=>{
  show(b.dataset.f); history.replaceState(null, '', '#' + b.dataset.f);
}));
// mark each chart once decoded (checked by the headless-browser test)
window.addEventListener('load', () => document.querySelectorAll('img.chart').forEach(
  i => i.setAttribute('data-rendered', i.naturalWidth + 'x' + i.naturalHeight)));
// report.html#solved / #unsolved opens filtered
if (['all','solved','unsolved'].includes(location.hash.slice(1))) show(location.hash.slice(1));
"""


def render_report(
    items: Sequence[ReportItem],
    pass_k: Mapping[str, Mapping[str, float]],
    facts: Mapping[str, object],
    title: str = "hrm_fast evaluation",
    rows: Sequence[OutputRow] = (),
    groups: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
) -> str:
    """The report page as a string. ``pass_k``: ``{scoring: {"pass@k": fraction}}`` (score.pass_at_k);
    ``facts``: label -> value lines shown under the table (checkpoint, step, run, split, views, time, ...);
    ``rows`` / ``groups``: the per test output rows and breakdowns for the summary (none: no summary)."""
    n_solved = sum(1 for it in items if it.solved)
    n = len(items)
    facts_html = "".join(f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(str(v))}</dd>" for k, v in facts.items())
    controls = (
        '<div class="controls">'
        f'<button data-f="all" class="on">all ({n})</button>'
        f'<button data-f="solved">solved ({n_solved})</button>'
        f'<button data-f="unsolved">unsolved ({n - n_solved})</button>'
        '<span style="font-size:12px;color:#666">solved = right answer in attempt 1 or 2</span></div>'
    )
    body = "".join(_item_html(it) for it in items)
    summary = summary_html(rows, groups or {}) if rows or groups else ""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{_summary_html(pass_k)}<dl class=\"facts\">{facts_html}</dl>"
        f"{summary}{controls}<div id=\"items\">{body}</div>"
        f"<script>{_JS % json.dumps(list(PALETTE))}</script></body></html>"
    )


def write_report(path: str | Path, *args, **kwargs) -> None:
    """render_report(...) written atomically to ``path``."""
    write_text_atomic(path, render_report(*args, **kwargs))
