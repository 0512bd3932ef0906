"""A self-contained HTML report of an evaluation (no network: inline CSS and JS, grids drawn on canvas).

Top: the scores table (three scorings x pass@k) and run facts. Below: one card per test input with the
input, the expected output, attempt 1 and attempt 2 (canonical ARC palette), their votes and mean
sigmoid(q_halt); buttons filter solved / unsolved (solved = right answer within the two attempts).
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
    unknown = (
        f'<span class="badge unknown">{item.num_unknown} views not run: puzzle unknown to the checkpoint</span> '
        if item.num_unknown else ""
    )
    return (
        f'<section class="item {status}" data-task="{tid}">'
        f'<h3><span class="badge">{status}</span> {unknown}{tid} · test {item.test_index}</h3>'
        f'<div class="grids">{"".join(figs)}</div><p class="meta">{html.escape(meta)}</p></section>'
    )


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


_CSS = """
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
// report.html#solved / #unsolved opens filtered
if (['all','solved','unsolved'].includes(location.hash.slice(1))) show(location.hash.slice(1));
"""


def render_report(
    items: Sequence[ReportItem],
    pass_k: Mapping[str, Mapping[str, float]],
    facts: Mapping[str, object],
    title: str = "hrm_fast evaluation",
) -> str:
    """The report page as a string. ``pass_k``: ``{scoring: {"pass@k": fraction}}`` (score.pass_at_k);
    ``facts``: label -> value lines shown under the table (checkpoint, split, views, time, ...)."""
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
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{_summary_html(pass_k)}<dl class=\"facts\">{facts_html}</dl>"
        f"{controls}<div id=\"items\">{body}</div>"
        f"<script>{_JS % json.dumps(list(PALETTE))}</script></body></html>"
    )


def write_report(path: str | Path, *args, **kwargs) -> None:
    """render_report(...) written atomically to ``path``."""
    write_text_atomic(path, render_report(*args, **kwargs))
