"""The ACT carry update: the reference, the ``hrm_fast::act_reset`` / ``hrm_fast::act_halt`` ops, the dispatchers.

The kernels live in the C++/CUDA extension ``hrm_fast._C`` (``csrc/act.cpp``, ``csrc/cuda/act.cu``); this
module adds their fake (meta) implementations for ``torch.compile``. When the extension was not built
(``HRM_FAST_SKIP_EXT=1``) or has no kernel for the tensors' device, the dispatchers run the pure-PyTorch
reference, which has identical semantics. Both ops mutate the carry buffers in place and return nothing,
so the buffers keep their addresses (CUDA graphs stay valid).
"""

from __future__ import annotations

import torch

try:
    from hrm_fast import _C  # noqa: F401  (registers torch.ops.hrm_fast.*)

    _EXTENSION = True
except ImportError:
    _EXTENSION = False


def reference_reset(
    z_H: torch.Tensor,
    z_L: torch.Tensor,
    steps: torch.Tensor,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    puzzle_identifiers: torch.Tensor,
    halted: torch.Tensor,
    H_init: torch.Tensor,
    L_init: torch.Tensor,
    new_inputs: torch.Tensor,
    new_labels: torch.Tensor,
    new_puzzle_identifiers: torch.Tensor,
) -> None:
    """Before a segment: rows with ``halted`` set restart (in place on the carry buffers).

    z_H, z_L: [B, S, D] float; H_init, L_init: [D] same dtype; steps: [B] int32;
    halted: [B] bool; inputs/labels: [B, L] and puzzle_identifiers: [B], each with the dtype of
    its ``new_*`` twin. Halted rows get z <- init (broadcast over S), steps <- 0 and the new
    batch's row of inputs, labels and puzzle identifiers; other rows are left untouched.
    """
    rows = halted.view(-1, 1, 1)
    z_H.copy_(torch.where(rows, H_init.view(1, 1, -1), z_H))
    z_L.copy_(torch.where(rows, L_init.view(1, 1, -1), z_L))
    steps.copy_(torch.where(halted, torch.zeros_like(steps), steps))
    inputs.copy_(torch.where(halted.view(-1, 1), new_inputs, inputs))
    labels.copy_(torch.where(halted.view(-1, 1), new_labels, labels))
    puzzle_identifiers.copy_(torch.where(halted, new_puzzle_identifiers, puzzle_identifiers))


def reference_halt(
    steps: torch.Tensor,
    halted: torch.Tensor,
    q_halt: torch.Tensor,
    q_continue: torch.Tensor,
    explore_draw: torch.Tensor,
    min_steps_draw: torch.Tensor,
    max_steps: int,
    exploration_prob: float,
    training: bool,
) -> None:
    """After a segment: advance step counters and decide halting (in place).

    steps: [B] int32, halted: [B] bool, q_halt/q_continue: [B] fp32,
    explore_draw: [B] fp32 uniform in [0, 1), min_steps_draw: [B] int32 uniform in [2, max_steps].
    steps += 1; halted = steps >= max_steps; when training and max_steps > 1 also halt where
    q_halt > q_continue, but a row whose explore_draw < exploration_prob may not halt before
    min_steps_draw steps.
    """
    steps.add_(1)
    new_halted = steps >= max_steps
    if training and max_steps > 1:
        new_halted = new_halted | (q_halt > q_continue)
        min_halt = torch.where(explore_draw < exploration_prob, min_steps_draw, torch.zeros_like(min_steps_draw))
        new_halted = new_halted & (steps >= min_halt)
    halted.copy_(new_halted)


# Decided once at import: a lookup per call would be a graph break under torch.compile.
_KERNELS = {
    device: _EXTENSION and torch._C._dispatch_has_kernel_for_dispatch_key("hrm_fast::act_reset", key)
    for device, key in (("cpu", "CPU"), ("cuda", "CUDA"))
}


def extension_available(device_type: str = "cpu") -> bool:
    """True when ``hrm_fast._C`` is importable and has a kernel for ``device_type`` (cpu/cuda)."""
    return _KERNELS.get(device_type, False)


if _EXTENSION:  # both ops only mutate their inputs: the fake kernels have nothing to do
    for _name in ("act_reset", "act_halt"):
        torch.library.register_fake(f"hrm_fast::{_name}")(lambda *args: None)


def act_reset(*args: torch.Tensor) -> None:
    """Restart halted rows in place: the positional arguments and semantics of :func:`reference_reset`."""
    if extension_available(args[0].device.type):
        torch.ops.hrm_fast.act_reset(*args)
    else:
        reference_reset(*args)


def act_halt(*args) -> None:
    """Advance steps and decide halting in place: the positional arguments and semantics of :func:`reference_halt`."""
    max_steps, exploration_prob, training = args[6:]
    args = (*args[:6], int(max_steps), float(exploration_prob), bool(training))
    if extension_available(args[0].device.type):
        torch.ops.hrm_fast.act_halt(*args)
    else:
        reference_halt(*args)
