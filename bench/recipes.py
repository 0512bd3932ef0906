"""Training recipes of the learning benchmark (``python -m bench.learn``): named override sets on cpu-tiny.

A recipe is the ``cpu-tiny`` preset plus ``key=value`` overrides (the same syntax as ``python -m train.run``).
Every lever below is an existing config key; ``source`` says where the idea comes from and ``effect`` what
it changes. The benchmark's budget is in model FLOPs (``hrm_fast.flops.step_flops``), so a recipe with
cheaper steps gets more of them, and one with dearer steps fewer.

Sources: HRM = Wang et al. 2025, "Hierarchical Reasoning Model" (arXiv 2506.21734) and its repo;
ARC Prize = "The Hidden Drivers of HRM's Performance on ARC-AGI" (arcprize.org blog, 2025: ~300
augmentations about as good as 1000; the outer refinement loop, i.e. ACT segments, the main driver);
TRM = Jolicoeur-Martineau 2025, "Less is More: Recursive Reasoning with Tiny Networks" (arXiv
2510.04871: one forward pass per step without the Q-continue target); mdlARC = github.com/mvakde/mdlARC
(a plain transformer, far fewer augmentations, larger learning rates, no padding tokens, NorMuon);
Muon = K. Jordan 2024 (kellerjordan.github.io/posts/muon) and Liu et al. 2025, "Muon is Scalable for LLM
Training" (arXiv 2502.16982: the update scaled to AdamW's RMS, so it takes AdamW's learning rate).
"""

from __future__ import annotations

from dataclasses import dataclass

from hrm_fast.config import ConfigError

BASE_PRESET = "cpu-tiny"
# The recipe the cpu-small preset (and, scaled up, hrm-4090) is made from: the best measured at 1e14 FLOP on val
# (docs/learning, seventh measurement); the presets were aug-2 before it.
BEST_RECIPE = "aug-2-no-bootstrap"


@dataclass(frozen=True)
class Recipe:
    """A named set of overrides on :data:`BASE_PRESET`."""

    name: str
    overrides: tuple[str, ...]
    source: str
    effect: str


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("baseline", (), "cpu-tiny preset (HRM's recipe scaled to a CPU)",
           "HRM as the cpu-tiny preset trains it: 16 augmentations, lr 3e-4, bootstrap Q target, 4 segments"),
    Recipe("no-bootstrap", ("model.bootstrap_q=false",), "TRM (drops the extra Q-continue forward pass)",
           "no target-Q pass and no Q-continue loss: a training step costs 20 instead of 32 block passes "
           "(1.6x the steps per FLOP); training-time halting compares q_halt with an untrained q_continue; "
           "evaluation always runs halt_max_steps segments, so its predictions do not use the halting rule"),
    Recipe("aug-4", ("data.num_aug=4",), "ARC Prize (fewer augmentations cost little); mdlARC",
           "4 instead of 16 augmented copies per task: the same steps see each copy ~4x more often; "
           "voting at evaluation has 5 views per test input instead of 17"),
    Recipe("aug-2", ("data.num_aug=2",), "aug-4's gain at 1e14 FLOP, one step further; mdlARC",
           "2 instead of 16 augmented copies per task: each copy is drawn ~8x more often; 3 views per test input"),
    Recipe("aug-1", ("data.num_aug=1",), "aug-2's gain over aug-4 at 1e14 FLOP, one step further; mdlARC",
           "1 instead of 16 augmented copies per task: 2 views per test input instead of 17, each drawn ~8.5x more "
           "often; with 2 views pass@2 submits both views' answers, so voting does not change it"),
    Recipe("aug-2-no-bootstrap", ("data.num_aug=2", "model.bootstrap_q=false"),
           "aug-2 (best at 1e14 FLOP) with no-bootstrap's cheaper steps (TRM)",
           "aug-2's data with no target-Q pass: 1.6x the steps per FLOP over 3 views per test input; tests whether "
           "the two levers add up"),
    Recipe("aug-64", ("data.num_aug=64",), "HRM (1000 augmentations); ARC Prize (~300 suffice)",
           "64 augmented copies per task (more diverse data, each seen less often); 65 views per test input"),
    Recipe("lr-1e-3", ("train.lr=1e-3",), "mdlARC (larger learning rates for small models)",
           "weights' peak learning rate 1e-3 instead of 3e-4 (cosine to 10% as before)"),
    Recipe("puzzle-lr-1e-1", ("train.puzzle_emb_lr=1e-1",), "HRM (puzzle table learns 100x faster than weights)",
           "puzzle-embedding table's learning rate 1e-1 instead of 1e-2"),
    Recipe("warmup-300", ("train.lr_warmup_steps=300",), "HRM (2000 warmup steps at full scale)",
           "300 instead of 30 linear warm-up steps"),
    Recipe("batch-64", ("train.global_batch_size=64",), "HRM (batch 768 at full scale)",
           "64 rows per step instead of 16: 4x the FLOPs per step, so a quarter of the steps"),
    Recipe("halt-8", ("model.halt_max_steps=8",), "ARC Prize (outer refinement loop is the main driver)",
           "up to 8 ACT segments instead of 4: same FLOPs per training step, twice the evaluation segments"),
    Recipe("cycles-h1", ("model.H_cycles=1",), "TRM (fewer, cheaper recursions per step)",
           "1 instead of 2 H cycles: 6 instead of 12 block passes per segment forward (cheaper steps)"),
    Recipe("trm", ("model.arch=trm", "model.L_layers=2", "model.H_cycles=3", "model.L_cycles=4",
                   "model.bootstrap_q=false", "model.puzzle_emb_tokens=16", "train.ema=true", "train.ema_decay=0.99"),
           "TRM (TRM's ARC-1 architecture at cpu-tiny's width; its config/arch/trm.yaml)",
           "one 2-block network for both updates, 3 cycles x 4 latent updates, the whole last cycle back-propagated, "
           "halt on q_halt > 0, 16 puzzle-prefix tokens; EMA of the weights measured, with decay 0.99 instead of "
           "TRM's 0.999 because these budgets are a few hundred steps (a 0.999 average would still be ~80% the "
           "initial weights); 1.8x the FLOPs of a baseline step, so fewer steps"),
    Recipe("muon", ("train.matrix_optimizer=muon",), "Muon; mdlARC (NorMuon, a Muon variant)",
           "the 16 attention/MLP weight matrices train with Muon (momentum orthogonalised by 5 Newton-Schulz steps, "
           "update RMS matched to AdamW's, same lr 3e-4 and schedule); embeddings, heads and the puzzle table as "
           "before. The Newton-Schulz steps are optimizer work the FLOP budget does not count (about 1 GFLOP per "
           "step against the step's 30)"),
    Recipe("pad-aware", ("model.pad_aware=true",), "issue 12 (pad-aware canvases); mdlARC (no padding tokens)",
           "each segment runs every row on a k x k window of the 10x10 canvas over its own cells (k the batch's "
           "largest box, a multiple of 4): cells outside it are not attended to, keep their z and predict PAD; "
           "eager only. The FLOP budget counts the full canvas (hrm_fast.flops does not see the window), so it gets "
           "the baseline's steps and any saving shows only in wall time"),
)}


def recipe_overrides(name: str) -> tuple[str, ...]:
    """The overrides of recipe ``name``; ConfigError naming the known recipes otherwise."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r} (known: {', '.join(RECIPES)})")
    return RECIPES[name].overrides
