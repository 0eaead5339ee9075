"""Shared test helpers for prunekit.train: scikit-learn's embedded 8×8 digits as tensors, a
re-iterable batch loader with ``set_epoch``, and tiny models."""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import torch
from torch import nn


@lru_cache(maxsize=1)
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test): 1437/360 split of the 1797 digits, x in [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    tr, te = perm[:1437], perm[1437:]
    return x[tr], y[tr], x[te], y[te]


class BatchLoader:
    """Minimal loader: shuffles with a (seed, epoch)-derived generator, like TensorLoader."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool) -> None:
        self.x, self.y, self.batch_size, self.shuffle = x, y, batch_size, shuffle
        self.epoch = 0
        self.epochs_seen: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.epochs_seen.append(epoch)

    def __len__(self) -> int:
        return (len(self.y) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.y)
        if self.shuffle:
            idx = torch.randperm(n, generator=torch.Generator().manual_seed(1000 + self.epoch))
        else:
            idx = torch.arange(n)
        for i in range(0, n, self.batch_size):
            j = idx[i : i + self.batch_size]
            yield self.x[j], self.y[j]


def small_cnn(dropout: float = 0.0) -> nn.Sequential:
    """Conv-BN-ReLU ×2 → pool → linear, for 1×8×8 inputs and 10 classes."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1, stride=2, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(16, 10),
    )


def mlp(hidden: int = 64) -> nn.Sequential:
    """64 → hidden → 10 MLP without BatchNorm (its gradients are batch-split invariant)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
