"""FLOP model of an HRM or TRM segment (docs/hrm.md §7).

Convention: a matmul of [m, k] x [k, n] costs 2mkn FLOPs. One block pass over one sequence of S
tokens = 2 S (block weights) for the projections + 4 S^2 D for attention scores and values (TRM's
``mlp_t`` block: 2 D (sequence-MLP weights) + 2 S (channel-MLP weights), no attention term).
Backward of a with-grad block = 2x its forward. A training segment = the inner forward (every
block pass of every cycle) + backward of the with-grad passes + the bootstrap target-Q forward when
enabled; an eval segment = the inner forward. With-grad passes: HRM the last L and the last H update
(L_layers + H_layers blocks), TRM the whole last cycle ((L_cycles + 1) x L_layers blocks). Embeddings
and the LM/Q heads are counted separately (``head``); they are < 0.1% for ARC shapes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from hrm_fast.config import Config, ModelConfig, swiglu_inner


@dataclass(frozen=True)
class SegmentFlops:
    """FLOPs per sequence (per row) unless the name says otherwise."""

    seq_len: int  # S: grid tokens + puzzle prefix tokens
    block_pass: float  # one block applied to one sequence
    forward_passes: int  # block passes in one inner forward
    grad_passes: int  # ... of which run with grad (HRM: last L + last H update; TRM: the last cycle)
    bootstrap_passes: int  # block passes of the bootstrap target-Q forward (training only)
    train_equivalents: int  # forward + 2x grad + bootstrap, in block passes
    head: float  # LM head + Q head forward per sequence
    train_segment: float  # model FLOPs of one training segment (incl. heads, their backward, bootstrap)
    train_segment_no_bootstrap: float
    recompute: float  # extra forward of the with-grad blocks when grad_checkpoint is on (hardware FLOPs)
    eval_segment: float
    halt_max_steps: int

    @property
    def train_episode(self) -> float:
        """Training FLOPs of one example that runs all halt_max_steps segments."""
        return self.train_segment * self.halt_max_steps

    @property
    def eval_episode(self) -> float:
        return self.eval_segment * self.halt_max_steps

    def as_dict(self) -> dict[str, float]:
        out = asdict(self)
        out["train_episode"] = self.train_episode
        out["eval_episode"] = self.eval_episode
        return out


def channel_mlp_params(model: ModelConfig) -> int:
    """Weights of the SwiGLU over the hidden axis: gate/up (D x 2I), down (I x D)."""
    return 3 * model.hidden_size * model.intermediate_size


def sequence_mlp_params(model: ModelConfig, seq_len: int) -> int:
    """Weights of TRM's ``mlp_t`` SwiGLU over the sequence axis of ``seq_len`` tokens (prefix included)."""
    return 3 * seq_len * swiglu_inner(seq_len, model.expansion)


def block_params(model: ModelConfig, seq_len: int | None = None) -> int:
    """Weights of one block: QKV (D x 3D), output (D x D) + the channel MLP; ``mlp_t`` blocks (``seq_len``
    needed): the sequence MLP instead of the attention projections."""
    d = model.hidden_size
    if model.mlp_t:
        if seq_len is None:
            raise ValueError("block_params: model.mlp_t blocks depend on the sequence length; pass seq_len")
        return sequence_mlp_params(model, seq_len) + channel_mlp_params(model)
    return d * 3 * d + d * d + channel_mlp_params(model)


def block_pass_flops(model: ModelConfig, seq_len: int) -> float:
    """Forward FLOPs of one block on one sequence of ``seq_len`` tokens (prefix included)."""
    if model.mlp_t:  # the sequence MLP runs over D "rows" of width S, the channel MLP over S rows of width D
        return 2.0 * model.hidden_size * sequence_mlp_params(model, seq_len) + 2.0 * seq_len * channel_mlp_params(model)
    return 2.0 * seq_len * block_params(model) + 4.0 * seq_len * seq_len * model.hidden_size


def block_passes(model: ModelConfig) -> tuple[int, int]:
    """(block passes of one inner forward, of which with grad) for ``model.arch``."""
    if model.arch == "trm":
        per_cycle = (model.L_cycles + 1) * model.L_layers
        return model.H_cycles * per_cycle, per_cycle
    forward = model.H_cycles * model.L_cycles * model.L_layers + model.H_cycles * model.H_layers
    return forward, model.L_layers + model.H_layers


def segment_flops(model: ModelConfig, grid_tokens: int, vocab_size: int = 12) -> SegmentFlops:
    """FLOPs of one ACT segment for sequences of ``grid_tokens`` grid tokens (900 for 30x30 ARC)."""
    s = grid_tokens + model.puzzle_emb_len
    per_block = block_pass_flops(model, s)
    forward, grad = block_passes(model)
    bootstrap = forward if (model.bootstrap_q and model.halt_max_steps > 1) else 0
    head = 2.0 * grid_tokens * model.hidden_size * vocab_size + 2.0 * model.hidden_size * 2
    train_no_boot = (forward + 2 * grad) * per_block + 3 * head
    train = train_no_boot + bootstrap * per_block + (2.0 * model.hidden_size * 2 if bootstrap else 0.0)
    return SegmentFlops(
        seq_len=s,
        block_pass=per_block,
        forward_passes=forward,
        grad_passes=grad,
        bootstrap_passes=bootstrap,
        train_equivalents=forward + 2 * grad + bootstrap,
        head=head,
        train_segment=train,
        train_segment_no_bootstrap=train_no_boot,
        recompute=grad * per_block if model.grad_checkpoint else 0.0,
        eval_segment=forward * per_block + head,
        halt_max_steps=model.halt_max_steps,
    )


def config_flops(config: Config, vocab_size: int = 12) -> SegmentFlops:
    """:func:`segment_flops` for a run config (grid tokens = data.max_grid_size^2)."""
    return segment_flops(config.model, config.data.seq_len, vocab_size)


def step_flops(config: Config, vocab_size: int = 12) -> float:
    """Model FLOPs of one optimizer step: global_batch_size rows x one training segment."""
    return config.train.global_batch_size * config_flops(config, vocab_size).train_segment


def format_flops(value: float) -> str:
    for unit, scale in (("EFLOP", 1e18), ("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.3g} FLOP"
