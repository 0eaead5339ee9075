"""The CIFAR networks of Intel Distiller's model zoo, under the names its schedules use.

Module and parameter names are Distiller's (``layer1.0.conv1.weight``, ``downsample.0``,
``features.0.weight`` …), so its published schedules run on these models as written:

* ``resnet20_cifar`` … ``resnet110_cifar`` — He et al. 2016's CIFAR ResNet (3 stages of n basic
  blocks, 16/32/64 wide), with 1×1-conv + BN shortcuts where the shape changes;
* ``preact_resnet20_cifar`` … ``preact_resnet110_cifar`` — the pre-activation variant (He et al.
  2016b) with parameter-free shortcuts (stride-2 average pool and zero channels), and
  ``…_conv_ds`` with 1×1-conv shortcuts on the pre-activation;
* ``plain20_cifar`` (and ``plain20_cifar_nobn``) — the same 20 layers without shortcuts;
* ``vgg11_cifar`` … ``vgg19_cifar`` and ``…_bn_cifar`` — VGG features with one linear classifier.

Weight counts (conv and linear weights, what Distiller's tables total): resnet20_cifar 270,896,
resnet56_cifar 851,504, plain20_cifar 268,336, vgg16_cifar 14,715,584 — as Distiller published.

Every model takes ``num_classes``, ``in_channels`` and ``cfg``, the output width of every conv
(shortcut convs excluded) in forward order, so a pruned model can be rebuilt: ResNets
``[stem, (conv1, conv2) per block]``, VGG the layer list with ``"M"`` for max-pools.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from prunekit.errors import ConfigError
from prunekit.zoo._registry import check_widths, register_model

__all__ = ["PlainCifar", "PreactResNetCifar", "ResNetCifar", "VGGCifar", "cifar_resnet_cfg"]


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def cifar_resnet_cfg(depth: int) -> list[int]:
    """Default widths of a depth-``depth`` CIFAR ResNet (``6n + 2``): stem, then both convs of
    each of the ``3n`` blocks."""
    if depth < 8 or (depth - 2) % 6:
        raise ConfigError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}")
    n = (depth - 2) // 6
    return [16] + [w for width in (16, 32, 64) for w in [width, width] * n]


Stages = list[list[tuple[int, int]]]


def _stages(
    model: str, cfg: Sequence[int], depth: int, residual: bool = True
) -> tuple[int, Stages]:
    """Split a ResNet cfg into the stem width and per-stage ``(conv1, conv2)`` widths, checking
    (``residual``) that the blocks of a stage agree on the residual width."""
    widths = check_widths(model, cfg, len(cifar_resnet_cfg(depth)))
    n = (depth - 2) // 6
    pairs = [(widths[1 + 2 * i], widths[2 + 2 * i]) for i in range(3 * n)]
    stages = [pairs[s * n : (s + 1) * n] for s in range(3)]
    for s, blocks in enumerate(stages if residual else []):
        if len({out for _, out in blocks}) != 1:
            raise ConfigError(
                f"{model}: the second convs of stage {s + 1} are summed by the shortcuts, so "
                f"their widths must match; got {[out for _, out in blocks]}"
            )
    return widths[0], stages


def _add_stages(
    owner: nn.Module, cin: int, stages: Stages, block: Callable[[int, int, int, int], nn.Module]
) -> int:
    """Add ``layer1``–``layer3`` of ``block(cin, mid, out, stride)`` (stride 2 at the start of
    stages 2 and 3); returns the last width."""
    for s, blocks in enumerate(stages):
        layer = []
        for b, (mid, out) in enumerate(blocks):
            layer.append(block(cin, mid, out, 2 if s and not b else 1))
            cin = out
        owner.add_module(f"layer{s + 1}", nn.Sequential(*layer))
    return cin


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the shortcut, then ReLU (Distiller's module names)."""

    def __init__(self, cin: int, mid: int, out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, mid, stride)
        self.bn1 = nn.BatchNorm2d(mid)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv2 = _conv3x3(mid, out)
        self.bn2 = nn.BatchNorm2d(out)
        self.relu2 = nn.ReLU(inplace=False)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu2(out + residual)


