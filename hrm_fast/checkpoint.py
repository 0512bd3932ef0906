"""Checkpoints: hrm_fast's own format, and import of original HRM checkpoints.

Our checkpoint is a directory:
- ``model.safetensors``: every weight and persistent buffer (incl. the puzzle table ``puzzle_emb.weights``
  and ``inner.H_init`` / ``inner.L_init``); its metadata holds ``format``, ``format_version``,
  ``vocab_size``, ``seq_len`` and ``num_puzzle_identifiers`` (what the config does not say).
- ``config.yaml``: the resolved :class:`hrm_fast.config.Config`.
- ``state.pt`` (optional): training state, loadable with ``torch.load(weights_only=True)``.
- ``ema.safetensors`` (runs with ``train.ema``): the moving average of every trainable parameter, keyed as in
  ``model.safetensors``; :func:`load_checkpoint` (evaluation) uses it, resume restores it.
- ``dataset_identity.json`` + ``identifiers.json`` (when the dataset is known): the fingerprint of the build the
  puzzle table belongs to, its identifier count, and the identifier names (``hrm_fast.data.identity``).
It is written into a temporary sibling folder, fsynced, then renamed into place; an existing
checkpoint of the same name is replaced only after the new one is complete.

CLI: ``python -m hrm_fast.checkpoint import-hrm STEP_FILE --hrm-config all_config.yaml --out DIR``
converts a checkpoint of sapientinc/HRM (a ``state_dict`` saved by ``pretrain.py``, usually with
``_orig_mod.`` prefixes from torch.compile) into our format; ``import-trm STEP_FILE --trm-config
all_config.yaml --out DIR`` does the same for SamsungSAILMontreal/TinyRecursiveModels (same key layout).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_weights

from hrm_fast.config import Config, ConfigError, config_from_dict, config_to_yaml, load_config
from hrm_fast.data.identity import DatasetIdentity, check_same_dataset, dataset_identity
from hrm_fast.fs import os_error_line, owner_alive, owner_tag
from hrm_fast.model.hrm import HRM
from hrm_fast.training.ema import EMA

FORMAT = "hrm_fast"
FORMAT_VERSION = "1"
WEIGHTS = "model.safetensors"
CONFIG = "config.yaml"
STATE = "state.pt"
EMA_WEIGHTS = "ema.safetensors"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model; the message says what differs."""


