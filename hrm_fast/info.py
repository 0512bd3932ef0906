"""``python -m hrm_fast.info [preset=NAME] [key=value ...]``: what a config costs before you rent a GPU.

Prints the resolved config, the architecture (HRM or TRM), the trainable parameter count, the
puzzle-embedding table size (from the built dataset when it exists), the FLOPs per training and eval
segment (docs/hrm.md §7) and the whole run's steps and RTX 4090 hours at 50% MFU.
The model is built on the ``meta`` device, so this is instant and allocates nothing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from hrm_fast.config import Config, ConfigError, config_help, config_to_yaml, load_config
from hrm_fast.flops import config_flops, format_flops
from hrm_fast.model.hrm import HRM

RTX_4090_BF16 = 165e12  # dense bf16 FLOP/s, fp32 accumulate
VOCAB_SIZE = 12


# ARC-AGI-1 training + evaluation + ConceptARC at 1000 augmentations (docs/hrm.md §3.2): task groups and
# examples per augmented puzzle, for step counts before the dataset is built
ARC1_GROUPS, ARC1_MEAN_EXAMPLES = 960, 4.146


def dataset_metadata(config: Config, key: str, splits: tuple[str, ...] = ("train", "test", "val")) -> float | None:
    """``key`` of the built dataset's ``dataset.json`` at data.path (first of ``splits``), or None when not built."""
    for split in splits:
        meta = Path(config.data.path) / split / "dataset.json"
        if meta.exists():
            try:
                return float(json.loads(meta.read_text())[key])
            except (ValueError, KeyError, json.JSONDecodeError):
                return None
    return None


def dataset_identifiers(config: Config) -> int | None:
    """num_puzzle_identifiers of the built dataset at data.path, or None when it is not built."""
    ids = dataset_metadata(config, "num_puzzle_identifiers")
    return int(ids) if ids is not None else None


def trainable_parameters(config: Config, vocab_size: int = VOCAB_SIZE) -> int:
    with torch.device("meta"):
        model = HRM(config.model, vocab_size, config.data.seq_len, 1)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def format_seconds(seconds: float) -> str:
    """3.87 s, 12.3 ms, 45 us: three significant digits in a readable unit."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-6:.3g} us"


def report(config: Config) -> str:
    m = config.model
    lines = ["# resolved config", config_to_yaml(config).rstrip(), "", "# model"]
    if m.arch == "trm":
        kind = "sequence-MLP (mlp_t)" if m.mlp_t else "attention"
        lines.append(f"architecture: TRM, one network of {m.L_layers} {kind} blocks for both updates; "
                     f"{m.H_cycles} cycles x ({m.L_cycles} z updates + 1 y update), the last cycle back-propagated; "
                     + ("Q-continue bootstrap" if m.bootstrap_q else "halt when q_halt > 0 (no Q-continue)"))
    else:
        lines.append(f"architecture: HRM, H {m.H_layers} / L {m.L_layers} blocks, {m.H_cycles} x {m.L_cycles} cycles, "
                     "1-step gradient")
    if config.train.ema:
        lines.append(f"EMA of the weights (decay {config.train.ema_decay}) for evaluation and checkpoints")
    params = trainable_parameters(config)
    lines.append(f"trainable parameters: {params:,} (vocab {VOCAB_SIZE}; excludes the puzzle table and H/L_init)")
    lines.append(
        f"sequence: {config.data.seq_len} grid tokens + {m.puzzle_emb_len} puzzle prefix token(s); "
        f"head_dim {m.head_dim}; SwiGLU inner {m.intermediate_size}"
    )
    ids = dataset_identifiers(config)
    if m.puzzle_emb_ndim == 0:
        lines.append("puzzle table: none (puzzle_emb_ndim 0)")
    elif ids is None:
        arc1 = 876_404 * m.puzzle_emb_ndim * 4
        lines.append(
            f"puzzle table: {config.data.path} not built yet; {m.puzzle_emb_ndim} fp32 per identifier "
            f"(ARC-AGI-1 + ConceptARC at 1000 augmentations ~876k identifiers -> {arc1 / 1e9:.2f} GB)"
        )
    else:
        lines.append(
            f"puzzle table: {ids:,} identifiers x {m.puzzle_emb_ndim} fp32 = {ids * m.puzzle_emb_ndim * 4 / 1e9:.3f} GB"
        )

    f = config_flops(config, VOCAB_SIZE)
    step = f.train_segment * config.train.global_batch_size
    lines += [
        "",
        "# FLOPs (per sequence unless noted; docs/hrm.md §7 conventions)",
        f"block pass (S={f.seq_len}): {format_flops(f.block_pass)}",
        f"inner forward: {f.forward_passes} block passes ({f.grad_passes} with grad); "
        f"bootstrap target-Q: {f.bootstrap_passes}; training total {f.train_equivalents} block-pass equivalents",
        f"train segment: {format_flops(f.train_segment)} "
        f"(without bootstrap: {format_flops(f.train_segment_no_bootstrap)})",
        f"eval segment: {format_flops(f.eval_segment)}",
        f"episode of {f.halt_max_steps} segments: train {format_flops(f.train_episode)}, "
        f"eval {format_flops(f.eval_episode)}",
        f"optimizer step ({config.train.global_batch_size} rows x 1 segment): {format_flops(step)}",
    ]
    if f.recompute:
        lines.append(f"gradient checkpointing recomputes {format_flops(f.recompute)} per sequence (not in MFU)")
    est = ", ".join(f"{format_seconds(step / (RTX_4090_BF16 * u))} at {int(u * 100)}%" for u in (0.4, 0.5, 0.6))
    lines.append(f"estimated RTX 4090 time per optimizer step (bf16 peak 165 TFLOP/s, MFU): {est}")
    lines.append(run_estimate(config, step))
    return "\n".join(lines)


def run_estimate(config: Config, step: float) -> str:
    """The whole run's optimizer steps and RTX 4090 hours at 50% MFU (training only; validation not counted)."""
    from hrm_fast.training.trainer import total_steps_for

    groups = dataset_metadata(config, "total_groups", ("train",))
    mean = dataset_metadata(config, "mean_puzzle_examples", ("train",))
    source = f"{config.data.path}/train/dataset.json"
    if groups is None or mean is None:
        groups, mean = ARC1_GROUPS, ARC1_MEAN_EXAMPLES
        source = f"ARC-AGI-1 + ConceptARC estimate: {ARC1_GROUPS} groups x {ARC1_MEAN_EXAMPLES} examples"
    steps = total_steps_for(config, int(groups), mean)
    hours = steps * step / (RTX_4090_BF16 * 0.5) / 3600
    return f"whole run: {steps:,} optimizer steps ({source}); {format_flops(steps * step)}, ~{hours:.3g} h on one " \
           "RTX 4090 at 50% MFU (training only)"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        print(config_help())
        return 0
    bad = [a for a in args if "=" not in a]
    if bad:
        print(f"error: expected key=value arguments, got {bad[0]!r} (e.g. preset=seed-4090 train.lr=3e-4)",
              file=sys.stderr)
        return 2
    preset = None
    if not any(a.startswith("preset=") for a in args):
        preset = "seed-4090" if torch.cuda.is_available() else "cpu-tiny"
        print(f"# no preset given: using {preset} ({'CUDA' if torch.cuda.is_available() else 'no CUDA'} here)")
    try:
        config = load_config(preset, args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())

