"""The 2x-reference-error rule for comparing a fast op with its PyTorch reference.

Inputs are drawn once in the test dtype, then the fast op and the reference run in that dtype and
the reference runs again in fp64 on the same (exactly up-cast) values. For the output and every
input gradient, the fast op's max abs error against fp64 may be at most ``factor`` times the
dtype reference's error plus a floor of ``floor_ulps`` units of the dtype's epsilon times the
largest fp64 value (so exact-looking cases such as a reference error of 0 do not demand exactness).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

Op = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class ErrorRow:
    name: str  # "out" or "grad[i]"
    kernel_err: float  # max |fast(dtype) - reference(fp64)|
    reference_err: float  # max |reference(dtype) - reference(fp64)|
    scale: float  # max |reference(fp64)|
    bound: float

    @property
    def ok(self) -> bool:
        return self.kernel_err <= self.bound

    def line(self, case: str) -> str:
        flag = "ok" if self.ok else "FAIL"
        ratio = self.kernel_err / max(self.reference_err, 1e-30)
        return (f"{case:<34} {self.name:<8} kernel {self.kernel_err:9.3e}  ref {self.reference_err:9.3e}  "
                f"ratio {ratio:6.2f}  max|y| {self.scale:8.2e}  {flag}")  # fmt: skip


def _run(op: Op, args: Sequence, grad_out_seed: int, grad_mask: Sequence[bool]) -> list[torch.Tensor]:
    leaves = [a.detach().clone().requires_grad_(m) if isinstance(a, torch.Tensor) else a
              for a, m in zip(args, grad_mask)]  # fmt: skip
    out = op(*leaves)
    gen = torch.Generator().manual_seed(grad_out_seed)
    grad_out = torch.randn(out.shape, generator=gen, dtype=torch.float32).to(device=out.device, dtype=out.dtype)
    out.backward(grad_out)
    return [out.detach()] + [leaf.grad for leaf, m in zip(leaves, grad_mask) if m]


def compare(
    fast: Op,
    reference: Op,
    args: Sequence,
    grad_mask: Sequence[bool],
    fp64_args: Sequence | None = None,
    factor: float = 2.0,
    floor_ulps: float = 0.5,
    grad_out_seed: int = 1234,
    truth_op: Op | None = None,
) -> list[ErrorRow]:
    """Return one ErrorRow for the output and for each argument with ``grad_mask`` set.

    ``args`` are the dtype inputs (tensors and plain values); ``fp64_args`` their fp64 twins (default:
    every floating tensor up-cast to fp64); ``truth_op`` computes the fp64 truth (default: ``reference``,
    for references that do compute in their input's dtype).
    """
    if fp64_args is None:
        fp64_args = [a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
    dtype = next(a.dtype for a, m in zip(args, grad_mask) if m)
    eps = torch.finfo(dtype).eps
    truth = _run(truth_op or reference, fp64_args, grad_out_seed, grad_mask)
    ref = _run(reference, args, grad_out_seed, grad_mask)
    got = _run(fast, args, grad_out_seed, grad_mask)
    rows = []
    for i, (t, r, g) in enumerate(zip(truth, ref, got)):
        if g is None or g.shape != t.shape or g.dtype != r.dtype:
            raise AssertionError(f"{'out' if i == 0 else f'grad[{i - 1}]'}: fast op gave "
                                 f"{None if g is None else (g.dtype, tuple(g.shape))}, expected {r.dtype} "
                                 f"{tuple(t.shape)}")  # fmt: skip
        kernel_err = (g.double() - t).abs().max().item()
        reference_err = (r.double() - t).abs().max().item()
        scale = t.abs().max().item()
        bound = factor * reference_err + floor_ulps * eps * max(scale, 1e-3)
        if kernel_err != kernel_err:  # NaN never passes
            bound = -1.0
        rows.append(ErrorRow("out" if i == 0 else f"grad[{i - 1}]", kernel_err, reference_err, scale, bound))
    return rows


def assert_ok(rows: list[ErrorRow], case: str) -> None:
    """Print every row of ``case``; fail with the rows over their bound."""
    for row in rows:
        print(row.line(case))
    bad = [row for row in rows if not row.ok]
    assert not bad, "\n".join(row.line(case) for row in bad)