# --------------------------------------------------------------------------- atomic writes
def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _naming_errors(path: Path) -> Iterator[None]:
    """An OSError raised while writing ``path`` through a file object, with the path (it has none). torch.save's
    zip writer turns it into a RuntimeError when it closes, keeping the OSError as the exception's context."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        cause: BaseException | None = err
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__context__
        if cause is None:
            raise
        if cause.filename is not None:
            raise cause from None
        raise OSError(cause.errno, cause.strerror or str(cause), str(path)) from None


def save_checkpoint(
    path: str | Path, model: HRM, config: Config, state: dict[str, Any] | None = None,
    ema: dict[str, torch.Tensor] | None = None, dataset: DatasetIdentity | None = None,
) -> Path:
    """Write ``model`` (+ ``config``, optional training ``state`` and EMA weights) to the directory ``path``
    atomically.

    ``dataset``: the identity of the build the model was trained on; None = that of ``config.data.path`` if it
    holds a dataset (else none is written)."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{owner_tag()}"  # the owner's pid@host: see recover_checkpoint
    if tmp.exists():  # left by a dead process that had this pid
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        metadata = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "vocab_size": str(model.vocab_size),
            "seq_len": str(model.seq_len),
            "num_puzzle_identifiers": str(model.num_puzzle_identifiers),
        }
        # written through Python file objects, so that a full or failing disk raises OSError (errno, path); safetensors'
        # and torch's own file writers raise SafetensorError / RuntimeError without either
        with _naming_errors(tmp / WEIGHTS):
            (tmp / WEIGHTS).write_bytes(save_weights(tensors, metadata=metadata))
        if ema is not None:
            with _naming_errors(tmp / EMA_WEIGHTS):
                (tmp / EMA_WEIGHTS).write_bytes(save_weights(
                    {k: v.detach().to("cpu").contiguous() for k, v in ema.items()},
                    metadata={"format": FORMAT, "format_version": FORMAT_VERSION}))
        (tmp / CONFIG).write_text(config_to_yaml(config))
        if state is not None:
            with _naming_errors(tmp / STATE), open(tmp / STATE, "wb") as f:
                torch.save(state, f)
        _write_dataset_identity(tmp, dataset or dataset_identity(config.data.path), config.data.path)  # issue 11
        for f in tmp.iterdir():
            _fsync_path(f)
        _fsync_path(tmp)
        old = None
        if final.exists():
            old = final.parent / f".{final.name}.old-{owner_tag()}"
            if old.exists():
                shutil.rmtree(old)
            os.rename(final, old)
        os.rename(tmp, final)
        _fsync_path(final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _resolve(path: str | Path) -> Path:
    """The checkpoint folder; if a crash interrupted a replace, the copy :func:`newest_copy` picks."""
    p = Path(path)
    if p.is_dir():
        return p
    found = newest_copy(p)
    if found is not None:
        return found
    raise CheckpointError(f"{p}: no such checkpoint directory")


# --------------------------------------------------------------------------- interrupted saves
# save_checkpoint writes .NAME.tmp-<tag>, renames NAME to .NAME.old-<tag>, renames the tmp to NAME, removes the
# old (<tag> = pid@host of the writer). A kill -9 leaves: a tmp (complete or not) beside NAME (before the first
# rename), or a complete old + a complete tmp and no NAME (between the renames), or NAME + old (after the second).
def _leftovers(final: Path) -> list[tuple[Path, str, str]]:
    """(path, "tmp" | "old", owner tag) of the interrupted-save folders of checkpoint ``final``."""
    pattern = re.compile(rf"\.{re.escape(final.name)}\.(?P<kind>tmp|old)-(?P<tag>.+)")
    try:
        entries = sorted(final.parent.iterdir()) if final.parent.is_dir() else []
    except OSError:
        return []
    return [(e, m["kind"], m["tag"]) for e in entries if (m := pattern.fullmatch(e.name)) and e.is_dir()]


def is_complete(folder: Path) -> bool:
    """Whether every file of checkpoint ``folder`` reads back (weights with our metadata, config, training state)."""
    try:
        tensors, metadata = read_weights(folder / WEIGHTS)
        config_from_dict(yaml.safe_load((folder / CONFIG).read_text()) or {})
        if (folder / STATE).exists():
            torch.load(folder / STATE, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 (any failure to read back means "not complete")
        return False
    return metadata.get("format") == FORMAT and bool(tensors)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return float("-inf")


def newest_copy(final: str | Path) -> Path | None:
    """Checkpoint ``final`` as a crash left it: a complete temporary copy newer than ``final`` (the save died before
    putting it in place), else ``final`` itself, else the previous copy moved aside (``.NAME.old-*``); None if none."""
    final = Path(final)
    here = final if (final / WEIGHTS).is_file() else None
    tmps = [p for p, kind, _ in _leftovers(final) if kind == "tmp" and _mtime(p) > _mtime(final)]
    for tmp in sorted(tmps, key=_mtime, reverse=True):
        if is_complete(tmp):
            return tmp
    if here is not None:
        return here
    olds = [p for p, kind, _ in _leftovers(final) if kind == "old" and (p / WEIGHTS).is_file()]
    return max(olds, key=_mtime) if olds else None


def recover_checkpoint(final: str | Path, say: Callable[[str], None]) -> None:
    """Undo what a killed :func:`save_checkpoint` left of checkpoint ``final`` (call it holding the run folder).

    The copy :func:`newest_copy` picks is put in place as ``final``; the other temporary folders of dead
    processes are removed. Each action is reported through ``say``. Folders of live processes are left alone.
    """
    final = Path(final)
    stale = [(p, tag) for p, _, tag in _leftovers(final) if owner_alive(tag) is False]
    if not stale:
        return
    chosen = newest_copy(final)
    if chosen is not None and chosen != final:
        if any(chosen == p for p, _ in stale):
            aside = final.parent / f".{final.name}.old-{owner_tag()}"
            replaced = final.exists()
            if replaced:
                os.rename(final, aside)
            os.rename(chosen, final)
            _fsync_path(final.parent)
            if replaced:
                shutil.rmtree(aside)  # the older copy, superseded as the interrupted save would have done
            kind = "newer, complete copy the save had not put in place" if ".tmp-" in chosen.name else "previous copy"
            say(f"recovered {final} from {chosen.name}: the {kind} (its writer died during the save)")
    for leftover, tag in stale:  # what is left is incomplete (a save cut short) or older than ``final``
        if not leftover.exists():
            continue
        try:
            shutil.rmtree(leftover)
        except OSError as err:
            say(f"warning: could not remove the leftover {os_error_line(err, leftover)}")
            continue
        say(f"removed {leftover}: an unfinished or superseded copy of {final.name} left by process {tag}, "
            "which is gone")


# --- dataset identity (issue 11, helper 11) ---------------------------------------------------------------
IDENTITY = "dataset_identity.json"
IDENTIFIERS = "identifiers.json"


def _write_dataset_identity(folder: Path, identity: DatasetIdentity | None, data_path: str) -> None:
    if identity is None:
        return
    (folder / IDENTIFIERS).write_text(json.dumps(list(identity.identifiers)) + "\n")
    record = {"fingerprint": identity.fingerprint, "num_puzzle_identifiers": identity.num_puzzle_identifiers,
              "data_path": str(data_path)}
    (folder / IDENTITY).write_text(json.dumps(record, indent=2) + "\n")


def read_dataset_identity(path: str | Path) -> DatasetIdentity | None:
    """The identity of the dataset checkpoint ``path`` was trained on; None for checkpoints written before
    identities were recorded (or without a dataset)."""
    folder = _resolve(path)
    if not (folder / IDENTITY).exists():
        return None
    try:
        record = json.loads((folder / IDENTITY).read_text())
        names = json.loads((folder / IDENTIFIERS).read_text())
        identity = DatasetIdentity(str(record["fingerprint"]), tuple(names))
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise CheckpointError(f"{folder}: cannot read its dataset identity ({type(exc).__name__}: {exc})") from None
    if identity.num_puzzle_identifiers != record["num_puzzle_identifiers"]:
        raise CheckpointError(f"{folder / IDENTIFIERS}: {identity.num_puzzle_identifiers} names, "
                              f"{IDENTITY} says {record['num_puzzle_identifiers']}")
    return identity


def check_resume_dataset(path: str | Path, data_path: str | Path) -> str | None:
    """Refuse (DatasetMismatchError, both fingerprints named) to resume checkpoint ``path`` on another dataset
    build; returns a warning line for an old checkpoint that records no dataset (nothing can be checked)."""
    trained_on = read_dataset_identity(path)
    if trained_on is None:
        return (f"warning: {path} records no dataset identity (written by an older hrm_fast): cannot check that "
                f"{data_path} is the build it was trained on")
    check_same_dataset(trained_on, data_path, str(path))
    return None
# --- end dataset identity ----------------------------------------------------------------------------------


# --------------------------------------------------------------------------- loading
def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a ``model.safetensors``; CheckpointError if unreadable."""
    file = Path(path)
    try:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{file}: cannot read weights ({exc})") from None
    return tensors, metadata


def check_fits(expected: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], source: str) -> None:
    """CheckpointError naming the missing/unexpected keys and shape mismatches of ``tensors`` vs ``expected``."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    shapes = [
        f"{k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(tensors))
        if tuple(tensors[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append("missing keys: " + ", ".join(missing))
        if unexpected:
            parts.append("unexpected keys: " + ", ".join(unexpected))
        if shapes:
            parts.append("shape mismatches: " + "; ".join(shapes))
        raise CheckpointError(f"{source} does not fit the model:\n  " + "\n  ".join(parts))


def load_state_into(model: HRM, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``tensors`` into ``model``; refuses missing/unexpected keys and shape mismatches, naming them."""
    expected = model.state_dict()
    check_fits(expected, tensors, source)
    with torch.no_grad():
        for k, v in expected.items():
            v.copy_(tensors[k].to(v.dtype))


def load_ema_into(model: HRM, folder: Path) -> bool:
    """Overwrite ``model``'s trainable parameters with ``folder/ema.safetensors`` when it exists (True then).

    The file must hold exactly the trainable parameters (names and shapes), else CheckpointError naming them."""
    file = folder / EMA_WEIGHTS
    if not file.exists():
        return False
    tensors, _ = read_weights(file)
    params = {k: p for k, p in model.named_parameters() if p.requires_grad}
    check_fits(params, tensors, str(file))
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(tensors[k].to(p.dtype))
    return True


def load_ema_state(ema: EMA, folder: str | Path) -> bool:
    """Restore ``ema``'s averages from ``folder/ema.safetensors`` (False when the checkpoint has none)."""
    file = _resolve(folder) / EMA_WEIGHTS
    if not file.exists():
        return False
    tensors, _ = read_weights(file)
    check_fits(dict(zip(ema.names, ema.shadow)), tensors, str(file))
    ema.load_state_dict(tensors)
    return True


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", ema: bool = True) -> tuple[HRM, Config]:
    """Build the model described by checkpoint ``path`` and load its weights; returns (model, config).

    ``ema``: use the checkpoint's EMA weights (``ema.safetensors``) when it has them, as evaluation should."""
    folder = _resolve(path)
    cfg_file = folder / CONFIG
    if not cfg_file.exists():
        raise CheckpointError(f"{folder}: missing {CONFIG}")
    try:
        config = config_from_dict(yaml.safe_load(cfg_file.read_text()) or {})
    except (ConfigError, yaml.YAMLError) as exc:
        raise CheckpointError(f"{cfg_file}: {exc}") from None
    tensors, metadata = read_weights(folder / WEIGHTS)
    if metadata.get("format") != FORMAT:
        found = metadata.get("format")
        raise CheckpointError(f"{folder / WEIGHTS}: not an hrm_fast checkpoint (metadata format={found!r})")
    try:
        dims = {k: int(metadata[k]) for k in ("vocab_size", "seq_len", "num_puzzle_identifiers")}
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{folder / WEIGHTS}: metadata lacks model dimensions ({exc})") from None
    model = HRM(config.model, **dims)
    load_state_into(model, tensors, str(folder / WEIGHTS))
    if ema:
        load_ema_into(model, folder)
    return model.to(device), config


def load_training_state(path: str | Path) -> dict[str, Any]:
    """The ``state.pt`` of a checkpoint, loaded without executing code (``weights_only=True``)."""
    file = _resolve(path) / STATE
    if not file.exists():
        raise CheckpointError(f"{file}: no training state in this checkpoint")
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 (torch raises many kinds on corrupt files)
        raise CheckpointError(f"{file}: cannot read training state ({exc})") from None


# --------------------------------------------------------------------------- original HRM layout
# ours <-> sapientinc/HRM (models/hrm/hrm_act_v1.py inside models/losses.py's ACTLossHead):
#   inner.embed_tokens.weight <-> model.inner.embed_tokens.embedding_weight
#   inner.embed_pos.weight    <-> model.inner.embed_pos.embedding_weight   (learned positions)
#   puzzle_emb.weights        <-> model.inner.puzzle_emb.weights
#   inner.<anything else>     <-> model.inner.<same>  (blocks, lm_head, q_head, H_init, L_init)
HRM_PREFIX = "model.inner."
_RENAMES = {
    "inner.embed_tokens.weight": "embed_tokens.embedding_weight",
    "inner.embed_pos.weight": "embed_pos.embedding_weight",
    "puzzle_emb.weights": "puzzle_emb.weights",
}


def export_hrm_state_dict(model: HRM, compiled: bool = True) -> dict[str, torch.Tensor]:
    """Our model's weights in the original HRM key layout (``_orig_mod.`` prefixed when ``compiled``)."""
    out = {}
    prefix = ("_orig_mod." if compiled else "") + HRM_PREFIX
    for k, v in model.state_dict().items():
        name = _RENAMES.get(k, k.removeprefix("inner."))
        out[prefix + name] = v.detach().clone()
    return out


def hrm_to_ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an original HRM state dict onto our keys (strips ``_orig_mod.``; drops RoPE caches)."""
    back = {v: k for k, v in _RENAMES.items()}
    out = {}
    for key, value in state.items():
        name = key.replace("_orig_mod.", "")
        if not name.startswith(HRM_PREFIX):
            raise CheckpointError(f"unexpected key {key!r} (expected keys under {HRM_PREFIX!r}, optionally _orig_mod.)")
        name = name.removeprefix(HRM_PREFIX)
        if name.startswith("rotary_emb.") or name.startswith("puzzle_emb.local_"):
            continue  # non-persistent caches in HRM
        out[back.get(name, "inner." + name)] = value
    return out


_ARCH_KEYS = (
    "hidden_size", "num_heads", "expansion", "H_layers", "L_layers", "H_cycles", "L_cycles",
    "halt_max_steps", "halt_exploration_prob", "puzzle_emb_ndim", "pos_encodings", "rope_theta",
    "rms_norm_eps", "forward_dtype",
)  # fmt: skip
_TRAIN_KEYS = (
    "global_batch_size", "epochs", "lr", "lr_min_ratio", "lr_warmup_steps", "beta1", "beta2",
    "weight_decay", "puzzle_emb_lr", "puzzle_emb_weight_decay", "seed",
)  # fmt: skip
_LOSS_TYPES = {"stablemax_cross_entropy": "stablemax", "softmax_cross_entropy": "softmax"}


def _arch_overrides(arch: dict[str, Any]) -> list[str]:
    overrides = [f"model.{k}={json.dumps(arch[k])}" for k in _ARCH_KEYS if k in arch]
    loss = (arch.get("loss") or {}).get("loss_type")
    if loss is not None:
        if loss not in _LOSS_TYPES:
            raise ConfigError(f"arch.loss.loss_type {loss!r}: expected one of {', '.join(_LOSS_TYPES)}")
        overrides.append(f"model.loss_type={_LOSS_TYPES[loss]}")
    return overrides


def config_from_hrm(hrm_config: dict[str, Any]) -> Config:
    """Our Config from HRM's ``all_config.yaml`` (a ``hrm-paper`` preset with the file's values)."""
    arch = hrm_config.get("arch") or {}
    if "trm" in str(arch.get("name", "")).split("@")[0]:
        raise ConfigError(f"arch.name {arch['name']!r} is a TRM model: use import-trm")
    overrides = _arch_overrides(arch)
    overrides += [f"train.{k}={json.dumps(hrm_config[k])}" for k in _TRAIN_KEYS if hrm_config.get(k) is not None]
    if "data_path" in hrm_config:
        overrides.append(f"data.path={json.dumps(str(hrm_config['data_path']))}")
    config = load_config("hrm-paper", overrides)
    return config.model_copy(update={"preset": "imported-hrm"})


def to_hrm_config(config: Config) -> dict[str, Any]:
    """The inverse of :func:`config_from_hrm` (an ``all_config.yaml`` dict), for tests and export."""
    arch = {k: getattr(config.model, k) for k in _ARCH_KEYS}
    arch["name"] = "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1"
    arch["loss"] = {"name": "losses@ACTLossHead", "loss_type": f"{config.model.loss_type}_cross_entropy"}
    out: dict[str, Any] = {"arch": arch, "data_path": config.data.path}
    out.update({k: getattr(config.train, k) for k in _TRAIN_KEYS if getattr(config.train, k) is not None})
    return out


# TRM (SamsungSAILMontreal/TinyRecursiveModels config/arch/trm.yaml, pretrain.py): HRM's keys, plus these.
# The state-dict layout is HRM's (model.inner.L_level.layers.N..., mlp_t.* for its sequence-MLP blocks).
_TRM_ARCH = {"puzzle_emb_len": "puzzle_emb_tokens", "mlp_t": "mlp_t"}
_TRM_TRAIN = {"ema": "ema", "ema_rate": "ema_decay"}


def config_from_trm(trm_config: dict[str, Any]) -> Config:
    """Our Config from TRM's ``all_config.yaml`` (a ``trm-paper`` preset with the file's values).

    TRM's ``no_ACT_continue`` becomes ``model.bootstrap_q = not no_ACT_continue``; its ``H_layers`` is unused."""
    arch = trm_config.get("arch") or {}
    name = str(arch.get("name", ""))
    if "trm" not in name.split("@")[0]:
        raise ConfigError(f"arch.name {name!r} is not TRM's (recursive_reasoning.trm@...); for HRM use import-hrm")
    overrides = _arch_overrides({k: v for k, v in arch.items() if k != "H_layers"})
    overrides += [f"model.{ours}={json.dumps(arch[k])}" for k, ours in _TRM_ARCH.items() if k in arch]
    if "no_ACT_continue" in arch:
        overrides.append(f"model.bootstrap_q={json.dumps(not arch['no_ACT_continue'])}")
    overrides += [f"train.{k}={json.dumps(trm_config[k])}" for k in _TRAIN_KEYS if trm_config.get(k) is not None]
    overrides += [f"train.{ours}={json.dumps(trm_config[k])}" for k, ours in _TRM_TRAIN.items() if k in trm_config]
    paths = trm_config.get("data_paths") or []
    if paths:
        overrides.append(f"data.path={json.dumps(str(paths[0]))}")
    config = load_config("trm-paper", overrides)
    return config.model_copy(update={"preset": "imported-trm"})


def to_trm_config(config: Config) -> dict[str, Any]:
    """The inverse of :func:`config_from_trm` (a TRM ``all_config.yaml`` dict), for tests and export."""
    out = to_hrm_config(config)
    arch = out["arch"]
    arch["name"] = "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1"
    arch["H_layers"] = 0
    arch.update({k: getattr(config.model, ours) for k, ours in _TRM_ARCH.items()})
    arch["no_ACT_continue"] = not config.model.bootstrap_q
    out.update({k: getattr(config.train, ours) for k, ours in _TRM_TRAIN.items()})
    out["data_paths"] = [out.pop("data_path")]
    return out


def _seq_len_for(run_config: dict[str, Any], tensors: dict[str, torch.Tensor], prefix_len: int) -> tuple[int, str]:
    """(grid tokens, where the number came from)."""
    if "inner.embed_pos.weight" in tensors:
        return tensors["inner.embed_pos.weight"].shape[0] - prefix_len, "the learned position table"
    for data_path in [run_config.get("data_path"), *(run_config.get("data_paths") or [])]:
        meta = Path(str(data_path or "")) / "train" / "dataset.json"
        if data_path and meta.exists():
            return int(json.loads(meta.read_text())["seq_len"]), str(meta)
    return 900, "the default for 30x30 ARC grids (pass --seq-len for other tasks, e.g. 81 for Sudoku)"


def _import_original(step_file: str | Path, config_file: str | Path, out: str | Path, seq_len: int | None,
                     arch: str) -> tuple[HRM, Config]:
    """import-hrm / import-trm: read the run's config and state dict, map the keys, check, write ours."""
    step_file, config_file = Path(step_file), Path(config_file)
    try:
        run_config = yaml.safe_load(config_file.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise CheckpointError(f"{config_file}: cannot read {arch.upper()} config ({exc})") from None
    try:
        config = config_from_trm(run_config) if arch == "trm" else config_from_hrm(run_config)
    except ConfigError as exc:
        raise CheckpointError(f"{config_file}: {exc}") from None
    try:
        raw = torch.load(step_file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{step_file}: cannot read checkpoint ({exc})") from None
    if isinstance(raw, dict) and isinstance(raw.get("model"), dict):
        raw = raw["model"]  # {"model": state_dict, "optimizers": ..., "step": ...} (TRM forks with resume)
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise CheckpointError(f"{step_file}: expected a state_dict (name -> tensor)")
    tensors = hrm_to_ours(raw)
    if "inner.embed_tokens.weight" not in tensors:
        raise CheckpointError(f"{step_file}: no embed_tokens.embedding_weight; not an {arch.upper()} ACT v1 checkpoint")
    vocab = tensors["inner.embed_tokens.weight"].shape[0]
    ids = tensors["puzzle_emb.weights"].shape[0] if "puzzle_emb.weights" in tensors else 1
    if seq_len is None:
        seq_len, source = _seq_len_for(run_config, tensors, config.model.puzzle_emb_len)
        print(f"note: seq_len {seq_len} taken from {source}", file=sys.stderr)
    if int(seq_len**0.5) ** 2 == seq_len and seq_len <= 900:
        config = config.model_copy(update={"data": config.data.model_copy(update={"max_grid_size": int(seq_len**0.5)})})
    model = HRM(config.model, vocab_size=vocab, seq_len=seq_len, num_puzzle_identifiers=ids)
    load_state_into(model, tensors, str(step_file))
    save_checkpoint(out, model, config)
    return model, config


def import_hrm(
    step_file: str | Path, hrm_config_file: str | Path, out: str | Path, seq_len: int | None = None
) -> tuple[HRM, Config]:
    """Convert an original HRM checkpoint (+ its ``all_config.yaml``) into our format at ``out``.

    vocab_size and num_puzzle_identifiers come from the tensor shapes; seq_len from learned
    positions, else ``seq_len``, else ``<data_path>/train/dataset.json``, else 900 (30x30 ARC).
    """
    return _import_original(step_file, hrm_config_file, out, seq_len, "hrm")


def import_trm(
    step_file: str | Path, trm_config_file: str | Path, out: str | Path, seq_len: int | None = None
) -> tuple[HRM, Config]:
    """Convert a TRM checkpoint (+ its ``all_config.yaml``) into our format at ``out``, as :func:`import_hrm`.

    TRM saves the EMA weights when ``ema=True``; they become the imported model's weights."""
    return _import_original(step_file, trm_config_file, out, seq_len, "trm")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hrm_fast.checkpoint", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for arch in ("hrm", "trm"):
        imp = sub.add_parser(f"import-{arch}", help=f"convert an original {arch.upper()} checkpoint into hrm_fast's "
                             "format")
        imp.add_argument("step_file", help=f"{arch.upper()} checkpoint file (e.g. checkpoints/.../step_414456)")
        imp.add_argument(f"--{arch}-config", required=True, dest="run_config", help="the run's all_config.yaml")
        imp.add_argument("--out", required=True, help="output checkpoint directory")
        imp.add_argument("--seq-len", type=int, default=None, help="grid tokens (default: from data_path or 900)")
    args = parser.parse_args(argv)
    convert = import_trm if args.command == "import-trm" else import_hrm
    try:
        model, config = convert(args.step_file, args.run_config, args.out, args.seq_len)
    except (CheckpointError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out}: {n:,} parameters, vocab {model.vocab_size}, seq_len {model.seq_len}, "
          f"{model.num_puzzle_identifiers:,} puzzle identifiers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
