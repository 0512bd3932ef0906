"""``init.from=CKPT``: a new training run that starts from a checkpoint's weights.

The trainer has built its model for the new dataset (``data.path``); :func:`init_from_checkpoint` copies
the checkpoint's network weights into it, maps the puzzle table by identifier name (:mod:`.rows`), freezes
what ``init.freeze`` names and builds fresh optimizers. Step, optimizer state, carries and run folder are
the new run's own. A resumed run (``run.resume``) loads its own checkpoint instead (freezing and fresh
optimizers still apply, so that its saved optimizer state fits).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch.optim import Optimizer

from hrm_fast.checkpoint import CheckpointError, load_state_into
from hrm_fast.config import Config, TrainConfig
from hrm_fast.model.hrm import HRM
from hrm_fast.solve.rows import IDENTIFIERS, checkpoint_names, map_rows
from hrm_fast.training.optim import SparseSignSGD, build_optimizers

FREEZE = ("none", "network", "embedding")


def freeze(model: HRM, what: str) -> None:
    """Set ``requires_grad`` of the network's Parameters: False for ``network``, True otherwise.
    (The puzzle table is a buffer trained by its own optimizer; ``embedding`` leaves it out of them.)"""
    if what not in FREEZE:
        raise ValueError(f"init.freeze={what!r}: expected one of {', '.join(FREEZE)}")
    for p in model.parameters():
        p.requires_grad_(what != "network")


def optimizers_for(model: HRM, train_cfg: TrainConfig, frozen: str) -> list[Optimizer]:
    """The optimizers of what trains: both (``none``), the puzzle table's only (``network``), the
    network's only (``embedding``). Every param group carries ``base_lr`` for the LR schedule."""
    if frozen == "none":
        return build_optimizers(model, train_cfg)
    if frozen == "embedding":
        return [o for o in build_optimizers(model, train_cfg) if not isinstance(o, SparseSignSGD)]
    if model.puzzle_emb is None:
        raise ValueError("init.freeze=network: the model has no puzzle embedding, so nothing would train")
    opt = SparseSignSGD(model.puzzle_emb, lr=train_cfg.puzzle_emb_lr, weight_decay=train_cfg.puzzle_emb_weight_decay)
    for group in opt.param_groups:
        group["base_lr"] = group["lr"]
    return [opt]


def load_init_weights(model: HRM, config: Config, new_names: list[str] | None) -> str:
    """Copy ``config.init.from``'s weights into ``model``, mapping puzzle rows by name; returns a summary line.

    Raises CheckpointError (unreadable checkpoint, other architecture) naming the checkpoint."""
    from hrm_fast.eval.pipeline import load_for_eval

    src, src_cfg, folder = load_for_eval(config.init.from_, torch.device("cpu"))
    tensors = {k: v.detach() for k, v in src.state_dict().items()}
    note = ""
    if model.puzzle_emb is not None and "puzzle_emb.weights" in tensors:
        old = tensors["puzzle_emb.weights"]
        old_names = checkpoint_names(folder, src_cfg, old.shape[0])
        names = new_names if new_names is not None else [f"<row {i}>" for i in range(model.num_puzzle_identifiers)]
        if len(names) != model.num_puzzle_identifiers:
            raise CheckpointError(f"{config.data.path}/{IDENTIFIERS}: {len(names)} names for a table of "
                                  f"{model.num_puzzle_identifiers} rows")
        tensors["puzzle_emb.weights"], copied = map_rows(old, old_names, names)
        note = (f"; puzzle rows: {copied} of {len(names) - 1} copied by name, the rest start at the mean row"
                if old_names is not None else
                f"; puzzle rows: the checkpoint's identifier names are unknown (no {IDENTIFIERS} beside it or in "
                f"its data.path {src_cfg.data.path}), so every row starts at the mean row")
    differs = [k for k in ("H_cycles", "L_cycles", "halt_max_steps", "forward_dtype")
               if getattr(src_cfg.model, k) != getattr(config.model, k)]
    load_state_into(model, tensors, f"init.from={folder}")
    if differs:
        note += "; model settings that differ from the checkpoint's: " + ", ".join(
            f"{k} {getattr(src_cfg.model, k)} -> {getattr(config.model, k)}" for k in differs)
    return f"init.from {folder}: weights loaded, freeze={config.init.freeze}{note}"


def init_from_checkpoint(trainer: Any, load_weights: bool = True) -> None:
    """The trainer hook: load ``init.from`` into ``trainer.model`` (unless resuming: ``load_weights`` False),
    freeze what ``init.freeze`` names and build fresh optimizers for the rest (``trainer``: a Trainer)."""
    cfg = trainer.cfg
    message = f"init.from: resuming, freeze={cfg.init.freeze}"
    if load_weights:
        names_file = Path(cfg.data.path) / IDENTIFIERS
        names = json.loads(names_file.read_text()) if names_file.is_file() else None
        message = load_init_weights(trainer.model, cfg, names)
    freeze(trainer.model, cfg.init.freeze)
    trainer.optimizers = optimizers_for(trainer.model, cfg.train, cfg.init.freeze)
    trainer.params = [p for p in trainer.model.parameters() if p.requires_grad]
    trainer.num_params = sum(p.numel() for p in trainer.params)
    trainer._say(message)
