"""Reports: totals, per-layer shapes and the plot's data."""

from __future__ import annotations

import matplotlib
import pytest
import torch
from torch import nn

from prunekit.pipeline import PruneConfig, prune
from prunekit.report import compare, layer_channels


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    ).eval()


@pytest.fixture
def report():  # type: ignore[no-untyped-def]
    model, x = _net(), torch.randn(1, 3, 8, 8)
    layers = layer_channels(model)
    dense = _net()
    prune(model, x, PruneConfig(ratio=0.5))
    return compare(dense, model, x, latency=False, before_layers=layers)


def test_totals_and_changed_layers(report) -> None:  # type: ignore[no-untyped-def]
    # conv0 16->8 filters, conv3 32->16 filters and 8 inputs, the head keeps its 10 outputs
    p_after = (8 * 3 * 9 + 8) + 2 * 8 + (16 * 8 * 9 + 16) + (10 * 16 + 10)
    assert report.after.params == p_after
    assert report.before.params == (16 * 27 + 16) + 32 + (32 * 16 * 9 + 32) + (10 * 32 + 10)
    table = report.to_table()
    assert "0" in table and "[16, 3, 3, 3] -> [8, 3, 3, 3]" in table


def test_plot_writes_an_image_of_the_kept_fractions(report, tmp_path) -> None:  # type: ignore[no-untyped-def]
    backend = matplotlib.get_backend()
    kept = report.plot(tmp_path / "r.png", title="t")
    assert kept == {"0": 0.5, "3": 0.5, "7": 1.0}
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report.plot(tmp_path / "r.svg")
    assert (tmp_path / "r.svg").read_text().lstrip().startswith("<?xml")
    assert matplotlib.get_backend() == backend  # the user's backend is left alone
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temp files
