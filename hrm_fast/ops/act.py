"""The ACT carry update: the ``hrm_fast::act_reset`` / ``hrm_fast::act_halt`` ops.

The kernels live in the C++/CUDA extension ``hrm_fast._C`` (``csrc/``); this module adds their
fake (meta) implementations for ``torch.compile`` and the Python wrappers the model calls. When
the extension was not built (``HRM_FAST_SKIP_EXT=1``) or has no kernel for the tensors' device,
the wrappers run the pure-PyTorch reference (:func:`hrm_fast.ops.reference.act_reset`), which has
identical semantics. Both ops mutate the carry buffers in place and return nothing, so the
buffers keep their addresses (CUDA graphs stay valid).
"""

from __future__ import annotations

import torch

from hrm_fast.ops import reference

try:
    from hrm_fast import _C  # noqa: F401  (registers torch.ops.hrm_fast.*)

    _EXTENSION = True
except ImportError:
    _EXTENSION = False


# Decided once at import: a lookup per call would be a graph break under torch.compile.
_KERNELS = {
    device: _EXTENSION and torch._C._dispatch_has_kernel_for_dispatch_key("hrm_fast::act_reset", key)
    for device, key in (("cpu", "CPU"), ("cuda", "CUDA"))
}


def extension_available(device_type: str = "cpu") -> bool:
    """True when ``hrm_fast._C`` is importable and has a kernel for ``device_type`` (cpu/cuda)."""
    return _KERNELS.get(device_type, False)


if _EXTENSION:

    @torch.library.register_fake("hrm_fast::act_reset")
    def _act_reset_fake(z_H, z_L, steps, inputs, labels, puzzle_identifiers, halted, H_init, L_init,
                        new_inputs, new_labels, new_puzzle_identifiers) -> None:
        return None

    @torch.library.register_fake("hrm_fast::act_halt")
    def _act_halt_fake(steps, halted, q_halt, q_continue, explore_draw, min_steps_draw,
                       max_steps, exploration_prob, training) -> None:
        return None


def act_reset(
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
    """Restart halted rows in place; semantics and shapes in :func:`reference.act_reset`."""
    args = (z_H, z_L, steps, inputs, labels, puzzle_identifiers, halted, H_init, L_init,
            new_inputs, new_labels, new_puzzle_identifiers)
    if extension_available(z_H.device.type):
        torch.ops.hrm_fast.act_reset(*args)
    else:
        reference.act_reset(*args)


def act_halt(
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
    """Advance steps and decide halting in place; semantics in :func:`reference.act_halt`."""
    args = (steps, halted, q_halt, q_continue, explore_draw, min_steps_draw,
            int(max_steps), float(exploration_prob), bool(training))
    if extension_available(steps.device.type):
        torch.ops.hrm_fast.act_halt(*args)
    else:
        reference.act_halt(*args)
