"""Every zoo model: builds, forward shape, parameter count, cfg rebuild, backward, init."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.models import build_model
from prunekit.zoo import VGG_CFGS, build, densenet_cfg, list_models, preresnet_cfg
from prunekit.zoo.distiller_cifar import VGG_CIFAR_CFGS, cifar_resnet_cfg
from prunekit.zoo.distiller_imagenet import mobilenet_cfg

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
    # Distiller's zoo (its published conv/linear weight counts are in test_zoo_distiller.py)
    "alexnet_bn": 60_981_320,
    "mobilenet": 4_231_976,
    "mobilenet_025": 470_072,
    "mobilenet_050": 1_331_592,
    "mobilenet_075": 2_585_560,
    "plain20_cifar": 269_722,
    "plain20_cifar_nobn": 268_346,
    "preact_resnet110_cifar": 1_727_962,
    "preact_resnet110_cifar_conv_ds": 1_730_522,
    "preact_resnet20_cifar": 269_722,
    "preact_resnet20_cifar_conv_ds": 272_282,
    "preact_resnet32_cifar": 464_154,
    "preact_resnet32_cifar_conv_ds": 466_714,
    "preact_resnet44_cifar": 658_586,
    "preact_resnet44_cifar_conv_ds": 661_146,
    "preact_resnet56_cifar": 853_018,
    "preact_resnet56_cifar_conv_ds": 855_578,
    "resnet110_cifar": 1_730_714,
    "resnet20_cifar": 272_474,
    "resnet32_cifar": 466_906,
    "resnet44_cifar": 661_338,
    "resnet56_cifar": 855_770,
    "vgg11_bn_cifar": 9_231_114,
    "vgg11_cifar": 9_225_610,
    "vgg13_bn_cifar": 9_416_010,
    "vgg13_cifar": 9_410_122,
    "vgg16_bn_cifar": 14_728_266,
    "vgg16_cifar": 14_719_818,
    "vgg19_bn_cifar": 20_040_522,
    "vgg19_cifar": 20_029_514,
}
#: models that read token ids, not images (contract tests in test_zoo_distiller.py)
SEQUENCE_MODELS = {"word_lm"}
IMAGENET_SIZED = {"alexnet_bn", "mobilenet", "mobilenet_025", "mobilenet_050", "mobilenet_075"}
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
    "alexnet_bn": [96, 256, 384, 384, 256, 4096, 4096],
    "plain20_cifar": cifar_resnet_cfg(20),
    "plain20_cifar_nobn": cifar_resnet_cfg(20),
    **{
        f"mobilenet{s}": mobilenet_cfg(a)
        for s, a in (("", 1.0), ("_075", 0.75), ("_050", 0.5), ("_025", 0.25))
    },
    **{
        f"{k}{d}_cifar{x}": cifar_resnet_cfg(d)
        for d in (20, 32, 44, 56, 110)
        for k, x in (("resnet", ""), ("preact_resnet", ""), ("preact_resnet", "_conv_ds"))
    },
    **{f"vgg{d}{b}_cifar": VGG_CIFAR_CFGS[d] for d in (11, 13, 16, 19) for b in ("", "_bn")},
}
IMAGE_MODELS = [n for n in list_models() if n not in SEQUENCE_MODELS]


def _input(name: str, batch: int = 2, channels: int | None = None) -> torch.Tensor:
    mnist = name.startswith("lenet")
    c = channels if channels is not None else (1 if mnist or name == "digits_cnn" else 3)
    size = 8 if name == "digits_cnn" else 28 if mnist else 224 if name in IMAGENET_SIZED else 32
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
    assert sorted(IMAGE_MODELS) == sorted(PARAMS)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_forward_shape_and_param_count(name: str) -> None:
    model = build(name)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]
    assert _widths(model) == [v for v in DEFAULT_CFG[name] if v != "M"]
    model = build(name, num_classes=7, in_channels=2)
    model.eval()
    with torch.no_grad():
        assert model(_input(name, 3, channels=2)).shape == (3, 7)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_cfg_rebuild_and_backward(name: str) -> None:
    halved = [v if v == "M" else max(1, int(v) // 2) for v in DEFAULT_CFG[name]]
    model = build(name, cfg=halved, num_classes=10)
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
