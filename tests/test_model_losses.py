"""Losses and metrics against hand-computed values (docs/hrm.md §2)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hrm_fast.model.hrm import Carry
from hrm_fast.model.losses import act_loss, softmax_cross_entropy, stablemax, stablemax_cross_entropy

IGN = -100


def test_stablemax_function_values():
    x = torch.tensor([-3.0, -1.0, 0.0, 0.5, 2.0], dtype=torch.float64)
    assert torch.allclose(stablemax(x), torch.tensor([1 / 4, 1 / 2, 1.0, 1.5, 3.0], dtype=torch.float64))


def test_stablemax_cross_entropy_matches_formula_in_float64():
    logits = torch.tensor([[[1.0, -1.0, 0.0], [2.0, 3.0, -4.0]]])
    labels = torch.tensor([[0, 2]])
    loss = stablemax_cross_entropy(logits, labels)
    assert loss.dtype == torch.float64
    # s = [2, 1/2, 1] -> p0 = 2/3.5 ; s = [3, 4, 1/5] -> p2 = 0.2/7.2
    want = torch.tensor([[-math.log(2 / 3.5), -math.log(0.2 / 7.2)]], dtype=torch.float64)
    assert torch.allclose(loss, want, rtol=1e-12)


def test_ignored_labels_give_zero_loss():
    logits = torch.randn(2, 5, 12)
    labels = torch.randint(0, 12, (2, 5))
    labels[0, 1] = IGN
    labels[1] = IGN
    for fn in (stablemax_cross_entropy, softmax_cross_entropy):
        loss = fn(logits, labels)
        assert loss[0, 1] == 0 and (loss[1] == 0).all() and (loss[0, [0, 2, 3, 4]] > 0).all()


def test_softmax_cross_entropy_matches_log_softmax():
    logits = torch.randn(3, 4, 12)
    labels = torch.randint(0, 12, (3, 4))
    want = -F.log_softmax(logits, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(softmax_cross_entropy(logits, labels), want)


def fake_carry(labels: torch.Tensor, halted: list[bool], steps: list[int]) -> Carry:
    b = labels.shape[0]
    return Carry(
        z_H=torch.zeros(b, 1, 1), z_L=torch.zeros(b, 1, 1),
        steps=torch.tensor(steps, dtype=torch.int32), halted=torch.tensor(halted),
        current_data={"inputs": torch.zeros_like(labels), "labels": labels,
                      "puzzle_identifiers": torch.zeros(b, dtype=torch.int32)},
    )  # fmt: skip


@pytest.mark.parametrize("loss_type", ["stablemax", "softmax"])
def test_act_loss_hand_computed(loss_type):
    # 3 rows, 4 positions, vocab 3
    labels = torch.tensor([[0, 1, IGN, IGN], [2, 2, 2, 2], [IGN, IGN, IGN, IGN]], dtype=torch.int32)
    logits = torch.zeros(3, 4, 3)
    logits[0, 0, 0] = logits[0, 1, 1] = 2.0  # row 0: all correct
    logits[1, :, 2] = 1.0
    logits[1, 3, 0] = 5.0  # row 1: 3 of 4 correct
    q_halt = torch.tensor([0.5, -1.0, 2.0])
    q_cont = torch.tensor([0.1, 0.2, 0.3])
    target = torch.tensor([0.9, 0.4, 0.5])
    carry = fake_carry(labels, halted=[True, True, False], steps=[2, 4, 1])
    outputs = {"logits": logits, "q_halt_logits": q_halt, "q_continue_logits": q_cont, "target_q_continue": target}
    loss, m = act_loss(carry, outputs, loss_type)

    fn = stablemax_cross_entropy if loss_type == "stablemax" else softmax_cross_entropy
    tok = fn(logits, labels.long()).double()
    lm = tok[0, :2].sum() / 2 + tok[1].sum() / 4 + 0.0  # per-row mean over valid labels; row 2 has none
    correct = torch.tensor([1.0, 0.0, 1.0])  # row 2: zero valid labels counts as "all correct"
    bce = lambda x, y: float(F.binary_cross_entropy_with_logits(x, y, reduction="sum"))  # noqa: E731
    want = float(lm) + 0.5 * (bce(q_halt, correct) + bce(q_cont, target))
    assert float(loss) == pytest.approx(want, rel=1e-6)
    assert float(m["lm_loss"]) == pytest.approx(float(lm), rel=1e-6)
    # metrics over halted rows with >= 1 valid label: rows 0 and 1
    assert int(m["count"]) == 2
    assert float(m["accuracy"]) == pytest.approx(1.0 + 0.75)
    assert int(m["exact_accuracy"]) == 1
    assert int(m["q_halt_accuracy"]) == 2  # row 0: q>=0 and correct; row 1: q<0 and wrong
    assert int(m["steps"]) == 6
    assert float(m["q_continue_loss"]) == pytest.approx(bce(q_cont, target), rel=1e-6)


def test_act_loss_without_target_has_zero_q_continue_and_gradient_flows():
    labels = torch.tensor([[1, 2]], dtype=torch.int32)
    logits = torch.randn(1, 2, 4, requires_grad=True)
    q = torch.zeros(1, requires_grad=True)
    loss, m = act_loss(fake_carry(labels, [True], [1]), {"logits": logits, "q_halt_logits": q,
                                                         "q_continue_logits": torch.zeros(1)})  # fmt: skip
    assert float(m["q_continue_loss"]) == 0.0
    loss.backward()
    assert logits.grad.abs().sum() > 0 and q.grad.abs().sum() > 0
