"""python -m hrm_fast.runs: ``plot`` draws every run's curves against step and training FLOPs (checked on the
matplotlib Figure, not on pixels) and writes a PNG; ``list`` shows preset, steps, best val and checkpoints."""

import json
import math

import pytest
import torch

from hrm_fast.config import load_config, save_config
from hrm_fast.flops import step_flops
from hrm_fast.runs.__main__ import main
from hrm_fast.runs.curves import PANELS, curves_figure

TINY = ["model.hidden_size=32", "model.num_heads=2", "model.H_layers=1", "model.L_layers=1", "train.max_steps=40"]


def make_run(folder, batch: int, steps: int = 40, config: bool = True, last_step: int | None = None):
    """A run folder as train.run leaves it: config.yaml, metrics.jsonl (train lines every 2 steps, a val line
    every 10, non-finite values as strings) and optionally a `last` checkpoint saved at ``last_step``."""
    folder.mkdir(parents=True)
    cfg = load_config("cpu-tiny", TINY + [f"train.global_batch_size={batch}"])
    if config:
        save_config(cfg, folder / "config.yaml")
    lines = []
    for s in range(2, steps + 1, 2):
        lines.append({"step": s, "time": 1.0, "train/lm_loss": 3.0 / s, "train/accuracy": "nan" if s == 2 else s / 50,
                      "train/exact_accuracy": s / 100, "train/lr": 1e-3 * min(1, s / 10)})
        if s % 10 == 0:
            lines.append({"step": s, "time": 1.0, "val/lm_loss": 2.0 / s, "val/accuracy": s / 60,
                          "val/exact_accuracy": 0.5 if s == 20 else s / 400})
    lines.append({"step": steps, "time": 1.0, "eval/kaggle@2": 0.125})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    if last_step is not None:
        (folder / "last").mkdir()
        (folder / "last" / "model.safetensors").write_bytes(b"x")
        (folder / "last" / "config.yaml").write_text("{}")
        torch.save({"step": last_step, "version": 1}, folder / "last" / "state.pt")
    return cfg


def test_plot_figure_has_every_panel_against_step_and_flops(tmp_path):
    cfg_a = make_run(tmp_path / "a", batch=8)
    cfg_b = make_run(tmp_path / "b", batch=32, steps=20)
    fig = curves_figure([tmp_path / "a", tmp_path / "b"])
    axes = fig.axes
    assert len(axes) == 2 * len(PANELS)
    left, right = axes[0::2], axes[1::2]
    assert [ax.get_title() for ax in left] == [p[0] for p in PANELS]
    assert all(ax.get_xlabel() == "step" for ax in left)
    assert all("FLOPs" in ax.get_xlabel() and ax.get_xscale() == "log" for ax in right)
    assert [ax.get_ylabel() for ax in left] == [p[1] for p in PANELS]
    lines = {(i, line.get_label()): line for i, ax in enumerate(axes) for line in ax.get_lines()}
    for run in ("a", "b"):  # every metric of every run, in its panel
        for i, (_, _, metrics) in enumerate(PANELS):
            for m in metrics:
                assert (2 * i, f"{run}: {m}") in lines and (2 * i + 1, f"{run}: {m}") in lines, (run, m)
    loss_a = lines[(0, "a: train/lm_loss")]
    assert list(loss_a.get_xdata()) == list(range(2, 41, 2))
    assert list(loss_a.get_ydata()) == pytest.approx([3.0 / s for s in range(2, 41, 2)])
    flops_a = lines[(1, "a: train/lm_loss")].get_xdata()
    assert list(flops_a) == pytest.approx([s * step_flops(cfg_a) for s in range(2, 41, 2)])
    flops_b = lines[(1, "b: train/lm_loss")].get_xdata()
    assert flops_b[-1] == pytest.approx(20 * step_flops(cfg_b)) and step_flops(cfg_b) == 4 * step_flops(cfg_a)
    acc = lines[(2, "a: train/accuracy")].get_xdata()  # the "nan" at step 2 is left out
    assert acc[0] == 4 and all(math.isfinite(v) for v in lines[(2, "a: train/accuracy")].get_ydata())
    assert lines[(4, "b: eval/kaggle@2")].get_ydata()[0] == 0.125
    assert lines[(6, "a: train/lr")].get_ydata().max() == pytest.approx(1e-3)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["a", "b"]


def test_a_run_without_config_has_no_flops_curves(tmp_path):
    make_run(tmp_path / "a", batch=8, config=False)
    fig = curves_figure([tmp_path / "a"])
    assert all(not ax.get_lines() for ax in fig.axes[1::2]) and all(ax.get_lines() for ax in fig.axes[0::2])
    assert any("no config.yaml" in t.get_text() for t in fig.texts)


def test_plot_and_list_commands(tmp_path, capsys):
    make_run(tmp_path / "runs" / "r1", batch=8, last_step=40)
    make_run(tmp_path / "runs" / "r2", batch=16, steps=20)
    (tmp_path / "runs" / "not-a-run").mkdir()
    out = tmp_path / "curves.png"
    assert main(["plot", str(tmp_path / "runs" / "r1"), str(tmp_path / "runs" / "r2"), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    capsys.readouterr()
    assert main(["list", str(tmp_path / "runs")]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["run", "preset", "steps"] and len(table) == 3
    r1, r2 = table[1].split(), table[2].split()
    assert r1[0].endswith("r1") and r1[1:4] == ["cpu-tiny", "40/40", "0.5000"] and r1[4:] == ["(20)", "40", "-"]
    assert r2[0].endswith("r2") and r2[2] == "20/40" and r2[3:] == ["0.5000", "(20)", "-", "-"]


@pytest.mark.parametrize("argv, needle", [(["plot", "NOPE"], "metrics.jsonl: missing"),
                                          (["list", "NOPE"], "no such folder")])
def test_bad_input_exit_2(tmp_path, capsys, argv, needle):
    argv = [str(tmp_path / "nope") if a == "NOPE" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err
