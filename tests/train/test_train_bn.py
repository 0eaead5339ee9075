"""BN γ helpers: collection, sparsity fraction, histogram PNG written atomically."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from prunekit.train import bn_scales, bn_sparsity, plot_bn_histogram


def _net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.BatchNorm2d(4, affine=False), nn.BatchNorm1d(2)
    )


def test_bn_scales_names_values_and_copies() -> None:
    net = _net()
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([1.0, 0.001, -0.5, 0.0]))
    scales = bn_scales(net)
    assert list(scales) == ["1", "3"]  # non-affine BN has no γ
    assert torch.equal(scales["1"], torch.tensor([1.0, 0.001, -0.5, 0.0]))
    scales["1"].zero_()
    assert net[1].weight[0] == 1.0  # a copy, not a view
    assert bn_sparsity(bn_scales(net), threshold=0.01) == pytest.approx(2 / 6)
    assert bn_sparsity({}) == 0.0


def test_histogram_png(tmp_path: Path) -> None:
    before = {"a": torch.rand(200)}
    after = {"a": torch.rand(200) * 0.05}
    path = tmp_path / "sub" / "hist.png"
    plot_bn_histogram(before, after, path, bins=20)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    assert [p.name for p in path.parent.iterdir()] == ["hist.png"]  # no temp file left
