"""Mask, penalty and distillation math used by the executor."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from prunekit.recipes import ops


def test_magnitude_masks_per_tensor_and_global() -> None:
    a = torch.tensor([[0.1, -0.5], [2.0, -0.05]])
    b = torch.tensor([1.0, 3.0, -0.2, 0.3])
    local = ops.magnitude_masks({"a": a, "b": b}, sparsity=0.5)
    assert local["a"].tolist() == [[False, True], [True, False]]
    assert local["b"].tolist() == [True, True, False, False]
    glob = ops.magnitude_masks({"a": a, "b": b}, sparsity=0.5, global_ranking=True)
    # The 4 smallest of all 8 magnitudes: 0.05, 0.1, 0.2, 0.3.
    assert glob["a"].tolist() == [[False, True], [True, False]]
    assert glob["b"].tolist() == [True, True, False, False]
    per = ops.magnitude_masks({"a": a, "b": b}, sparsity=0.0, per_param={"b": 0.75})
    assert int(per["a"].sum()) == 4 and per["b"].tolist() == [False, True, False, False]


def test_magnitude_masks_exact_counts_on_large_tensor() -> None:
    w = torch.randn(64, 32, 3, 3)
    mask = ops.magnitude_masks({"w": w}, sparsity=0.9)["w"]
    assert mask.shape == w.shape
    assert int((~mask).sum()) == round(0.9 * w.numel())
    assert w[mask].abs().min() >= w[~mask].abs().max()


def test_threshold_and_std_masks() -> None:
    w = torch.tensor([0.01, -0.2, 0.5, -1.0])
    assert ops.threshold_masks({"w": w}, {"w": 0.3})["w"].tolist() == [False, False, True, True]
    std = float(w.std())
    mask = ops.std_masks({"w": w}, {"w": 0.5})["w"]
    assert mask.tolist() == (w.abs() > 0.5 * std).tolist()
    assert mask.tolist() == [False, False, True, True]


def test_slim_masks_global_threshold_with_floor() -> None:
    g1 = torch.tensor([0.01, 0.02, 0.03, 0.04])  # all small: a global threshold would empty it
    g2 = torch.tensor([1.0, 0.5, 0.9, 0.015])
    keep = ops.slim_masks({"g1": g1, "g2": g2}, percent=0.5, floor=1)
    assert keep["g2"].tolist() == [True, True, True, False]
    assert keep["g1"].tolist() == [False, False, False, True]  # floor keeps its largest
    keep2 = ops.slim_masks({"g1": g1, "g2": g2}, percent=0.5, floor=2)
    assert keep2["g1"].tolist() == [False, False, True, True]


def test_l1_penalty_gradient_is_lambda_sign() -> None:
    g = torch.tensor([0.5, -0.2, 0.1], requires_grad=True)
    loss = ops.l1_penalty({"g": g}, {"g": 1e-4})
    assert float(loss.detach()) == pytest.approx(1e-4 * 0.8)
    loss.backward()
    assert g.grad is not None
    assert torch.allclose(g.grad, 1e-4 * torch.sign(g.detach()))


def test_group_lasso_penalty_value() -> None:
    w = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]])  # 3 filters of 2 weights
    filters = ops.group_lasso_penalty({"w": w}, {"w": 0.1}, "filters")
    assert float(filters) == pytest.approx(0.1 * math.sqrt(2) * (5 + 0 + 1), rel=1e-5)
    cols = ops.group_lasso_penalty({"w": w}, {"w": 1.0}, "cols")
    assert float(cols) == pytest.approx(math.sqrt(3) * (math.sqrt(10) + 4), rel=1e-5)


def test_distillation_loss() -> None:
    torch.manual_seed(0)
    s, t = torch.randn(8, 5), torch.randn(8, 5)
    y = torch.randint(0, 5, (8,))
    ce = F.cross_entropy(s, y)
    assert torch.allclose(ops.distillation_loss(s, t, y, 4.0, 0.0), ce)
    assert float(ops.distillation_loss(s, s, y, 4.0, 1.0)) == pytest.approx(0.0, abs=1e-6)
    kl = F.kl_div(F.log_softmax(s / 2, 1), F.softmax(t / 2, 1), reduction="batchmean")
    mixed = ops.distillation_loss(s, t, y, 2.0, 0.25)
    assert float(mixed) == pytest.approx(float(0.25 * 4 * kl + 0.75 * ce), rel=1e-5)
