"""The FLOP model reproduces docs/hrm.md §7 (numbers copied from that table, not from the code)."""

from __future__ import annotations

import pytest

from hrm_fast.config import load_config
from hrm_fast.flops import block_params, config_flops, step_flops


def test_block_pass_at_901_tokens():
    f = config_flops(load_config("hrm-paper"))
    assert block_params(load_config("hrm-paper").model) == 3_407_872
    assert f.seq_len == 901
    assert round(f.block_pass / 1e9, 2) == 7.80
    # projections 6.14 GFLOP + attention 1.66 GFLOP
    assert round(2 * 901 * 3_407_872 / 1e9, 2) == 6.14 and round((f.block_pass - 2 * 901 * 3_407_872) / 1e9, 2) == 1.66


@pytest.mark.parametrize(
    "preset, passes, grad, equiv, train_tf, noboot_tf, eval_tf, train_ep, eval_ep",
    [
        ("hrm-paper", 24, 8, 64, 0.50, 0.31, 0.19, 7.99, 3.00),
        ("seed-4090", 152, 10, 324, 2.53, 1.34, 1.19, 30.3, 14.2),
    ],
)
def test_reference_table(preset, passes, grad, equiv, train_tf, noboot_tf, eval_tf, train_ep, eval_ep):
    f = config_flops(load_config(preset))
    assert (f.forward_passes, f.grad_passes, f.train_equivalents) == (passes, grad, equiv)
    assert round(f.train_segment / 1e12, 2) == train_tf
    assert round(f.train_segment_no_bootstrap / 1e12, 2) == noboot_tf
    assert round(f.eval_segment / 1e12, 2) == eval_tf
    assert f.train_episode / 1e12 == pytest.approx(train_ep, abs=0.05)
    assert f.eval_episode / 1e12 == pytest.approx(eval_ep, abs=0.05)


def test_per_optimizer_step_and_options():
    assert round(step_flops(load_config("hrm-paper")) / 1e15, 2) == 0.38  # 768 rows x 1 segment
    seed768 = load_config("seed-4090", ["train.global_batch_size=768"])
    assert round(step_flops(seed768) / 1e15, 2) == 1.94
    noboot = config_flops(load_config("seed-4090", ["model.bootstrap_q=false"]))
    assert noboot.train_equivalents == 172 and noboot.train_segment == noboot.train_segment_no_bootstrap
    ckpt = config_flops(load_config("hrm-paper", ["model.grad_checkpoint=true"]))
    assert ckpt.recompute == pytest.approx(8 * ckpt.block_pass)


def test_info_cli_prints_parameters_and_flops(capsys):
    from hrm_fast.info import main

    assert main(["preset=hrm-paper"]) == 0
    out = capsys.readouterr().out
    assert "trainable parameters: 27,276,290" in out
    assert "block pass (S=901): 7.8 GFLOP" in out and "train segment: 499 GFLOP" in out
    assert "eval segment: 187 GFLOP" in out
    assert main(["preset=hrm-paper", "model.num_heads=7"]) == 2
    assert "model.num_heads=7 must divide" in capsys.readouterr().err
