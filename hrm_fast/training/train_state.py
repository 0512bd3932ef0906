"""Exact-resume state that is not model weights: RNG states and the persistent ACT carry.

Everything returned here is made of tensors, ints, floats, strings, lists, tuples and dicts, so a
``state.pt`` holding it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import numpy as np
import torch


def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's RNG states: python ``random``, numpy, torch CPU and (if used) this CUDA device."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Inverse of :func:`rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    np.random.set_state((npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["gauss"]))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def carry_tensors(carry: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor inside ``carry`` (dataclasses, dicts, tuples, plain objects), keyed by a dotted path."""
    out: dict[str, torch.Tensor] = {}
    if isinstance(carry, torch.Tensor):
        out[prefix] = carry
    elif dataclasses.is_dataclass(carry) and not isinstance(carry, type):
        for f in dataclasses.fields(carry):
            out.update(carry_tensors(getattr(carry, f.name), f"{prefix}{f.name}."))
    elif isinstance(carry, dict):
        for k, v in carry.items():
            out.update(carry_tensors(v, f"{prefix}{k}."))
    elif isinstance(carry, (list, tuple)):
        for i, v in enumerate(carry):
            out.update(carry_tensors(v, f"{prefix}{i}."))
    elif hasattr(carry, "__dict__"):
        for k, v in vars(carry).items():
            out.update(carry_tensors(v, f"{prefix}{k}."))
    return {k.rstrip("."): v for k, v in out.items()}


def carry_state(carry: Any) -> dict[str, torch.Tensor]:
    """CPU copies of the carry's tensors (for a checkpoint)."""
    return {k: v.detach().cpu().clone() for k, v in carry_tensors(carry).items()}


def load_carry_state(carry: Any, state: dict[str, torch.Tensor]) -> None:
    """Copy ``state`` into ``carry``'s tensors in place (their storage stays put, as compiled code expects)."""
    live = carry_tensors(carry)
    if set(live) != set(state):
        raise ValueError(f"carry in checkpoint has tensors {sorted(state)}, the model's carry has {sorted(live)}")
    with torch.no_grad():
        for k, t in live.items():
            src = state[k]
            if src.shape != t.shape:
                raise ValueError(f"carry tensor {k}: checkpoint shape {tuple(src.shape)}, model {tuple(t.shape)}")
            t.copy_(src.to(device=t.device, dtype=t.dtype))


def concat_carry_states(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Join per-rank/per-micro-batch carries along the batch dim (0) into one global carry."""
    return {k: torch.cat([s[k] for s in states], dim=0) for k in states[0]}


def slice_carry_state(state: dict[str, torch.Tensor], start: int, stop: int) -> dict[str, torch.Tensor]:
    """Rows ``start:stop`` of a global carry (the inverse of :func:`concat_carry_states`)."""
    return {k: v[start:stop] for k, v in state.items()}
