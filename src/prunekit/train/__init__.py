"""Training: trainer, sparsity regularizers, distillation, checkpoints.

Example:
    >>> from prunekit.train import Trainer, TrainConfig, BNL1Regularizer
    >>> cfg = TrainConfig(epochs=160, lr=0.1, schedule="step")
    >>> result = Trainer(model, train, test, cfg, regularizers=[BNL1Regularizer(1e-4)]).fit("runs/a")
"""

from __future__ import annotations

from prunekit.train.bn import bn_scales, bn_sparsity, plot_bn_histogram
from prunekit.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from prunekit.train.config import TrainConfig
from prunekit.train.distill import DistillationLoss
from prunekit.train.distributed import DistInfo, cleanup_distributed, setup_distributed
from prunekit.train.evaluate import evaluate
from prunekit.train.lr_schedule import LRSchedule
from prunekit.train.regularizers import (
    BNL1Regularizer,
    GroupLassoRegularizer,
    GroupVarianceRegularizer,
    L1Regularizer,
    Regularizer,
)
from prunekit.train.seed import seed_everything
from prunekit.train.trainer import Trainer, TrainResult

__all__ = [
    "BNL1Regularizer",
    "DistInfo",
    "DistillationLoss",
    "GroupLassoRegularizer",
    "GroupVarianceRegularizer",
    "L1Regularizer",
    "LRSchedule",
    "Regularizer",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "bn_scales",
    "bn_sparsity",
    "cleanup_distributed",
    "evaluate",
    "latest_checkpoint",
    "load_checkpoint",
    "plot_bn_histogram",
    "save_checkpoint",
    "seed_everything",
    "setup_distributed",
]
