"""Pruning methods from the literature, end to end (train → prune → fine-tune).

* :mod:`prunekit.methods.slimming` — Network Slimming (Liu et al., ICCV 2017).
* :mod:`prunekit.methods.bn_threshold` — its global |γ| thresholds as pruning plans.

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
    StageInterrupted,
    StageResult,
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
    "describe_plan",
    "global_slim_plan",
    "reference_threshold_plan",
    "slim_plan",
]
