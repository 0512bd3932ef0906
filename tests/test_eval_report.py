"""report.html: self-contained, one card per test input (demonstrations collapsed), canonical palette, a summary
of matplotlib charts embedded as PNG data URIs; renders in headless Chromium."""

import base64
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from hrm_fast.data.augment import Augmentation
from hrm_fast.data.encode import encode_grid
from hrm_fast.eval.breakdown import TaskInfo
from hrm_fast.eval.report import PALETTE
from hrm_fast.eval.results import decode_into, finalize
from hrm_fast.eval.vote import VoteBox

CANVAS = 10
CANONICAL = ["#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00",
             "#AAAAAA", "#F012BE", "#FF851B", "#7FDBFF", "#870C25"]  # fmt: skip


def build_report(out: Path) -> dict:
    """Three tasks: one solved, one right only as attempt 2 (solved), one unsolved; 4 test inputs."""
    rng = np.random.default_rng(0)
    tasks, rows = {}, []
    for t, n_tests in enumerate([1, 2, 1]):
        tid = f"task{t:04d}"
        tests = []
        for i in range(n_tests):
            out_grid = rng.integers(0, 10, size=(3 + i, 4)).tolist()
            tests.append({"input": rng.integers(0, 10, size=(5, 2 + t)).tolist(), "output": out_grid})
            wrong = (np.asarray(out_grid) + 1) % 10
            answers = {0: [out_grid] * 3, 1: [wrong.tolist()] * 2 + [out_grid], 2: [wrong.tolist()] * 3}[t]
            rows += [(tid, i, np.asarray(a)) for a in answers]
        demos = [{"input": [[1, 2]], "output": [[2, 1]]}] if t == 0 else []  # one demonstration pair in task 0
        tasks[tid] = {"train": demos, "test": tests}
    votes = VoteBox()
    aug = Augmentation(1, (0, 2, 3, 4, 5, 6, 7, 8, 9, 1))
    tokens = np.stack([encode_grid(aug.apply(g), CANVAS) for _, _, g in rows])
    decode_into(votes, tokens, [r[0] for r in rows], [aug] * len(rows), [r[1] for r in rows],
                np.linspace(0.1, 0.9, len(rows)), CANVAS)  # fmt: skip
    info = {"task0000": TaskInfo("corpus", "AboveBelow"), "task0001": TaskInfo("corpus", "Count"),
            "task0002": TaskInfo("arc-agi-1", "")}
    return finalize(votes, tasks, out, facts={"checkpoint": "synthetic <test>", "step": 1234, "run": "runs/x"},
                    task_info=info)


def test_report_is_self_contained_and_complete(tmp_path):
    scores = build_report(tmp_path)
    html = (tmp_path / "report.html").read_text()
    assert [p.upper() for p in PALETTE] == CANONICAL
    for colour in CANONICAL:
        assert colour in html
    charts = re.findall(r'<img class="chart" data-chart="(\w+)" alt="[^"]*" src="data:image/png;base64,([^"]+)"', html)
    assert [c for c, _ in charts] == ["concept", "source", "size", "calibration"]
    for _, data in charts:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    inline = re.sub(r'src="data:image/png;base64,[^"]+"', "", html)
    assert not re.search(r"https?://|\bsrc=|\bhref=|@import|url\(", inline), "report must not load anything"
    assert html.count('<section class="item solved"') == 3
    assert html.count('<section class="item unsolved"') == 1
    # input, expected, attempt 1, attempt 2 per test input, plus task0000's demonstration pair (collapsed)
    assert html.count("<canvas") == 4 * 4 + 2
    assert html.count('<details class="demos">') == 1 and "1 demonstration pair<" in html
    assert '<span class="tag">AboveBelow</span>' in html
    assert "<dt>step</dt><dd>1234</dd>" in html and "<dt>run</dt><dd>runs/x</dd>" in html
    assert "breakdown tables" in html and "by concept" in html
    assert "solved (3)" in html and "unsolved (1)" in html
    assert "synthetic &lt;test&gt;" in html  # facts are escaped
    assert scores["kaggle"]["pass@2"] == 3 / 4 and scores["all_or_nothing"]["pass@2"] == 2 / 3
    assert "75.00%" in html  # the summary table
    assert "votes 2/3" in html and "q 0." in html


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def run_chromium(exe: str, url: str, *extra: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
             "--window-size=1200,1600", *extra, url],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip


@pytest.mark.skipif(chromium() is None, reason="chromium not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(tmp_path):
    build_report(tmp_path)
    url = (tmp_path / "report.html").as_uri()
    exe = chromium()
    # The script ran: every grid's canvas got its drawn size; the two "no second candidate" slots are 40x40.
    dom = run_chromium(exe, url, "--dump-dom").stdout
    sizes = re.findall(r'<canvas data-g="(\d+):(\d+)" width="(\d+)" height="(\d+)"', dom)
    assert len(sizes) == 14 + 2, dom[:500]  # the demonstration pair is drawn too (inside the closed <details>)
    for cols, cells, w, h in sizes:  # square cells of >= 4 px (+1 px grid line)
        cols, rows = int(cols), len(cells) // int(cols)
        assert (int(w) - 1) % cols == 0 and (int(w) - 1) // cols == (int(h) - 1) / rows >= 4, (cols, rows, w, h)
    assert len(re.findall(r'<canvas data-g="" width="40" height="40"', dom)) == 2
    # The summary charts decoded: the page's load handler records each PNG's natural size.
    rendered = dict(re.findall(r'<img class="chart" data-chart="(\w+)"[^>]*data-rendered="(\d+x\d+)"', dom))
    assert sorted(rendered) == ["calibration", "concept", "size", "source"], dom[:2000]
    assert all(int(w) > 200 and int(h) > 150 for w, h in (v.split("x") for v in rendered.values())), rendered
    # The filter works: #unsolved hides the solved cards (the URL hash selects the filter on load).
    dom = run_chromium(exe, url + "#unsolved", "--dump-dom").stdout
    assert re.search(r'<body class="[^"]*hide-solved', dom) and "hide-unsolved" not in dom.split("<body")[1][:80]
    shot = tmp_path / "report.png"
    run_chromium(exe, url, f"--screenshot={shot}")
    assert shot.exists() and shot.stat().st_size > 10_000
    Image = pytest.importorskip("PIL.Image")
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)
    seen = {tuple(p) for p in np.unique(pixels, axis=0)}
    drawn = [c for c in CANONICAL if tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) in seen]
    assert len(drawn) >= 8, f"palette colours on screen: {drawn}"
