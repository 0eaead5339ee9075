"""Small models shared by the recipe tests (a uniquely named module: ``conftest`` is taken)."""

from __future__ import annotations

import torch
from torch import nn

from prunekit.models import FACTORIES


class TinyCNN(nn.Module):
    """conv-bn-relu ×2 → 2×2 average pool → fc, for 8×8 inputs; small enough for CPU tests."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16 * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(nn.functional.avg_pool2d(x, 2), 1))


def _build(name: str, kwargs: dict) -> nn.Module:
    return {"tiny_cnn": TinyCNN}[name](**kwargs)


# Recipes that save their model name it by a spec the saved folder can be rebuilt from.
FACTORIES.add("recipetest", _build, overwrite=True)
