"""The dataset browser renders a puzzle's pairs and refuses unknown puzzles."""

import json
import re

import numpy as np

from hrm_fast.data.augment import parse_augmented_name
from hrm_fast.data.build import build_dataset
from hrm_fast.data.show import PALETTE, main


def test_show_puzzle_terminal_and_html(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    task = {
        "train": [{"input": [[1, 2, 3]], "output": [[3], [2], [1]]}],
        "test": [{"input": [[4]], "output": [[5, 6]]}],
    }
    (src / "t0.json").write_text(json.dumps(task))
    out = tmp_path / "ds"
    build_dataset(out, [], [str(src)], num_aug=2, seed=0, max_grid_size=6, progress=False)
    names = json.loads((out / "identifiers.json").read_text())
    name = names[2]
    aug = parse_augmented_name(name)[1]

    html = tmp_path / "p.html"
    assert main([str(out), "--puzzle", name, "--no-colour", "--html", str(html)]) == 0
    text = capsys.readouterr().out
    # the train pair is shown augmented: the stored input is aug.apply(input)
    shown = aug.apply(np.array(task["train"][0]["input"]))
    assert " ".join(str(c) for c in shown[0]) in text
    assert "== train: 1 pairs" in text and "== test: 1 pairs" in text
    page = html.read_text()
    assert page.count("<svg") == 4
    fills = set(re.findall(r'fill="(#[0-9A-F]{6})"', page))
    assert fills == {PALETTE[c] for c in aug.apply(np.arange(1, 7).reshape(1, 6)).reshape(-1)}

    assert main([str(out), "--puzzle", name, "--original", "--no-colour"]) == 0
    assert "1 2 3" in capsys.readouterr().out
    assert main([str(out), "--puzzle", "nope"]) == 2
    assert main([str(tmp_path), "--puzzle", "t0"]) == 2
