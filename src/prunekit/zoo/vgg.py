"""VGG for CIFAR as in Network Slimming (Liu et al. 2017, "Learning Efficient Convolutional
Networks through Network Slimming"; reference code Eric-mingjie/network-slimming).

Conv3×3 (no bias) → BN → ReLU stacks with 2×2 max-pools at ``"M"``, then a 2×2 average pool and
one linear classifier. For 32×32 inputs the last feature map is 2×2, so the classifier sees
``cfg[-1]`` features. VGG-19 with 10 classes has 20,035,018 parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from prunekit.errors import ConfigError
from prunekit.zoo._registry import check_widths, register_model, slimming_init

__all__ = ["VGG_CFGS", "CifarVGG", "vgg", "vgg11", "vgg13", "vgg16", "vgg19"]

# Channel lists of the reference (the last "M" of ImageNet VGG is dropped for 32×32 inputs).
# fmt: off
VGG_CFGS: dict[int, list[int | str]] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512],
}
# fmt: on


class CifarVGG(nn.Module):
    """CIFAR VGG with BatchNorm.

    Args:
        depth: 11, 13, 16 or 19 (selects the default ``cfg``).
        cfg: channel list with ``"M"`` for max-pool; overrides ``depth`` (e.g. a pruned model).
        num_classes: classifier outputs.
        in_channels: input image channels.

    Example:
        >>> CifarVGG(19)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        depth: int = 19,
        *,
        cfg: Sequence[int | str] | None = None,
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if cfg is None:
            if depth not in VGG_CFGS:
                raise ConfigError(f"vgg depth must be one of {sorted(VGG_CFGS)}, got {depth}")
            cfg = VGG_CFGS[depth]
        layers: list[nn.Module] = []
        channels = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            (width,) = check_widths("vgg", [v])
            layers += [
                nn.Conv2d(channels, width, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
            ]
            channels = width
        if all(v == "M" for v in cfg):
            raise ConfigError(f"vgg: cfg {list(cfg)} has no convolution widths")
        self.feature = nn.Sequential(*layers)
        self.pool = nn.AvgPool2d(2)
        self.classifier = nn.Linear(channels, num_classes)
        slimming_init(self, linear_std=0.01)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.feature(x))
        return self.classifier(torch.flatten(x, 1))


@register_model("vgg")
def vgg(
    *,
    depth: int = 19,
    cfg: Sequence[int | str] | None = None,
    num_classes: int = 10,
    in_channels: int = 3,
) -> CifarVGG:
    """CIFAR VGG of the given ``depth`` (11/13/16/19), or built from ``cfg``."""
    return CifarVGG(depth, cfg=cfg, num_classes=num_classes, in_channels=in_channels)


def _fixed_depth(depth: int, doc: str) -> Callable[..., CifarVGG]:
    """The zoo builder of one VGG depth (``zoo:vgg11`` … ``zoo:vgg19``)."""

    def builder(
        *, cfg: Sequence[int | str] | None = None, num_classes: int = 10, in_channels: int = 3
    ) -> CifarVGG:
        return CifarVGG(depth, cfg=cfg, num_classes=num_classes, in_channels=in_channels)

    builder.__name__ = builder.__qualname__ = f"vgg{depth}"
    builder.__doc__ = doc
    return builder


vgg11 = register_model("vgg11")(_fixed_depth(11, "CIFAR VGG-11 (9.2M parameters, 10 classes)."))
vgg13 = register_model("vgg13")(_fixed_depth(13, "CIFAR VGG-13."))
vgg16 = register_model("vgg16")(_fixed_depth(16, "CIFAR VGG-16."))
vgg19 = register_model("vgg19")(
    _fixed_depth(19, "CIFAR VGG-19 as in Network Slimming (20.04M parameters, 10 classes).")
)
