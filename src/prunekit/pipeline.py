"""One call for the whole structured-pruning flow: trace → score → plan → surgery.

Example:
    >>> cfg = PruneConfig(ratio=0.5, criterion="l2")
    >>> result = prune(model, torch.randn(1, 3, 224, 224), cfg)
    >>> result.plan.to_json()
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph, trace
from prunekit.importance import CRITERIA, score
from prunekit.plan import Allocation, PruningPlan, make_plan, plan_for_target
from prunekit.surgery import apply_plan


@dataclass
class PruneConfig:
    """Settings of one structured pruning step (``None`` means the default).

    Attributes:
        method: ``"structured"`` (any criterion) or ``"slim"`` (Network Slimming: |γ| of
            BatchNorm, one global threshold, raw scores).
        ratio: fraction of units removed (locally per group, or globally).
        criterion: importance criterion name (see :data:`prunekit.importance.CRITERIA`).
        global_ranking: rank all groups together (with a per-group ``floor``).
        floor: units every group keeps at least.
        round_to: keep a multiple of this many units per group.
        target: ``"macs"`` or ``"params"``: find the ratio reaching ``reduction`` of it.
        reduction: wanted fraction of MACs/params removed when ``target`` is set.
        ignored_layers: module paths whose output channels stay.
        overrides: glob (group id, tensor or module path) -> ratio.
        unknown_ops: ``"error"`` or ``"barrier"``.
        reduce: how slot scores combine into unit scores.
    """

    method: str = "structured"
    ratio: float = 0.5
    criterion: str | None = None
    global_ranking: bool | None = None
    floor: int = 1
    round_to: int | None = None
    target: str | None = None
    reduction: float | None = None
    ignored_layers: list[str] = field(default_factory=list)
    overrides: dict[str, float] = field(default_factory=dict)
    unknown_ops: str = "error"
    reduce: str = "mean"

    def __post_init__(self) -> None:
        if self.method not in ("structured", "slim"):
            raise ConfigError(f"method must be 'structured' or 'slim', got {self.method!r}")
        if self.criterion is not None:
            CRITERIA.get(self.criterion)
        if self.target is not None and self.reduction is None:
            raise ConfigError(f"target={self.target!r} needs reduction=<fraction to remove>")
        self.allocation()  # validates ratio, floor, round_to and overrides before any work

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PruneConfig:
        """Build from a dict; unknown keys are errors."""
        known = {f.name for f in fields(cls)}
        bad = sorted(set(data) - known)
        if bad:
            raise ConfigError(f"unknown prune setting(s) {bad}; known: {sorted(known)}")
        return cls(**data)

    def allocation(self) -> Allocation:
        """The allocation part of this config."""
        slim = self.method == "slim"
        glob = self.global_ranking if self.global_ranking is not None else slim
        return Allocation(
            ratio=self.ratio,
            global_ranking=glob,
            floor=self.floor,
            round_to=self.round_to,
            overrides=self.overrides,
            normalize=None if slim else "mean",
        )


@dataclass
class PruneResult:
    """What :func:`prune` produced."""

    model: nn.Module
    plan: PruningPlan
    graph: DependencyGraph
    scores: dict[str, torch.Tensor]


def prune(
    model: nn.Module,
    example_inputs: Any,
    config: PruneConfig | None = None,
    *,
    batches: Iterable[Any] | None = None,
    loss_fn: Callable[..., torch.Tensor] | None = None,
    soft: bool = False,
) -> PruneResult:
    """Trace, score, plan and prune ``model`` in place.

    Args:
        model: the model.
        example_inputs: inputs for tracing (a tensor or a tuple).
        config: settings (default: 50% of every group by L2 norm).
        batches: calibration batches for data-driven criteria.
        loss_fn: loss for the ``taylor`` criterion.
        soft: zero instead of removing.

    Returns:
        A :class:`PruneResult` (the model is the same object, now pruned).
    """
    cfg = config or PruneConfig()
    graph = trace(
        model, example_inputs, ignored_layers=cfg.ignored_layers, unknown_ops=cfg.unknown_ops
    )
    criterion = cfg.criterion or ("bn_scale" if cfg.method == "slim" else "l2")
    scores = score(model, graph, criterion, reduce=cfg.reduce, batches=batches, loss_fn=loss_fn)
    alloc = cfg.allocation()
    if cfg.target is not None:
        kw = {
            k: getattr(alloc, k)
            for k in ("global_ranking", "floor", "round_to", "overrides", "normalize")
        }
        plan = plan_for_target(
            graph, scores, target=cfg.target, reduction=float(cfg.reduction or 0.0), **kw
        )
    else:
        plan = make_plan(graph, scores, alloc)
    plan.meta.update({"criterion": criterion, "method": cfg.method})
    apply_plan(model, plan, soft=soft)
    return PruneResult(model, plan, graph, scores)
