"""versatilize keeps every shape, lists skipped layers with reasons; to_dense is exact."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn

from prunekit.errors import ConfigError
from prunekit.models import build_model
from prunekit.versatile import (
    VersatileConfig,
    VersatileConv2d,
    to_dense,
    versatile_costs,
    versatilize,
)


def _conv_shapes(model: nn.Module) -> dict[str, tuple[int, int]]:
    return {
        p: (m.in_channels, m.out_channels)
        for p, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, VersatileConv2d))
    }


def test_vgg16_spatial_converts_every_conv_and_keeps_shapes():
    model = build_model("zoo:vgg16", num_classes=10)
    shapes = _conv_shapes(model)
    report = versatilize(model, "spatial")
    assert len(report.converted) == 13 and not report.skipped
    assert _conv_shapes(model) == shapes
    assert all(isinstance(model.get_submodule(p), VersatileConv2d) for p in report.converted)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_resnet18_skips_1x1_and_names_the_reason():
    model = torchvision.models.resnet18(num_classes=10)
    report = versatilize(model, "spatial")
    assert report.skipped["layer2.0.downsample.0"] == "1×1 kernel: no spatial variant"
    assert "conv1" in report.converted  # 7×7 stem: s = 4 crops, 64 % 4 == 0
    assert model.conv1.s == 4
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_mobilenet_depthwise_and_pointwise():
    model = torchvision.models.mobilenet_v2(num_classes=10)
    report = versatilize(model, VersatileConfig(mode="spatial+channel", delta=8))
    dw = "features.1.conv.0.0"
    assert report.skipped[dw].startswith("depthwise convolution")
    pw = "features.2.conv.0.0"  # 1×1, 16 -> 96: channel variant only
    assert report.converted[pw].spatial is False and report.converted[pw].delta == 8
    assert report.notes[pw] == "1×1 kernel: no spatial variant"
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_channel_falls_back_to_spatial_where_delta_does_not_fit():
    model = build_model("zoo:vgg16", num_classes=10)
    report = versatilize(model, VersatileConfig(mode="spatial+channel", delta=16))
    first = report.converted["feature.0"]  # 3 input channels <= delta
    assert (first.spatial, first.delta) == (True, 0)
    assert "in_channels=3 <= delta=16" in report.notes["feature.0"]
    assert report.converted["feature.3"].delta == 16 and report.converted["feature.3"].g == 16


def test_indivisible_outputs_skipped_with_reason():
    model = nn.Sequential(nn.Conv2d(3, 7, 3), nn.Conv2d(7, 6, 3, groups=1))
    report = versatilize(model, "spatial")
    assert report.skipped["0"] == "out_channels=7 not divisible by s·n=2"
    assert "1" in report.converted


def test_skip_list_and_subclasses_stay_dense():
    class Custom(nn.Conv2d):
        pass

    model = nn.Sequential(nn.Conv2d(3, 8, 3), Custom(8, 8, 3), nn.Conv2d(8, 8, (1, 3)))
    report = versatilize(model, VersatileConfig(skip=["0"]))
    assert report.skipped["0"] == "listed in skip"
    assert "subclasses nn.Conv2d" in report.skipped["1"]
    assert report.skipped["2"] == "non-square kernel (1, 3)"
    with pytest.raises(ConfigError, match="names no module"):
        versatilize(model, VersatileConfig(skip=["nope"]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "spatial+channel"}, "needs delta > 0"),
        ({"mode": "spatial", "delta": 4}, "needs a channel mode"),
        ({"mode": "channel", "delta": 4, "g": 3}, "positive divisor"),
        ({"mode": "dense"}, "mode"),
    ],
)
def test_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        VersatileConfig(**kwargs)


@pytest.mark.parametrize("mode", ["spatial", "spatial+channel"])
def test_to_dense_is_exact(mode):
    model = build_model("zoo:vgg16", num_classes=10)
    versatilize(model, VersatileConfig(mode=mode, delta=16 if "channel" in mode else 0))
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    dense = copy.deepcopy(model)
    step = to_dense(dense)
    assert step.kind == "versatile_dense" and len(step.data["layers"]) == 13
    assert not any(isinstance(m, VersatileConv2d) for m in dense.modules())
    with torch.no_grad():
        assert torch.equal(model(x), dense(x))


def test_costs_spatial_vgg16():
    model = build_model("zoo:vgg16", num_classes=10)
    dense = versatile_costs(model, torch.randn(1, 3, 32, 32))
    versatilize(model, "spatial")
    c = versatile_costs(model, torch.randn(1, 3, 32, 32))
    assert c.dense_conv_params == dense.conv_params == dense.dense_conv_params
    assert c.dense_params == dense.params
    assert c.conv_fraction == pytest.approx(0.5)  # k = 3: s = 2, no conv bias
    assert c.macs_executed == dense.macs_executed  # the one conv runs the dense computation
    # paper: crops 3×3 and 1×1 for half the outputs each: (9 + 1) / 18 of the conv MACs
    conv_macs = sum(lc.macs_executed for lc in c.layers)
    assert c.macs_executed - c.macs_paper == pytest.approx(conv_macs * 8 / 18, rel=1e-9)
    assert c.memory_mb == pytest.approx(c.params * 4 / 2**20)


def test_costs_channel_variant_layer():
    model = nn.Sequential(VersatileConv2d(8, 12, 3, padding=1, delta=4, g=2, bias=False))
    c = versatile_costs(model, torch.randn(1, 8, 5, 7))
    (lc,) = c.layers
    assert lc.stored_params == 2 * 4 * 9 and lc.dense_params == 12 * 8 * 9
    assert lc.macs_executed == 12 * 8 * 9 * 35
    assert lc.macs_paper == 2 * 3 * 4 * (9 + 1) * 35  # q · n · ĉ · Σ crops · positions
