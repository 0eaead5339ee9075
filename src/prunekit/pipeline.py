"""One call for the whole structured-pruning flow: trace → score → plan → surgery.

Example:
    >>> cfg = PruneConfig(ratio=0.5, criterion="l2")
    >>> result = prune(model, torch.randn(1, 3, 224, 224), cfg)
    >>> result.plan.to_json()
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from prunekit.config import Config
from prunekit.graph import DependencyGraph, trace
from prunekit.importance import CRITERIA, REDUCTIONS, score
from prunekit.latency.widths import NARROW, hardware_multiple
from prunekit.plan import Allocation, PruningPlan, make_plan
from prunekit.surgery import apply_plan


class PruneConfig(Config):
    """Settings of one structured pruning step (``None`` means the default).

    Attributes:
        method: ``"structured"`` (any criterion) or ``"slim"`` (Network Slimming: |γ| of
            BatchNorm, one global ranking of raw scores, :func:`~prunekit.methods.slim_plan`).
        ratio: fraction of units removed (locally per group, or globally).
        criterion: importance criterion name (see :data:`prunekit.importance.CRITERIA`).
        global_ranking: rank all groups together (with a per-group ``floor``).
        floor: units every group keeps at least.
        round_to: keep a multiple of this many units per group. ``None`` → the width the
            model's device runs fastest (:func:`prunekit.latency.widths.hardware_multiple`: 16 on
            AVX-512 CPUs, 8 on AVX2 CPUs and CUDA), for groups at least four multiples wide
            (narrower layers keep exact counts); ``1`` → exact counts everywhere.
        allocator: a name in :data:`prunekit.allocators.ALLOCATORS` (default: ``global`` with
            ``global_ranking``, else ``local``).
        target: ``{allocator: goal}`` for one target allocator: ``{"macs": 0.4}`` (remove 40%
            of the MACs), ``{"params": 0.5}``, ``{"latency": 0.6}`` (run at 60% of the dense
            model's measured latency) or ``{"latency_ms": 12}``.
        ignored_layers: module paths whose output channels stay.
        overrides: glob (group id, tensor or module path) -> ratio.
        unknown_ops: ``"error"`` or ``"barrier"``.
        reduce: how slot scores combine into unit scores (a
            :data:`prunekit.importance.REDUCTIONS` name).
    """

    what: ClassVar[str] = "prune setting"

    method: Literal["structured", "slim"] = "structured"
    ratio: float = 0.5
    criterion: str | None = None
    global_ranking: bool | None = None
    floor: int = 1
    round_to: int | None = Field(None, ge=1)
    allocator: str | None = None
    target: dict[str, float] | None = None
    ignored_layers: list[str] = Field(default_factory=list)
    overrides: dict[str, float] = Field(default_factory=dict)
    unknown_ops: Literal["error", "barrier"] = "error"
    reduce: str = "mean"

    @field_validator("criterion")
    @classmethod
    def _known_criterion(cls, v: str | None) -> str | None:
        if v is not None and v not in CRITERIA:
            CRITERIA.get(v)  # the registry's error, with close matches
        return v

    @field_validator("reduce")
    @classmethod
    def _known_reduction(cls, v: str) -> str:
        REDUCTIONS.get(v)  # unknown names: the registry's error, with the known ones
        return v

    @model_validator(mode="after")
    def _valid_allocation(self) -> PruneConfig:
        if self.target is not None and (len(self.target) != 1 or self.allocator is not None):
            raise ValueError("target names exactly one cost, e.g. {'macs': 0.4}, and no allocator")
        self.allocation()  # validates ratio, floor, round_to, overrides, allocator before work
        return self

    def allocation(self, device: torch.device | str | None = None) -> Allocation:
        """The allocation part of this config, for a model on ``device`` (default: CPU)."""
        slim = self.method == "slim"
        name, goal = next(iter(self.target.items())) if self.target else (self.allocator, None)
        round_to, round_min = self.round_to, 0
        if round_to is None:  # hardware-aware default widths
            round_to = hardware_multiple(device)
            round_min = NARROW * round_to
        return Allocation(
            ratio=self.ratio,
            global_ranking=self.global_ranking if self.global_ranking is not None else slim,
            floor=self.floor,
            round_to=None if round_to == 1 else round_to,
            round_min=round_min,
            overrides=self.overrides,
            normalize=None if slim else "mean",
            allocator=name,
            target=goal,
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
    context = {"model": model, "example_inputs": example_inputs}
    device = next((p.device for p in model.parameters()), None)
    plan = make_plan(graph, scores, cfg.allocation(device), context=context)
    plan.meta.update({"criterion": criterion, "method": cfg.method})
    apply_plan(model, plan, soft=soft)
    return PruneResult(model, plan, graph, scores)
