"""ImageNet networks of Intel Distiller's model zoo that torchvision does not have, under the
names (and module/parameter names) its schedules use:

* ``mobilenet`` (and ``mobilenet_025`` / ``_050`` / ``_075``) — MobileNet v1 (Howard et al.
  2017, arXiv:1704.04861): a stride-2 3×3 conv then 13 depthwise-separable blocks
  (``model.k.0`` depthwise, ``model.k.3`` pointwise), width multiplier α with at least 8 channels
  per layer; 4,209,088 conv/linear weights at α = 1, as Distiller's AGP table lists.
* ``alexnet_bn`` — AlexNet with BatchNorm after every conv and hidden linear layer and grouped
  convs, the configuration of TensorPack's DoReFa example that Distiller's quantization schedules
  use.

Both take ``num_classes`` (default 1000), ``in_channels`` and ``cfg``: the output width of every
conv/linear layer except the classifier, in forward order (MobileNet: each depthwise conv repeats
its input width). The final pooling is adaptive, so 224×224 inputs give Distiller's shapes and
other sizes still work.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import Tensor, nn

from prunekit.errors import ConfigError
from prunekit.zoo._registry import check_widths, register_model

__all__ = ["AlexNetBN", "MobileNetV1", "mobilenet_cfg"]

# (pointwise width, stride of the depthwise conv) of MobileNet v1's 13 blocks, α = 1
_MOBILENET_BLOCKS = [
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    *[(512, 1)] * 5,
    (1024, 2),
    (1024, 1),
]


def mobilenet_cfg(width_mult: float = 1.0, min_channels: int = 8) -> list[int]:
    """MobileNet v1's conv widths in forward order: stem, then (depthwise, pointwise) per block;
    each width is ``max(floor(α·w), min_channels)``."""
    scaled = [
        max(math.floor(w * width_mult), min_channels)
        for w in (32, *[b for b, _ in _MOBILENET_BLOCKS])
    ]
    out = [scaled[0]]
    for width in scaled[1:]:
        out += [out[-1], width]
    return out


def _cbr(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class MobileNetV1(nn.Module):
    """MobileNet v1 with Distiller's module layout (``model.0`` stem, ``model.1``–``model.13``
    depthwise-separable blocks, ``model.14`` pooling, ``fc``).

    Args:
        width_mult: α (1, 0.75, 0.5, 0.25).
        num_classes: outputs.
        in_channels: input channels.
        cfg: the 27 conv widths (see :func:`mobilenet_cfg`); a depthwise width must equal the
            width before it.
    """

    def __init__(
        self,
        width_mult: float = 1.0,
        *,
        num_classes: int = 1000,
        in_channels: int = 3,
        cfg: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        widths = check_widths(
            "mobilenet", cfg if cfg is not None else mobilenet_cfg(width_mult), 27
        )
        for i in range(1, 27, 2):
            if widths[i] != widths[i - 1]:
                raise ConfigError(
                    f"mobilenet: depthwise conv {i} must keep its input width {widths[i - 1]}, "
                    f"got {widths[i]}"
                )
        blocks: list[nn.Module] = [nn.Sequential(*_cbr(in_channels, widths[0], 3, stride=2))]
        for b, (_, stride) in enumerate(_MOBILENET_BLOCKS):
            cin, out = widths[2 * b + 1], widths[2 * b + 2]
            blocks.append(nn.Sequential(*_cbr(cin, cin, 3, stride, groups=cin), *_cbr(cin, out, 1)))
        blocks.append(nn.AdaptiveAvgPool2d(1))
        self.model = nn.Sequential(*blocks)
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.model(x), 1))


class AlexNetBN(nn.Module):
    """AlexNet with BatchNorm (TensorPack's DoReFa configuration, Distiller's ``alexnet_bn``):
    a 12×12 stride-4 conv, then grouped convs with BN, max-pools between, and two BN'd hidden
    linear layers (no bias) before the classifier. He-normal weights, BN scale 1.

    Args:
        num_classes: outputs.
        in_channels: input channels.
        cfg: widths of the 5 convs and 2 hidden linear layers (grouped convs need even widths).
    """

    def __init__(
        self, *, num_classes: int = 1000, in_channels: int = 3, cfg: Sequence[int] | None = None
    ) -> None:
        super().__init__()
        c0, c1, c2, c3, c4, f0, f1 = check_widths(
            "alexnet_bn", cfg if cfg is not None else [96, 256, 384, 384, 256, 4096, 4096], 7
        )
        bn2 = partial(nn.BatchNorm2d, eps=1e-4, momentum=0.9)  # TensorPack's BN settings
        bn1 = partial(nn.BatchNorm1d, eps=1e-4, momentum=0.9)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c0, 12, stride=4),
            nn.ReLU(inplace=True),
            nn.Conv2d(c0, c1, 5, padding=2, groups=2, bias=False),
            bn2(c1),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 3, padding=1, bias=False),
            bn2(c2),
            nn.MaxPool2d(3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c2, c3, 3, padding=1, groups=2, bias=False),
            bn2(c3),
            nn.ReLU(inplace=True),
            nn.Conv2d(c3, c4, 3, padding=1, groups=2, bias=False),
            bn2(c4),
            nn.MaxPool2d(3, stride=2),
            nn.ReLU(inplace=True),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))  # identity for 224×224 inputs
        self.classifier = nn.Sequential(
            nn.Linear(c4 * 36, f0, bias=False),
            bn1(f0),
            nn.ReLU(inplace=True),
            nn.Linear(f0, f1, bias=False),
            bn1(f1),
            nn.ReLU(inplace=True),
            nn.Linear(f1, num_classes),
        )
        for m in self.modules():  # He et al. 2015 normal init over fan-in, BN scale 1
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_in))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _mobilenet_builder(width_mult: float) -> Callable[..., nn.Module]:
    def build(
        *, num_classes: int = 1000, in_channels: int = 3, cfg: Sequence[int] | None = None
    ) -> nn.Module:
        return MobileNetV1(width_mult, num_classes=num_classes, in_channels=in_channels, cfg=cfg)

    return build


for _name, _alpha in (
    ("mobilenet", 1.0),
    ("mobilenet_075", 0.75),
    ("mobilenet_050", 0.5),
    ("mobilenet_025", 0.25),
):
    _fn = _mobilenet_builder(_alpha)
    _fn.__doc__ = f"Distiller's {_name}: MobileNet v1 with width multiplier {_alpha}."
    register_model(_name)(_fn)


@register_model("alexnet_bn")
def alexnet_bn(
    *, num_classes: int = 1000, in_channels: int = 3, cfg: Sequence[int] | None = None
) -> nn.Module:
    """Distiller's alexnet_bn (:class:`AlexNetBN`)."""
    return AlexNetBN(num_classes=num_classes, in_channels=in_channels, cfg=cfg)
