"""Pruning methods from the literature, end to end (train → prune → fine-tune).

* :mod:`prunekit.methods.slimming` — Network Slimming (Liu et al., ICCV 2017).
* :mod:`prunekit.methods.bn_threshold` — its global |γ| thresholds as pruning plans.
* :mod:`prunekit.methods.stages` — the shared, resumable stages every method is composed of.

Example:
    >>> from prunekit.methods import NetworkSlimming, SlimmingConfig
    >>> NetworkSlimming(SlimmingConfig(model="zoo:vgg19", data="cifar10:...")).run("runs/vgg19")
"""

from __future__ import annotations

from prunekit.methods.bn_threshold import (
    SlimReport,
    describe_plan,
    global_slim_plan,
    reference_threshold_plan,
    slim_plan,
)
from prunekit.methods.slimming import (
    NetworkSlimming,
    Planner,
    SlimmingConfig,
    SlimmingResult,
    SlimPruneResult,
)
from prunekit.methods.stages import (
    StageInterrupted,
    StageResult,
    TrainSpec,
    Workbench,
    WorkbenchConfig,
    convert_stage,
    prune_model,
    prune_stage,
    train_stage,
)

__all__ = [
    "NetworkSlimming",
    "Planner",
    "SlimPruneResult",
    "SlimReport",
    "SlimmingConfig",
    "SlimmingResult",
    "StageInterrupted",
    "StageResult",
    "TrainSpec",
    "Workbench",
    "WorkbenchConfig",
    "convert_stage",
    "describe_plan",
    "global_slim_plan",
    "prune_model",
    "prune_stage",
    "reference_threshold_plan",
    "slim_plan",
    "train_stage",
]