class ResNetCifar(nn.Module):
    """CIFAR ResNet of depth ``6n + 2`` (He et al. 2016, section 4.2).

    Args:
        depth: 20, 32, 44, 56, 110, …
        num_classes: outputs.
        in_channels: input channels.
        cfg: widths ``[stem, (conv1, conv2) × 3n]``; default 16/32/64.
    """

    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential

    def __init__(
        self,
        depth: int,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        cfg: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        name = f"resnet{depth}_cifar"
        stem, stages = _stages(name, cfg if cfg is not None else cifar_resnet_cfg(depth), depth)
        self.conv1 = nn.Conv2d(in_channels, stem, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        cin = _add_stages(self, stem, stages, BasicBlock)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class PreactBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv-BN-ReLU-conv plus the shortcut."""

    def __init__(self, cin: int, mid: int, out: int, stride: int, conv_ds: bool) -> None:
        super().__init__()
        self.pre_bn = nn.BatchNorm2d(cin)
        self.pre_relu = nn.ReLU(inplace=False)
        self.conv1 = _conv3x3(cin, mid, stride)
        self.bn = nn.BatchNorm2d(mid)
        self.relu = nn.ReLU(inplace=False)
        self.conv2 = _conv3x3(mid, out)
        self.conv_ds = conv_ds
        self.downsample: nn.Module | None = None
        self.pad = (0, 0)
        self.stride = stride
        if stride != 1 or cin != out:
            if conv_ds:  # a 1×1 conv on the pre-activation
                self.downsample = nn.Conv2d(cin, out, 1, stride=stride, bias=False)
            elif out < cin:
                raise ConfigError(
                    f"preact_resnet: a parameter-free shortcut cannot narrow {cin} to {out} "
                    "channels; use the _conv_ds variant"
                )
            else:  # average-pool and zero channels, no parameters
                self.pad = ((out - cin) // 2, out - cin - (out - cin) // 2)

    def forward(self, x: Tensor) -> Tensor:
        preact = self.pre_relu(self.pre_bn(x))
        out = self.conv2(self.relu(self.bn(self.conv1(preact))))
        if self.downsample is not None:
            residual = self.downsample(preact)
        elif self.stride != 1 or self.pad != (0, 0):
            residual = F.avg_pool2d(x, self.stride) if self.stride != 1 else x
            residual = F.pad(residual, (0, 0, 0, 0, *self.pad))
        else:
            residual = x
        return out + residual


class PreactResNetCifar(nn.Module):
    """Pre-activation CIFAR ResNet (He et al. 2016, "Identity Mappings in Deep Residual
    Networks"); ``conv_ds`` puts 1×1 convs on the shortcuts that change shape.

    Args:
        depth: 20, 32, 44, 56, 110, …
        conv_ds: 1×1-conv shortcuts instead of average pool + zero channels.
        num_classes, in_channels, cfg: as :class:`ResNetCifar`.
    """

    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential

    def __init__(
        self,
        depth: int,
        *,
        conv_ds: bool = False,
        num_classes: int = 10,
        in_channels: int = 3,
        cfg: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        name = f"preact_resnet{depth}_cifar"
        stem, stages = _stages(name, cfg if cfg is not None else cifar_resnet_cfg(depth), depth)
        self.conv1 = nn.Conv2d(in_channels, stem, 3, padding=1, bias=False)
        cin = _add_stages(self, stem, stages, lambda i, m, o, st: PreactBlock(i, m, o, st, conv_ds))
        self.final_bn = nn.BatchNorm2d(cin)
        self.final_relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        x = self.final_relu(self.final_bn(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class PlainBlock(nn.Module):
    """conv-BN-ReLU twice, no shortcut (BN optional)."""

    def __init__(self, cin: int, mid: int, out: int, stride: int, bn: bool) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, mid, stride)
        self.bn1 = nn.BatchNorm2d(mid) if bn else nn.Identity()
        self.relu1 = nn.ReLU(inplace=False)
        self.conv2 = _conv3x3(mid, out)
        self.bn2 = nn.BatchNorm2d(out) if bn else nn.Identity()
        self.relu2 = nn.ReLU(inplace=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))


class PlainCifar(nn.Module):
    """Plain-20 (He et al. 2016's baseline without shortcuts): the CIFAR ResNet-20 layers.

    Args:
        batch_norm: BN after every conv (``plain20_cifar_nobn`` has none).
        num_classes, in_channels: as usual.
        cfg: widths ``[stem, (conv1, conv2) × 9]``, free (no shortcuts to agree with).
    """

    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential

    def __init__(
        self,
        *,
        batch_norm: bool = True,
        num_classes: int = 10,
        in_channels: int = 3,
        cfg: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        widths = cfg if cfg is not None else cifar_resnet_cfg(20)
        stem, stages = _stages("plain20_cifar", widths, 20, residual=False)
        self.conv1 = nn.Conv2d(in_channels, stem, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem) if batch_norm else nn.Identity()
        self.relu = nn.ReLU(inplace=True)
        cin = _add_stages(
            self, stem, stages, lambda i, m, o, st: PlainBlock(i, m, o, st, batch_norm)
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


#: VGG layer lists (Simonyan & Zisserman 2015, configurations A, B, D, E)
VGG_CIFAR_CFGS: dict[int, list[int | str]] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
        "M",
    ],
}


class VGGCifar(nn.Module):
    """Distiller's CIFAR VGG: conv(bias)-[BN]-ReLU features with max-pools, one linear
    classifier on the 1×1×C output of a 32×32 input.

    Args:
        depth: 11, 13, 16 or 19.
        batch_norm: BN after every conv.
        num_classes, in_channels: as usual.
        cfg: the layer list, widths and ``"M"`` (max-pool).
    """

    def __init__(
        self,
        depth: int,
        *,
        batch_norm: bool = False,
        num_classes: int = 10,
        in_channels: int = 3,
        cfg: Sequence[int | str] | None = None,
    ) -> None:
        super().__init__()
        if depth not in VGG_CIFAR_CFGS:
            raise ConfigError(f"vgg_cifar depth must be 11, 13, 16 or 19, got {depth}")
        layout = list(cfg if cfg is not None else VGG_CIFAR_CFGS[depth])
        convs = [v for v in layout if v != "M"]
        check_widths(
            f"vgg{depth}_cifar", convs, len([v for v in VGG_CIFAR_CFGS[depth] if v != "M"])
        )
        layers: list[nn.Module] = []
        cin = in_channels
        for v in layout:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            layers.append(nn.Conv2d(cin, int(v), 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(int(v)))
            layers.append(nn.ReLU(inplace=True))
            cin = int(v)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def _resnet_builder(depth: int, kind: str) -> Callable[..., nn.Module]:
    def build(
        *, num_classes: int = 10, in_channels: int = 3, cfg: Sequence[int] | None = None
    ) -> nn.Module:
        if kind == "resnet":
            return ResNetCifar(depth, num_classes=num_classes, in_channels=in_channels, cfg=cfg)
        return PreactResNetCifar(
            depth,
            conv_ds=kind == "conv_ds",
            num_classes=num_classes,
            in_channels=in_channels,
            cfg=cfg,
        )

    return build


def _vgg_builder(depth: int, bn: bool) -> Callable[..., nn.Module]:
    def build(
        *, num_classes: int = 10, in_channels: int = 3, cfg: Sequence[int | str] | None = None
    ) -> nn.Module:
        return VGGCifar(
            depth, batch_norm=bn, num_classes=num_classes, in_channels=in_channels, cfg=cfg
        )

    return build


def _register() -> None:
    for depth in (20, 32, 44, 56, 110):
        for kind, name in (
            ("resnet", f"resnet{depth}_cifar"),
            ("preact", f"preact_resnet{depth}_cifar"),
            ("conv_ds", f"preact_resnet{depth}_cifar_conv_ds"),
        ):
            fn = _resnet_builder(depth, kind)
            fn.__doc__ = f"Distiller's {name} (see :mod:`prunekit.zoo.distiller_cifar`)."
            register_model(name)(fn)
    for depth in VGG_CIFAR_CFGS:
        for bn in (False, True):
            name = f"vgg{depth}{'_bn' if bn else ''}_cifar"
            fn = _vgg_builder(depth, bn)
            fn.__doc__ = f"Distiller's {name} (see :mod:`prunekit.zoo.distiller_cifar`)."
            register_model(name)(fn)


_register()


@register_model("plain20_cifar")
def plain20_cifar(
    *, num_classes: int = 10, in_channels: int = 3, cfg: Sequence[int] | None = None
) -> nn.Module:
    """Distiller's plain20_cifar: ResNet-20's layers without shortcuts."""
    return PlainCifar(num_classes=num_classes, in_channels=in_channels, cfg=cfg)


@register_model("plain20_cifar_nobn")
def plain20_cifar_nobn(
    *, num_classes: int = 10, in_channels: int = 3, cfg: Sequence[int] | None = None
) -> nn.Module:
    """Distiller's plain20_cifar_nobn: plain20_cifar without BatchNorm."""
    return PlainCifar(batch_norm=False, num_classes=num_classes, in_channels=in_channels, cfg=cfg)
