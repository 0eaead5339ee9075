"""prunekit: make trained PyTorch models smaller and faster by pruning, and measure it.

Data flows one way: model → :func:`trace` (graph) → :func:`score` (importance) →
:func:`make_plan` (plan, JSON) → :func:`apply_plan` (surgery) → fine-tune → report.

Example:
    >>> import prunekit, torch, torchvision
    >>> model = torchvision.models.resnet18()
    >>> graph = prunekit.trace(model, torch.randn(1, 3, 224, 224))
    >>> plan = prunekit.make_plan(graph, prunekit.score(model, graph, "l2"), ratio=0.5)
    >>> prunekit.apply_plan(model, plan)
    >>> prunekit.save(model, "resnet18-p50", "torchvision:resnet18", [plan])
"""

from prunekit import attention as _attention  # noqa: F401  (registers transformer blocks)
from prunekit.errors import PrunekitError
from prunekit.graph import DependencyGraph, trace
from prunekit.importance import score
from prunekit.io import load, load_record, save
from prunekit.plan import Allocation, PruningPlan, make_plan, plan_for_target, plan_from_keep
from prunekit.record import ModelRecord
from prunekit.surgery import apply_plan

__version__ = "0.1.0"

__all__ = [
    "Allocation",
    "DependencyGraph",
    "ModelRecord",
    "PrunekitError",
    "PruningPlan",
    "apply_plan",
    "load",
    "load_record",
    "make_plan",
    "plan_for_target",
    "plan_from_keep",
    "save",
    "score",
    "trace",
]
