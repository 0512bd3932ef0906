"""Our checkpoint format (atomic, strict) and the import of original HRM checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import hrm_fast
from hrm_fast import checkpoint as ck
from hrm_fast.config import load_config
from hrm_fast.model.hrm import HRM

ROOT = Path(__file__).resolve().parent.parent
OVERRIDES = ["model.hidden_size=32", "model.num_heads=2", "model.H_layers=1", "model.L_layers=2",
             "model.puzzle_emb_ndim=48", "data.max_grid_size=3"]  # fmt: skip


def make_model(seed: int = 0, extra: tuple[str, ...] = ()) -> tuple[HRM, object]:
    torch.manual_seed(seed)
    cfg = load_config("cpu-tiny", [*OVERRIDES, *extra])
    model = HRM(cfg.model, 12, cfg.data.seq_len, 7)
    with torch.no_grad():
        model.puzzle_emb.weights.normal_()
        model.inner.q_head.weight.normal_(0, 0.1)
    return model.eval(), cfg


def outputs(model: HRM) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    b = {"inputs": torch.randint(0, 12, (3, 9), generator=g), "labels": torch.randint(0, 12, (3, 9), generator=g),
         "puzzle_identifiers": torch.tensor([1, 5, 6])}  # fmt: skip
    carry = model.initial_carry(3)
    model(carry, b)
    return model(carry, b)[1]


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    for k in ("logits", "q_halt_logits", "q_continue_logits"):
        assert torch.equal(a[k], b[k]), k


def test_round_trip_gives_identical_outputs_and_config(tmp_path):
    model, cfg = make_model()
    state = {"step": torch.tensor(7), "rng": torch.get_rng_state(), "nested": {"lr": 0.5, "ids": [1, 2]}}
    ck.save_checkpoint(tmp_path / "last", model, cfg, state)
    assert sorted(os.listdir(tmp_path / "last")) == ["config.yaml", "model.safetensors", "state.pt"]
    loaded, cfg2 = hrm_fast.load_checkpoint(tmp_path / "last")
    assert cfg2 == cfg
    assert torch.equal(loaded.puzzle_emb.weights, model.puzzle_emb.weights)
    assert_same(outputs(model), outputs(loaded.eval()))
    st = ck.load_training_state(tmp_path / "last")
    assert int(st["step"]) == 7 and st["nested"] == {"lr": 0.5, "ids": [1, 2]}
    torch.load(tmp_path / "last" / "state.pt", weights_only=True)  # no pickled code needed


def test_replace_is_atomic_and_a_failed_write_keeps_the_old_one(tmp_path, monkeypatch):
    model, cfg = make_model()
    ck.save_checkpoint(tmp_path / "last", model, cfg, {"step": torch.tensor(1)})
    ck.save_checkpoint(tmp_path / "last", model, cfg, {"step": torch.tensor(2)})
    assert os.listdir(tmp_path) == ["last"] and int(ck.load_training_state(tmp_path / "last")["step"]) == 2

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ck.torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        ck.save_checkpoint(tmp_path / "last", model, cfg, {"step": torch.tensor(3)})
    assert os.listdir(tmp_path) == ["last"]  # no temporary folder left behind
    assert int(ck.load_training_state(tmp_path / "last")["step"]) == 2


def test_interrupted_replace_falls_back_to_previous_copy(tmp_path):
    model, cfg = make_model()
    ck.save_checkpoint(tmp_path / "last", model, cfg)
    os.rename(tmp_path / "last", tmp_path / ".last.old-123")  # crash between the two renames
    loaded, _ = ck.load_checkpoint(tmp_path / "last")
    assert_same(outputs(model), outputs(loaded.eval()))


def test_corrupt_and_mismatched_checkpoints_are_refused(tmp_path):
    model, cfg = make_model()
    ck.save_checkpoint(tmp_path / "a", model, cfg)
    weights = tmp_path / "a" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ck.CheckpointError, match="model.safetensors: cannot read weights"):
        ck.load_checkpoint(tmp_path / "a")

    ck.save_checkpoint(tmp_path / "b", model, cfg)
    text = (tmp_path / "b" / "config.yaml").read_text().replace("hidden_size: 32", "hidden_size: 64")
    (tmp_path / "b" / "config.yaml").write_text(text)
    shapes = r"shape mismatches: inner.H_init: checkpoint \(32,\) vs model \(64,\)"
    with pytest.raises(ck.CheckpointError, match=shapes):
        ck.load_checkpoint(tmp_path / "b")

    other, _ = make_model()
    state = other.state_dict()
    state.pop("inner.lm_head.weight")
    state["extra.weight"] = torch.zeros(1)
    keys = "(?s)missing keys: inner.lm_head.weight.*unexpected keys: extra.weight"
    with pytest.raises(ck.CheckpointError, match=keys):
        ck.load_state_into(model, state, "test")

    with pytest.raises(ck.CheckpointError, match="no such checkpoint"):
        ck.load_checkpoint(tmp_path / "missing")


@pytest.mark.parametrize("compiled", [True, False])
def test_original_layout_export_reimports_to_identical_outputs(tmp_path, compiled):
    model, cfg = make_model(seed=3)
    sd = ck.export_hrm_state_dict(model, compiled=compiled)
    prefix = "_orig_mod.model.inner." if compiled else "model.inner."
    # original HRM key names (sapientinc/HRM models/hrm/hrm_act_v1.py, layers.py, sparse_embedding.py)
    for key in ("embed_tokens.embedding_weight", "lm_head.weight", "q_head.weight", "q_head.bias", "H_init", "L_init",
                "puzzle_emb.weights", "H_level.layers.0.self_attn.qkv_proj.weight",
                "L_level.layers.1.self_attn.o_proj.weight", "L_level.layers.1.mlp.gate_up_proj.weight",
                "H_level.layers.0.mlp.down_proj.weight"):  # fmt: skip
        assert prefix + key in sd, key
    assert len(sd) == len(model.state_dict())
    torch.save(sd, tmp_path / "step_10")
    (tmp_path / "all_config.yaml").write_text(yaml.safe_dump(ck.to_hrm_config(cfg)))
    cmd = [sys.executable, "-m", "hrm_fast.checkpoint", "import-hrm", str(tmp_path / "step_10"),
           "--hrm-config", str(tmp_path / "all_config.yaml"), "--out", str(tmp_path / "imported"), "--seq-len", "9"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    loaded, cfg2 = ck.load_checkpoint(tmp_path / "imported")
    assert cfg2.model.model_dump(exclude={"ops", "dropout"}) == cfg.model.model_dump(exclude={"ops", "dropout"})
    assert_same(outputs(model), outputs(loaded.eval()))


def test_import_refuses_bad_input(tmp_path):
    model, cfg = make_model()
    (tmp_path / "all_config.yaml").write_text(yaml.safe_dump(ck.to_hrm_config(cfg)))
    sd = ck.export_hrm_state_dict(model)
    sd["_orig_mod.model.inner.lm_head.weight"] = torch.zeros(12, 16)
    torch.save(sd, tmp_path / "bad_shape")
    with pytest.raises(ck.CheckpointError, match=r"inner.lm_head.weight: checkpoint \(12, 16\) vs model \(12, 32\)"):
        ck.import_hrm(tmp_path / "bad_shape", tmp_path / "all_config.yaml", tmp_path / "out", seq_len=9)
    assert not (tmp_path / "out").exists()
    (tmp_path / "garbage").write_bytes(b"not a checkpoint")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", "hrm_fast.checkpoint", "import-hrm", str(tmp_path / "garbage"),
                          "--hrm-config", str(tmp_path / "all_config.yaml"), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, env=env)  # fmt: skip
    assert run.returncode == 2 and "garbage: cannot read checkpoint" in run.stderr
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- interrupted saves (issue 11)
def _dead_tag() -> str:
    """An owner tag (pid@host) of a process that has exited."""
    proc = subprocess.run([sys.executable, "-c", "from hrm_fast.fs import owner_tag; print(owner_tag())"],
                          capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return proc.stdout.strip()


def _save(folder, step: int):
    model, cfg = make_model(seed=step)
    ck.save_checkpoint(folder, model, cfg, {"step": torch.tensor(step)})
    return model


def test_recover_promotes_a_complete_newer_copy_left_between_the_two_renames(tmp_path):
    dead, messages = _dead_tag(), []
    _save(tmp_path / "last", 3)
    os.rename(tmp_path / "last", tmp_path / f".last.old-{dead}")  # the first rename happened
    newer = _save(tmp_path / "new", 6)
    os.rename(tmp_path / "new", tmp_path / f".last.tmp-{dead}")  # the second did not
    assert ck.newest_copy(tmp_path / "last").name == f".last.tmp-{dead}"  # what a reader (train.evaluate) takes
    ck.recover_checkpoint(tmp_path / "last", messages.append)
    assert sorted(os.listdir(tmp_path)) == ["last"]
    assert int(ck.load_training_state(tmp_path / "last")["step"]) == 6
    assert_same(outputs(newer), outputs(ck.load_checkpoint(tmp_path / "last")[0].eval()))
    assert messages[0].startswith(f"recovered {tmp_path / 'last'} from .last.tmp-{dead}")
    assert f"removed {tmp_path / f'.last.old-{dead}'}" in messages[1]


def test_recover_removes_an_unfinished_copy_and_keeps_live_ones(tmp_path):
    dead, messages = _dead_tag(), []
    _save(tmp_path / "last", 3)
    _save(tmp_path / "cut", 6)
    state = tmp_path / "cut" / "state.pt"
    state.write_bytes(state.read_bytes()[:1000])  # killed while torch.save was writing
    os.rename(tmp_path / "cut", tmp_path / f".last.tmp-{dead}")
    (tmp_path / f".best.tmp-{dead}").mkdir()  # killed right after making the folder
    live = tmp_path / f".last.tmp-{os.getpid()}@{ck.owner_tag().split('@')[1]}"
    live.mkdir()  # a save in progress in a live process is not touched
    for name in ("last", "best"):
        ck.recover_checkpoint(tmp_path / name, messages.append)
    assert sorted(os.listdir(tmp_path)) == sorted(["last", live.name])
    assert int(ck.load_training_state(tmp_path / "last")["step"]) == 3
    assert len(messages) == 2 and all(m.startswith("removed ") for m in messages)
    assert not ck.is_complete(live) and ck.is_complete(tmp_path / "last")
