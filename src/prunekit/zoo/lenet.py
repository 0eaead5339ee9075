"""LeNet-300-100 and LeNet-5 for 28×28 MNIST, as used by Han et al. 2015 ("Learning both Weights
and Connections for Efficient Neural Networks") after LeCun et al. 1998.

LeNet-5 is Caffe's variant (``examples/mnist/lenet.prototxt``): conv5×5 (20) → maxpool2 →
conv5×5 (50) → maxpool2 → fc 500 → ReLU → fc 10, with a ReLU only after the first fc layer as in
Caffe. Parameter counts with 10 classes: LeNet-300-100 266,610; LeNet-5 431,080.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from prunekit.errors import ConfigError
from prunekit.zoo._registry import check_widths, register_model

__all__ = ["LeNet5", "LeNet300100", "lenet5", "lenet_300_100"]


class LeNet300100(nn.Module):
    """Fully connected 784-300-100-10 network on flattened images.

    Args:
        cfg: hidden widths, default ``[300, 100]``.
        num_classes: outputs.
        in_channels: input image channels.
        input_size: input height = width.

    Example:
        >>> LeNet300100()(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        *,
        cfg: Sequence[int] | None = None,
        num_classes: int = 10,
        in_channels: int = 1,
        input_size: int = 28,
    ) -> None:
        super().__init__()
        h1, h2 = check_widths("lenet_300_100", [300, 100] if cfg is None else cfg, 2)
        self.fc1 = nn.Linear(in_channels * input_size * input_size, h1)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(h1, h2)
        self.relu2 = nn.ReLU()
        self.fc3 = nn.Linear(h2, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu1(self.fc1(torch.flatten(x, 1)))
        return self.fc3(self.relu2(self.fc2(x)))


class LeNet5(nn.Module):
    """Caffe's LeNet-5 (conv 20, conv 50, fc 500, fc classes).

    Args:
        cfg: widths of conv1, conv2 and fc1, default ``[20, 50, 500]``.
        num_classes: outputs.
        in_channels: input image channels.
        input_size: input height = width (28 gives 4×4 maps before fc1).

    Example:
        >>> LeNet5()(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        *,
        cfg: Sequence[int] | None = None,
        num_classes: int = 10,
        in_channels: int = 1,
        input_size: int = 28,
    ) -> None:
        super().__init__()
        c1, c2, f1 = check_widths("lenet5", [20, 50, 500] if cfg is None else cfg, 3)
        side = ((input_size - 4) // 2 - 4) // 2  # two valid 5×5 convs, each followed by pool 2
        if side < 1:
            raise ConfigError(f"lenet5 needs input_size >= 16, got {input_size}")
        self.conv1 = nn.Conv2d(in_channels, c1, kernel_size=5)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=5)
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(c2 * side * side, f1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(f1, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool2(self.conv2(self.pool1(self.conv1(x))))
        return self.fc2(self.relu(self.fc1(torch.flatten(x, 1))))


@register_model("lenet_300_100")
def lenet_300_100(
    *,
    cfg: Sequence[int] | None = None,
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: int = 28,
) -> LeNet300100:
    """LeNet-300-100 (266,610 parameters for 28×28×1 inputs and 10 classes)."""
    return LeNet300100(
        cfg=cfg, num_classes=num_classes, in_channels=in_channels, input_size=input_size
    )


@register_model("lenet5")
def lenet5(
    *,
    cfg: Sequence[int] | None = None,
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: int = 28,
) -> LeNet5:
    """Caffe LeNet-5 (431,080 parameters for 28×28×1 inputs and 10 classes)."""
    return LeNet5(cfg=cfg, num_classes=num_classes, in_channels=in_channels, input_size=input_size)
