"""python -m hrm_fast.eval.compare: an evaluation against itself shows no change; against another, the gained and
lost test outputs and the per-concept deltas agree with the two evaluations' own scores."""

import json

import numpy as np
import pytest

from hrm_fast.data.augment import Augmentation
from hrm_fast.data.encode import encode_grid
from hrm_fast.eval.breakdown import NO_CONCEPT, TaskInfo
from hrm_fast.eval.compare import compare_rows, load_eval, main
from hrm_fast.eval.results import decode_into, finalize
from hrm_fast.eval.vote import VoteBox

CANVAS = 8
CONCEPTS = ["AboveBelow", "Count", ""]


def evaluation(out, solved: set[tuple[str, int]]) -> dict:
    """Six tasks (two per concept, the last without one), two test inputs each; ``solved`` test inputs get
    the right answer from 3 views, the others a wrong one."""
    rng = np.random.default_rng(0)
    tasks, info, rows = {}, {}, []
    for t in range(6):
        tid = f"t{t}"
        tests = []
        for i in range(2):
            truth = rng.integers(0, 10, size=(2 + t % 3, 3))
            tests.append({"input": truth.tolist(), "output": truth.tolist()})
            answer = truth if (tid, i) in solved else (truth + 1) % 10
            rows += [(tid, i, answer)] * 3
        tasks[tid] = {"train": [{"input": [[1]], "output": [[1]]}], "test": tests}
        info[tid] = TaskInfo("src", CONCEPTS[t // 2])
    votes = VoteBox()
    ident = Augmentation(0, tuple(range(10)))
    tokens = np.stack([encode_grid(g, CANVAS) for _, _, g in rows])
    decode_into(votes, tokens, [r[0] for r in rows], [ident] * len(rows), [r[1] for r in rows],
                np.full(len(rows), 0.7), CANVAS)  # fmt: skip
    return finalize(votes, tasks, out, facts={"checkpoint": f"ckpt-{out.name}", "step": 5}, task_info=info)


ALL = {(f"t{t}", i) for t in range(6) for i in range(2)}


def test_an_evaluation_against_itself_shows_no_change(tmp_path, capsys):
    a = tmp_path / "a"
    evaluation(a, ALL - {("t0", 1), ("t3", 0)})
    cmp = compare_rows(load_eval(a), load_eval(a))
    assert cmp.unchanged and not cmp.gained and not cmp.lost and cmp.common == 12
    assert all(va == vb for va, vb in cmp.totals.values())
    assert all(va == vb for groups in cmp.groups.values() for _, va, vb in groups.values())
    assert main([str(a), str(a), "--html", str(tmp_path / "same.html")]) == 0
    text = capsys.readouterr().out
    assert "no change" in text and "gained (solved in B, not in A): 0" in text and "(+0.00 pp)" in text
    assert "(-" not in text and "(+0.00 pp)" in text
    page = (tmp_path / "same.html").read_text()
    assert "no change" in page and 'src="data:image/png;base64,' in page


def test_gained_and_lost_match_the_score_deltas(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    sa = evaluation(a, ALL - {("t0", 1), ("t3", 0), ("t4", 1)})
    sb = evaluation(b, ALL - {("t0", 0), ("t0", 1), ("t2", 0)})  # gains t3/0, t4/1; loses t0/0, t2/0
    cmp = compare_rows(load_eval(a), load_eval(b))
    assert {(r.task, r.test_index) for r in cmp.gained} == {("t3", 0), ("t4", 1)}
    assert {(r.task, r.test_index) for r in cmp.lost} == {("t0", 0), ("t2", 0)}
    for s, (va, vb) in cmp.totals.items():
        assert (va, vb) == (sa[s]["pass@2"], sb[s]["pass@2"])
    for name, (n, va, vb) in cmp.groups["concept"].items():
        assert n == 4
        assert (va, vb) == (sa["by_concept"][name]["kaggle"]["pass@2"], sb["by_concept"][name]["kaggle"]["pass@2"])
    assert cmp.groups["concept"]["AboveBelow"][1:] == (3 / 4, 2 / 4)  # lost t0/0
    assert cmp.groups["concept"]["Count"][1:] == (3 / 4, 3 / 4)  # gained t3/0, lost t2/0
    assert cmp.groups["concept"][NO_CONCEPT][1:] == (3 / 4, 4 / 4)  # gained t4/1
    assert main([str(a), str(b)]) == 0
    text = capsys.readouterr().out
    assert "AboveBelow" in text and "-25.00 pp" in text and "+25.00 pp" in text and "ckpt-a (step 5)" in text
    assert (b / "compare-vs-a.html").is_file()
    json.loads((b / "scores.json").read_text())


@pytest.mark.parametrize("which", ["missing_dir", "missing_csv"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, which):
    a = tmp_path / "a"
    evaluation(a, ALL)
    other = tmp_path / "nope"
    if which == "missing_csv":
        other.mkdir()
    assert main([str(a), str(other)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(other) in err and len(err.strip().splitlines()) == 1
