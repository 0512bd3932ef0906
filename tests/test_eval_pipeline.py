"""crop -> inverse augmentation -> vote -> scores, on synthetic tasks (no model)."""

import itertools
import json

import numpy as np
import pytest

from hrm_fast.data.augment import Augmentation, augmented_name, parse_augmented_name
from hrm_fast.data.encode import crop_prediction, decode_grid, encode_grid
from hrm_fast.eval.results import decode_into, finalize, flat_metrics
from hrm_fast.eval.score import main as score_main
from hrm_fast.eval.vote import VoteBox

CANVAS = 8


def random_perm(rng) -> tuple[int, ...]:
    return (0, *(int(c) for c in rng.permutation(np.arange(1, 10))))


def all_augs(rng, perms_per_dihedral=3):
    """All 8 dihedral transforms, each with the identity colour map and random colour permutations."""
    out = []
    for k in range(8):
        out.append(Augmentation(k, tuple(range(10))))
        out += [Augmentation(k, random_perm(rng)) for _ in range(perms_per_dihedral)]
    return out


@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (4, 4), (1, 7), (7, 7), (1, 1)])
def test_inverse_augmentation_exact_through_crop(shape):
    rng = np.random.default_rng(hash(shape) % 2**32)
    grid = rng.integers(0, 10, size=shape).astype(np.uint8)
    for aug in all_augs(rng):
        name = augmented_name("0a1b2c3d", aug)
        tid, parsed = parse_augmented_name(name)
        assert tid == "0a1b2c3d" and parsed == aug
        view = aug.apply(grid)
        if aug.dihedral in (1, 3, 6, 7):
            assert view.shape == shape[::-1]
        # test-split placement: top-left, recovered by HRM's crop
        got = parsed.invert(crop_prediction(encode_grid(view, CANVAS), CANVAS))
        assert got.shape == grid.shape and np.array_equal(got, grid), (aug, shape)
        # translated placements (training rows): recovered by the bounding-box decoder
        h, w = view.shape
        for off in itertools.product(range(0, CANVAS - h + 1, 2), range(0, CANVAS - w + 1, 3)):
            got = parsed.invert(decode_grid(encode_grid(view, CANVAS, off), CANVAS))
            assert np.array_equal(got, grid), (aug, shape, off)


def make_tasks(rng, n_tasks=5):
    tasks = {}
    for t in range(n_tasks):
        tests = []
        for _ in range(1 + t % 3):  # 1..3 test inputs
            hi, wi, ho, wo = rng.integers(2, CANVAS, size=4)
            tests.append(
                {
                    "input": rng.integers(0, 10, size=(hi, wi)).tolist(),
                    "output": rng.integers(0, 10, size=(ho, wo)).tolist(),
                }
            )
        tasks[f"{t:08x}"] = {"train": [], "test": tests}
    return tasks


def views_of(tasks, rng, per_test=6):
    """(task ids, augs, test indices, label tokens) of augmented views, as a dataset's test split holds."""
    tids, augs, idx, tokens = [], [], [], []
    for tid, task in tasks.items():
        for i, pair in enumerate(task["test"]):
            chosen = [Augmentation.identity()] + [
                Augmentation(int(rng.integers(0, 8)), random_perm(rng)) for _ in range(per_test - 1)
            ]
            for aug in chosen:
                tids.append(tid)
                augs.append(aug)
                idx.append(i)
                tokens.append(encode_grid(aug.apply(np.asarray(pair["output"])), CANVAS))
    return tids, augs, np.asarray(idx), np.stack(tokens)


def run(tasks, tids, augs, idx, tokens, q, out):
    votes = VoteBox()
    for s in range(0, len(tids), 7):  # several batches
        sl = slice(s, s + 7)
        decode_into(votes, tokens[sl], tids[sl], augs[sl], idx[sl], q[sl], CANVAS)
    return finalize(votes, tasks, out, facts={"source": "synthetic"})


def test_oracle_scores_100_percent(tmp_path):
    rng = np.random.default_rng(1)
    tasks = make_tasks(rng)
    tids, augs, idx, tokens = views_of(tasks, rng)
    scores = run(tasks, tids, augs, idx, tokens, rng.random(len(tids)), tmp_path)
    assert scores["ks"] == [1, 2]
    for s in ("kaggle", "arc_prize", "all_or_nothing"):
        assert scores[s] == {"pass@1": 1.0, "pass@2": 1.0}
    assert scores["tasks"] == 5 and scores["test_outputs"] == sum(len(t["test"]) for t in tasks.values())
    assert json.loads((tmp_path / "scores.json").read_text())["pass@2"]["kaggle"] == 1.0
    sub = json.loads((tmp_path / "submission.json").read_text())
    assert list(sub) == list(tasks)
    for tid, task in tasks.items():
        assert [e["attempt_1"] for e in sub[tid]] == [p["output"] for p in task["test"]]
    (tmp_path / "tasks.json").write_text(json.dumps(tasks))
    assert score_main([str(tmp_path / "submission.json"), "--solutions", str(tmp_path / "tasks.json")]) == 0
    html = (tmp_path / "report.html").read_text()
    assert html.count('<section class="item solved"') == scores["test_outputs"]
    want = {f"eval/{s}@{k}": 1.0 for s in ("kaggle", "arc_prize", "all_or_nothing") for k in (1, 2)}
    assert flat_metrics(scores) == want


