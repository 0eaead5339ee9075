"""A small CNN for 8×8 inputs (scikit-learn's digits): the model of ``prunekit demo``.

It has the structures a pruner must handle — conv → BN chains, a residual add, a concat and a
flatten into a linear layer — while training in seconds on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from prunekit.errors import ConfigError
from prunekit.zoo._registry import register_model

__all__ = ["DigitsCNN", "digits_cnn"]


def _cbr(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
    )


class DigitsCNN(nn.Module):
    """conv stem → residual block → two-branch concat → pool → flatten → linear.

    Args:
        cfg: width of every conv/linear in forward order, ``[stem, mid, stem, a, b, hidden]``
            (default ``[32, 32, 32, 32, 32, 64]``); the residual needs ``cfg[2] == cfg[0]``.
        num_classes: outputs.
        in_channels: input channels.

    Example:
        >>> DigitsCNN()(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self, *, cfg: Sequence[int] | None = None, num_classes: int = 10, in_channels: int = 1
    ) -> None:
        super().__init__()
        widths = [int(v) for v in cfg] if cfg is not None else [32, 32, 32, 32, 32, 64]
        if len(widths) != 6 or widths[2] != widths[0] or min(widths) < 1:
            raise ConfigError(
                f"digits_cnn cfg must be [stem, mid, stem, a, b, hidden] of positive ints with "
                f"cfg[2] == cfg[0] (residual), got {list(cfg or [])}"
            )
        stem, mid, _, a, b, hidden = widths
        self.stem = _cbr(in_channels, stem)
        self.block = nn.Sequential(
            _cbr(stem, mid), nn.Conv2d(mid, stem, 3, padding=1, bias=False), nn.BatchNorm2d(stem)
        )
        self.branch_a = _cbr(stem, a)
        self.branch_b = nn.Sequential(
            nn.Conv2d(stem, b, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU()
        )
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc1 = nn.Linear((a + b) * 4, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.block(x))
        x = torch.cat([self.branch_a(x), self.branch_b(x)], dim=1)
        x = torch.flatten(self.pool(torch.max_pool2d(x, 2)), 1)
        return self.fc2(torch.relu(self.fc1(x)))


@register_model("digits_cnn")
def digits_cnn(
    *, cfg: Sequence[int] | None = None, num_classes: int = 10, in_channels: int = 1
) -> nn.Module:
    """The demo CNN (:class:`DigitsCNN`)."""
    return DigitsCNN(cfg=cfg, num_classes=num_classes, in_channels=in_channels)
