"""SwiGLU on the packed gate/up projection: the reference, the Triton custom op, the dispatcher.

The custom op ``hrm_fast::swiglu`` (kernel: :mod:`kernels.swiglu`, imported at the first call) is a
``custom_op`` with fake and autograd rules, opaque to ``torch.compile``. Double backward is not supported.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hrm_fast import ops

Tensor = torch.Tensor


def reference(gate_up: Tensor) -> Tensor:
    """silu(gate) * up for gate_up [..., 2 * I] = [gate | up]. Returns [..., I], same dtype."""
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


@torch.library.custom_op("hrm_fast::swiglu", mutates_args=())
def _op(gate_up: Tensor) -> Tensor:
    from kernels import swiglu as kernel  # imported lazily: it imports triton
    return kernel.forward(gate_up)


@_op.register_fake
def _(gate_up: Tensor) -> Tensor:
    return gate_up.new_empty(*gate_up.shape[:-1], gate_up.shape[-1] // 2)


@torch.library.custom_op("hrm_fast::swiglu_backward", mutates_args=())
def _backward_op(grad_out: Tensor, gate_up: Tensor) -> Tensor:
    from kernels import swiglu as kernel
    return kernel.backward(grad_out, gate_up)


@_backward_op.register_fake
def _(grad_out: Tensor, gate_up: Tensor) -> Tensor:
    return torch.empty(gate_up.shape, dtype=gate_up.dtype, device=gate_up.device)


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[0])


def _backward(ctx, grad_out: Tensor):
    (gate_up,) = ctx.saved_tensors
    return _backward_op(grad_out, gate_up)


_op.register_autograd(_backward, setup_context=_setup_context)


def fused(gate_up: Tensor) -> Tensor:
    """The Triton kernel: gate_up [..., 2*I] = [gate | up] -> silu(gate) * up [..., I], same dtype."""
    return _op(gate_up)


def swiglu(gate_up: Tensor) -> Tensor:
    """gate_up [..., 2*I] = [gate | up] -> silu(gate) * up [..., I]."""
    if ops.use_triton(gate_up):
        return fused(gate_up)
    return reference(gate_up)
