"""DenseNet for CIFAR without bottlenecks or compression (Huang et al. 2017, "Densely Connected
Convolutional Networks"), as used by Network Slimming (Liu et al. 2017).

Depth ``3n + 4``: a 3×3 stem conv (``2k`` channels), three dense blocks of ``n`` BN→ReLU→conv3×3
layers (each adds ``k`` channels by concatenation), transitions BN→ReLU→conv1×1→avgpool2 between
them, then BN→ReLU, 8×8 average pool and a linear classifier. No ``channel_selection`` layer.

``cfg`` lists every convolution's output width in forward order:
``[stem, g × n, transition1, g × n, transition2, g × n]`` (``3n + 3`` entries).
densenet40 (k = 12) with 10 classes has 1,059,298 parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from prunekit.errors import ConfigError
from prunekit.zoo._registry import check_widths, register_model, slimming_init

__all__ = ["DenseLayer", "DenseNet", "Transition", "densenet", "densenet40", "densenet_cfg"]


class DenseLayer(nn.Module):
    """BN → ReLU → conv3×3, output concatenated to the input (``in + growth`` channels)."""

    def __init__(self, in_channels: int, growth: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU()
        self.conv1 = nn.Conv2d(in_channels, growth, kernel_size=3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, self.conv1(self.relu(self.bn1(x)))], dim=1)


class Transition(nn.Module):
    """BN → ReLU → conv1×1 → 2×2 average pool."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.conv1(self.relu(self.bn1(x))))


def _layers_per_block(depth: int) -> int:
    if depth < 7 or (depth - 4) % 3:
        raise ConfigError(f"densenet depth must be 3n+4 with n >= 1 (e.g. 40), got {depth}")
    return (depth - 4) // 3


def densenet_cfg(depth: int = 40, growth_rate: int = 12) -> list[int]:
    """The default ``cfg``: stem ``2k``, growth ``k`` per layer, transitions keep all channels."""
    n = _layers_per_block(depth)
    channels = 2 * growth_rate
    cfg = [channels]
    for block in range(3):
        cfg += [growth_rate] * n
        channels += growth_rate * n
        if block < 2:
            cfg.append(channels)
    return cfg


class DenseNet(nn.Module):
    """DenseNet-BC-free CIFAR DenseNet (basic layers, no compression).

    Args:
        depth: ``3n + 4`` (40 = 12 layers per block).
        growth_rate: channels each dense layer adds (``k``).
        cfg: per-conv widths (see the module docstring); ``None`` = the standard widths.
        num_classes: classifier outputs.
        in_channels: input image channels.

    Example:
        >>> DenseNet(40)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        depth: int = 40,
        growth_rate: int = 12,
        *,
        cfg: Sequence[int] | None = None,
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        n = _layers_per_block(depth)
        default = densenet_cfg(depth, growth_rate)
        widths = check_widths(f"densenet{depth}", default if cfg is None else cfg, 3 * n + 3)
        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, padding=1, bias=False)
        channels = widths[0]
        modules: list[nn.Module] = []
        for block in range(3):
            start = 1 + block * (n + 1)
            layers = []
            for growth in widths[start : start + n]:
                layers.append(DenseLayer(channels, growth))
                channels += growth
            modules.append(nn.Sequential(*layers))
            if block < 2:
                modules.append(Transition(channels, widths[start + n]))
                channels = widths[start + n]
        self.dense1, self.trans1, self.dense2, self.trans2, self.dense3 = modules
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(channels, num_classes)
        slimming_init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.trans1(self.dense1(self.conv1(x)))
        x = self.dense3(self.trans2(self.dense2(x)))
        x = self.avgpool(self.relu(self.bn(x)))
        return self.fc(torch.flatten(x, 1))


@register_model("densenet")
def densenet(
    *,
    depth: int = 40,
    growth_rate: int = 12,
    cfg: Sequence[int] | None = None,
    num_classes: int = 10,
    in_channels: int = 3,
) -> DenseNet:
    """CIFAR DenseNet of ``depth = 3n + 4`` and growth rate ``k``."""
    return DenseNet(depth, growth_rate, cfg=cfg, num_classes=num_classes, in_channels=in_channels)


@register_model("densenet40")
def densenet40(
    *, cfg: Sequence[int] | None = None, num_classes: int = 10, in_channels: int = 3
) -> DenseNet:
    """DenseNet-40 (k = 12) as in Network Slimming (1.06M parameters with 10 classes)."""
    return DenseNet(40, 12, cfg=cfg, num_classes=num_classes, in_channels=in_channels)
