"""Distiller's zoo: conv/linear weight counts as Distiller published them, its module names,
and the word-level LSTM language model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.zoo import build

# Totals of the conv/linear weights in Distiller's own tables (its schedules' headers):
# resnet20/56 (agp-pruning, pruning_filters_for_efficient_convnets), plain20
# (plain20_cifar_baseline_training), vgg16_cifar (vgg16_cifar_baseline_training), mobilenet
# (mobilenet.imagenet.schedule_agp). The others follow from the same layers (no published count).
PUBLISHED = {
    "resnet20_cifar": 270_896,
    "resnet56_cifar": 851_504,
    "plain20_cifar": 268_336,
    "vgg16_cifar": 14_715_584,
    "mobilenet": 4_209_088,
}
DERIVED = {"resnet32_cifar": 464_432, "resnet44_cifar": 657_968, "resnet110_cifar": 1_722_416}


def _weights(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.dim() in (2, 4))


@pytest.mark.parametrize("name", [*PUBLISHED, *DERIVED])
def test_weight_counts(name: str) -> None:
    assert _weights(build(name)) == {**PUBLISHED, **DERIVED}[name]


def test_distiller_parameter_names() -> None:
    names = dict(build("resnet56_cifar").named_parameters())
    assert {
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.weight",
        "layer3.8.conv2.weight",
        "fc.weight",
    } <= set(names)
    assert "features.34.weight" in dict(build("vgg19_cifar").named_parameters())
    mobile = dict(build("mobilenet").named_parameters())
    assert tuple(mobile["model.13.3.weight"].shape) == (1024, 1024, 1, 1)
    assert tuple(mobile["model.1.0.weight"].shape) == (32, 1, 3, 3)  # depthwise
    assert tuple(dict(build("alexnet_bn").named_parameters())["features.2.weight"].shape) == (
        256,
        48,
        5,
        5,
    )


def test_preact_shortcuts() -> None:
    ds = dict(build("preact_resnet20_cifar_conv_ds").named_parameters())
    assert tuple(ds["layer2.0.downsample.weight"].shape) == (32, 16, 1, 1)
    identity = build("preact_resnet20_cifar")
    assert not any("downsample" in n for n, _ in identity.named_parameters())
    assert identity(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ConfigError, match="cannot narrow 16 to 8 channels; use the _conv_ds"):
        build("preact_resnet20_cifar", cfg=[16] * 7 + [8] * 6 + [64] * 6)


def test_word_lm_names_shapes_and_tied_weights() -> None:
    lm = build("word_lm", ntoken=50, ninp=16, nhid=16, nlayers=2)
    names = [n for n, _ in lm.named_parameters()]
    assert names[:3] == ["encoder.weight", "rnn.weight_ih_l0", "rnn.weight_hh_l0"]
    assert isinstance(lm.rnn, nn.LSTM)
    tokens = torch.randint(0, 50, (3, 7))
    out = lm(tokens)
    assert out.shape == (21, 50)
    nn.functional.cross_entropy(out, torch.randint(0, 50, (21,))).backward()
    assert lm.rnn.weight_hh_l1.grad is not None
    tied = build("word_lm", ntoken=50, ninp=16, nhid=16, tie_weights=True)
    assert tied.decoder.weight is tied.encoder.weight
    assert "decoder.weight" not in dict(tied.named_parameters())
    assert isinstance(build("word_lm", ntoken=9, ninp=4, nhid=4, rnn_type="GRU").rnn, nn.GRU)
    with pytest.raises(ConfigError, match="tie_weights needs ninp == nhid"):
        build("word_lm", ninp=8, nhid=16, tie_weights=True)
