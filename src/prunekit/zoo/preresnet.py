"""Pre-activation ResNet with bottleneck blocks for CIFAR (He et al. 2016, "Identity Mappings in
Deep Residual Networks"), as used by Network Slimming (Liu et al. 2017).

Depth ``9n + 2``: a 3×3 stem conv, three stages of ``n`` bottleneck blocks (BN→ReLU→conv1×1,
BN→ReLU→conv3×3, BN→ReLU→conv1×1, plus the shortcut), then BN→ReLU, 8×8 average pool and a
linear classifier. Unlike the reference there is no ``channel_selection`` layer: prunekit's
dependency graph handles the residual couplings itself.

``cfg`` lists the output width of every convolution except the 1×1 shortcut convs, in forward
order: ``[stem, (mid1, mid2, out) × 3n]``. Blocks of one stage must share ``out`` (they are
summed). Every stage's first block has a 1×1 shortcut conv, whatever the widths, so a pruned
model rebuilds with the same structure. preresnet164 with 10 classes has 1,703,258 parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from prunekit.errors import ConfigError
from prunekit.zoo._registry import check_widths, register_model, slimming_init

__all__ = ["Bottleneck", "PreResNet", "preresnet", "preresnet164", "preresnet_cfg"]


class Bottleneck(nn.Module):
    """Pre-activation bottleneck block.

    Args:
        in_channels: input width (the residual stream).
        widths: output widths of conv1, conv2 and conv3.
        stride: stride of the 3×3 conv (and of the shortcut).
        shortcut: give the block a 1×1 conv on the shortcut path.
    """

    def __init__(
        self, in_channels: int, widths: Sequence[int], stride: int = 1, shortcut: bool = False
    ) -> None:
        super().__init__()
        mid1, mid2, out = widths
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_channels, mid1, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid1)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(mid1, mid2, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid2)
        self.relu3 = nn.ReLU()
        self.conv3 = nn.Conv2d(mid2, out, kernel_size=1, bias=False)
        self.downsample: nn.Module | None = None
        if shortcut:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out, kernel_size=1, stride=stride, bias=False)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(self.relu1(self.bn1(x)))
        out = self.conv2(self.relu2(self.bn2(out)))
        out = self.conv3(self.relu3(self.bn3(out)))
        residual = x if self.downsample is None else self.downsample(x)
        return out + residual


def preresnet_cfg(depth: int = 164) -> list[int]:
    """The default ``cfg`` of a pre-activation ResNet of ``depth = 9n + 2``."""
    n = _blocks_per_stage(depth)
    cfg = [16]
    for planes in (16, 32, 64):
        cfg += [planes, planes, 4 * planes] * n
    return cfg


def _blocks_per_stage(depth: int) -> int:
    if depth < 11 or (depth - 2) % 9:
        raise ConfigError(f"preresnet depth must be 9n+2 with n >= 1 (e.g. 164), got {depth}")
    return (depth - 2) // 9


class PreResNet(nn.Module):
    """Pre-activation bottleneck ResNet for 32×32 inputs.

    Args:
        depth: ``9n + 2`` (164 = 18 blocks per stage).
        cfg: per-conv widths (see the module docstring); ``None`` = the standard widths.
        num_classes: classifier outputs.
        in_channels: input image channels.

    Example:
        >>> PreResNet(164)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        depth: int = 164,
        *,
        cfg: Sequence[int] | None = None,
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        n = _blocks_per_stage(depth)
        widths = check_widths(
            f"preresnet{depth}", preresnet_cfg(depth) if cfg is None else cfg, 1 + 9 * n
        )
        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, padding=1, bias=False)
        channels = widths[0]
        stages = []
        for s in range(3):
            block_cfg = widths[1 + 3 * n * s : 1 + 3 * n * (s + 1)]
            stage = self._make_stage(channels, block_cfg, stride=1 if s == 0 else 2, depth=depth)
            stages.append(stage)
            channels = block_cfg[-1]
        self.layer1, self.layer2, self.layer3 = stages
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(channels, num_classes)
        slimming_init(self)

    @staticmethod
    def _make_stage(in_channels: int, cfg: list[int], stride: int, depth: int) -> nn.Sequential:
        outs = set(cfg[2::3])
        if len(outs) != 1:
            raise ConfigError(
                f"preresnet{depth}: blocks of one stage are summed, so their output widths must "
                f"match; got {cfg[2::3]}"
            )
        blocks = []
        for i in range(0, len(cfg), 3):
            first = i == 0
            blocks.append(
                Bottleneck(in_channels, cfg[i : i + 3], stride if first else 1, shortcut=first)
            )
            in_channels = cfg[i + 2]
        return nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        x = self.avgpool(self.relu(self.bn(x)))
        return self.fc(torch.flatten(x, 1))


@register_model("preresnet")
def preresnet(
    *,
    depth: int = 164,
    cfg: Sequence[int] | None = None,
    num_classes: int = 10,
    in_channels: int = 3,
) -> PreResNet:
    """Pre-activation bottleneck ResNet of ``depth = 9n + 2``."""
    return PreResNet(depth, cfg=cfg, num_classes=num_classes, in_channels=in_channels)


@register_model("preresnet164")
def preresnet164(
    *, cfg: Sequence[int] | None = None, num_classes: int = 10, in_channels: int = 3
) -> PreResNet:
    """PreResNet-164 as in Network Slimming (1.70M parameters with 10 classes)."""
    return PreResNet(164, cfg=cfg, num_classes=num_classes, in_channels=in_channels)