def test_constant_wrong_grid_scores_zero(tmp_path):
    rng = np.random.default_rng(2)
    tasks = make_tasks(rng)  # every output is at least 2x2, so a 1x1 answer is always wrong
    tids, augs, idx, _ = views_of(tasks, rng)
    const = np.stack([encode_grid(np.full((1, 1), 3), CANVAS)] * len(tids))
    scores = run(tasks, tids, augs, idx, const, np.full(len(tids), 0.9), tmp_path)
    for s in ("kaggle", "arc_prize", "all_or_nothing"):
        assert scores[s] == {"pass@1": 0.0, "pass@2": 0.0}
    assert '<section class="item solved"' not in (tmp_path / "report.html").read_text()


def test_empty_predictions_score_zero_and_write_valid_submission(tmp_path):
    rng = np.random.default_rng(3)
    tasks = make_tasks(rng, 2)
    tids, augs, idx, tokens = views_of(tasks, rng, per_test=2)
    scores = run(tasks, tids, augs, idx, np.zeros_like(tokens), np.zeros(len(tids)), tmp_path)
    assert scores["pass@2"]["kaggle"] == 0.0 and scores["empty_crop_fraction"] == 1.0


def test_placeholder_counts_only_in_submission_scores(tmp_path):
    """No candidate at all -> [[0]] in submission.json; if the truth is [[0]] the submission scorer counts it,
    pass@k does not (scores.json keeps both and says how many placeholders were written)."""
    tasks = {"00000000": {"train": [], "test": [{"input": [[1]], "output": [[0]]}]}}
    empty = np.zeros((1, CANVAS * CANVAS), dtype=np.uint8)  # all PAD -> empty crop
    scores = run(tasks, ["00000000"], [Augmentation.identity()], np.zeros(1, int), empty, np.ones(1), tmp_path)
    assert scores["pass@2"]["kaggle"] == 0.0 and scores["submission_scores"]["kaggle"] == 1.0
    assert scores["placeholder_answers"] == 1


def test_right_answer_second_by_votes(tmp_path):
    """The truth gets 2 votes, a wrong grid 3: pass@1 < pass@2 = 1 in all three scorings."""
    truth = [[1, 2, 3], [4, 5, 6]]
    wrong = [[1, 2, 3], [4, 5, 7]]
    tasks = {"deadbeef": {"train": [], "test": [{"input": [[0]], "output": truth}]}}
    rng = np.random.default_rng(4)
    augs = [Augmentation(k, random_perm(rng)) for k in (1, 2, 3, 4, 6)]
    preds = [wrong, truth, wrong, truth, wrong]
    tokens = np.stack([encode_grid(a.apply(np.asarray(p)), CANVAS) for a, p in zip(augs, preds)])
    # the right answer is also more confident: votes must still win over q_halt
    q = np.asarray([0.1, 0.99, 0.1, 0.99, 0.1])
    scores = run(tasks, ["deadbeef"] * 5, augs, np.zeros(5, int), tokens, q, tmp_path)
    for s in ("kaggle", "arc_prize", "all_or_nothing"):
        assert scores[s]["pass@1"] == 0.0 and scores[s]["pass@2"] == 1.0
    sub = json.loads((tmp_path / "submission.json").read_text())
    assert sub["deadbeef"] == [{"attempt_1": wrong, "attempt_2": truth}]


def test_pass_at_10_reported_with_enough_views(tmp_path):
    """With 12 views per test input pass@10 is reported; truth ranked 3rd -> pass@2 = 0, pass@10 = 1."""
    truth = [[7, 7], [7, 0]]
    tasks = {"cafe0001": {"train": [], "test": [{"input": [[0]], "output": truth}]}}
    preds = [[[1]]] * 5 + [[[2]]] * 4 + [truth] * 3
    augs = [Augmentation.identity()] * 12
    tokens = np.stack([encode_grid(np.asarray(p), CANVAS) for p in preds])
    scores = run(tasks, ["cafe0001"] * 12, augs, np.zeros(12, int), tokens, np.full(12, 0.5), tmp_path)
    assert scores["ks"] == [1, 2, 10]
    assert scores["kaggle"] == {"pass@1": 0.0, "pass@2": 0.0, "pass@10": 1.0}
