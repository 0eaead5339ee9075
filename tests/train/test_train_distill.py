"""Distillation loss value against a hand computation; teacher frozen and in eval mode."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.train import DistillationLoss


def _softmax(row: list[float], t: float) -> list[float]:
    m = max(v / t for v in row)
    e = [math.exp(v / t - m) for v in row]
    return [v / sum(e) for v in e]


def _hand(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, temp: float, alpha: float) -> float:
    kl = ce = 0.0
    for srow, trow, label in zip(s.tolist(), t.tolist(), y.tolist()):
        ps, pt = _softmax(srow, temp), _softmax(trow, temp)
        kl += sum(b * (math.log(b) - math.log(a)) for a, b in zip(ps, pt))
        ce += -math.log(_softmax(srow, 1.0)[label])
    n = len(y)
    return alpha * temp**2 * kl / n + (1 - alpha) * ce / n


@pytest.mark.parametrize(("temp", "alpha"), [(4.0, 0.9), (1.0, 0.5), (2.5, 1.0), (3.0, 0.0)])
def test_value_matches_hand_computation(temp: float, alpha: float) -> None:
    s, t = torch.randn(6, 5) * 3, torch.randn(6, 5) * 3
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    kd = DistillationLoss(nn.Identity(), temperature=temp, alpha=alpha)
    got = kd(s, y, teacher_logits=t)
    assert float(got) == pytest.approx(_hand(s, t, y, temp, alpha), rel=1e-5)
    assert float(kd(s, y, inputs=t)) == pytest.approx(float(got), rel=1e-6)  # teacher = identity


def test_student_equal_to_teacher_has_zero_soft_loss() -> None:
    logits = torch.randn(4, 10)
    kd = DistillationLoss(nn.Identity(), alpha=1.0)
    assert float(kd(logits, torch.zeros(4, dtype=torch.long), inputs=logits)) == pytest.approx(
        0.0, abs=1e-6
    )


def test_teacher_is_frozen_and_in_eval_mode() -> None:
    teacher = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 3))
    stats = teacher[1].running_mean.clone()
    student = nn.Linear(4, 3)
    kd = DistillationLoss(teacher).train()
    x, y = torch.randn(8, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    kd(student(x), y, inputs=x).backward()
    assert not teacher.training
    assert torch.equal(teacher[1].running_mean, stats)  # eval mode: BN stats untouched
    assert all(p.grad is None for p in teacher.parameters())
    assert student.weight.grad is not None and student.weight.grad.abs().sum() > 0


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="temperature"):
        DistillationLoss(nn.Identity(), temperature=0)
    with pytest.raises(ConfigError, match="alpha"):
        DistillationLoss(nn.Identity(), alpha=1.5)
    with pytest.raises(ConfigError, match="inputs"):
        DistillationLoss(nn.Identity())(torch.randn(2, 3), torch.tensor([0, 1]))
