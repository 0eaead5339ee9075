"""Every zoo model: builds, forward shape, parameter count, cfg rebuild, backward, init."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.models import build_model
from prunekit.zoo import VGG_CFGS, build, densenet_cfg, list_models, preresnet_cfg

# Parameter counts with 10 classes. VGG-19 matches the 20.04M of Liu et al. 2017; the
# reference code's preresnet164 / densenet40 report 1.71M / 1.07M because they include its
# channel_selection "parameters" (8,080 / 9,360 ones), which these models do not have.
PARAMS = {
    "vgg": 20_035_018,
    "vgg11": 9_228_362,
    "vgg13": 9_413_066,
    "vgg16": 14_724_042,
    "vgg19": 20_035_018,
    "preresnet": 1_703_258,
    "preresnet164": 1_703_258,
    "densenet": 1_059_298,
    "densenet40": 1_059_298,
    "lenet_300_100": 266_610,
    "lenet5": 431_080,
    "digits_cnn": 46_378,
}
DEFAULT_CFG: dict[str, list[int | str]] = {
    "vgg": VGG_CFGS[19],
    **{f"vgg{d}": VGG_CFGS[d] for d in (11, 13, 16, 19)},
    "preresnet": list(preresnet_cfg(164)),
    "preresnet164": list(preresnet_cfg(164)),
    "densenet": list(densenet_cfg(40)),
    "densenet40": list(densenet_cfg(40)),
    "lenet_300_100": [300, 100],
    "lenet5": [20, 50, 500],
    "digits_cnn": [32, 32, 32, 32, 32, 64],
}


def _input(name: str, batch: int = 2, channels: int | None = None) -> torch.Tensor:
    mnist = name.startswith("lenet")
    c = channels if channels is not None else (1 if mnist or name == "digits_cnn" else 3)
    size = 8 if name == "digits_cnn" else 28 if mnist else 32
    return torch.randn(batch, c, size, size)


def _widths(model: nn.Module) -> list[int]:
    """Output widths of every conv/linear in forward order, minus shortcuts and the classifier."""
    layers = [
        m
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear) and "downsample" not in name
    ]
    return [m.out_channels if isinstance(m, nn.Conv2d) else m.out_features for m in layers[:-1]]


def test_registry_lists_all_models() -> None:
    assert list_models() == sorted(PARAMS)


@pytest.mark.parametrize("name", list_models())
def test_forward_shape_and_param_count(name: str) -> None:
    model = build(name)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]
    assert _widths(model) == [v for v in DEFAULT_CFG[name] if v != "M"]
    model = build(name, num_classes=7, in_channels=2)
    model.eval()
    with torch.no_grad():
        assert model(_input(name, 3, channels=2)).shape == (3, 7)


@pytest.mark.parametrize("name", list_models())
def test_cfg_rebuild_and_backward(name: str) -> None:
    halved = [v if v == "M" else max(1, int(v) // 2) for v in DEFAULT_CFG[name]]
    model = build(name, cfg=halved)
    assert _widths(model) == [v for v in halved if v != "M"]
    assert sum(p.numel() for p in model.parameters()) < PARAMS[name] / 2
    out = model(_input(name))
    assert out.shape == (2, 10)
    nn.functional.cross_entropy(out, torch.tensor([1, 2])).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0


def test_slimming_initialisation() -> None:
    model = build("vgg19")
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.all(bn.weight == 0.5) and torch.all(bn.bias == 0) for bn in bns)
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d) and m.out_channels == 512)
    expected = math.sqrt(2.0 / (3 * 3 * 512))  # He normal, fan-out
    assert conv.weight.std().item() == pytest.approx(expected, rel=0.02)
    fc = model.classifier
    assert isinstance(fc, nn.Linear) and torch.all(fc.bias == 0)
    assert fc.weight.std().item() == pytest.approx(0.01, rel=0.1)


def test_depth_variants_and_build_model() -> None:
    assert len(build("preresnet", depth=20).layer1) == 2
    dn = build("densenet", depth=10, growth_rate=4)
    assert dn(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    assert isinstance(build_model("zoo:vgg", depth=11, num_classes=100).classifier, nn.Linear)
    assert build_model("zoo:lenet5", num_classes=5)(torch.randn(1, 1, 28, 28)).shape == (1, 5)


def test_bad_options_raise_config_errors() -> None:
    with pytest.raises(ConfigError, match="does not take dataset"):
        build("vgg19", dataset="cifar10")
    with pytest.raises(ConfigError, match="unknown zoo model 'resnet56'"):
        build("resnet56")
    with pytest.raises(ConfigError, match="depth must be 9n\\+2"):
        build("preresnet", depth=100)
    with pytest.raises(ConfigError, match="needs 163 entries"):
        build("preresnet164", cfg=[16, 16])
    bad = preresnet_cfg(164)
    bad[3] = 60  # first block of stage 1 outputs 60, the others 64
    with pytest.raises(ConfigError, match="output widths must match"):
        build("preresnet164", cfg=bad)
    with pytest.raises(ConfigError, match="positive ints"):
        build("lenet5", cfg=[20, 0, 500])
    with pytest.raises(ConfigError, match="vgg depth must be"):
        build("vgg", depth=12)
