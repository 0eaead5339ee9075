"""One call for the whole structured-pruning flow: trace → score → plan → surgery.

Example:
    >>> cfg = PruneConfig(ratio=0.5, criterion="l2")
    >>> result = prune(model, torch.randn(1, 3, 224, 224), cfg)
    >>> result.plan.to_json()
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from prunekit.config import Config
from prunekit.errors import PruneWarning
from prunekit.graph import DependencyGraph, trace
from prunekit.importance import CRITERIA, REDUCTIONS, score
from prunekit.latency.widths import NARROW, hardware_multiple
from prunekit.plan import Allocation, PruningPlan, estimate, make_plan
from prunekit.surgery import apply_plan
from prunekit.verify import check_plan


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
    """What :func:`prune` produced.

    Attributes:
        model: the pruned model (the same object as given).
        plan: the plan applied.
        graph: the dependency graph.
        scores: group id -> unit importance.
        max_rel_diff: soft mask vs pruned on the example inputs (None: not verified).
        warnings: why the plan removed much less than asked, if it did (also warned).
    """

    model: nn.Module
    plan: PruningPlan
    graph: DependencyGraph
    scores: dict[str, torch.Tensor]
    max_rel_diff: float | None = None
    warnings: list[str] = field(default_factory=list)


def prune(
    model: nn.Module,
    example_inputs: Any,
    config: PruneConfig | None = None,
    *,
    batches: Iterable[Any] | None = None,
    loss_fn: Callable[..., torch.Tensor] | None = None,
    soft: bool = False,
    verify: bool = True,
) -> PruneResult:
    """Trace, score, plan and prune ``model`` in place.

    Args:
        model: the model.
        example_inputs: inputs for tracing (a tensor or a tuple).
        config: settings (default: 50% of every group by L2 norm).
        batches: calibration batches for data-driven criteria.
        loss_fn: loss for the ``taylor`` criterion.
        soft: zero instead of removing.
        verify: before touching ``model``, check on a copy that the pruned model computes
            what its soft mask computes (:func:`prunekit.verify.check_plan`); ``False`` skips
            it (faster, but an inconsistent plan would go unnoticed).

    Returns:
        A :class:`PruneResult` (the model is the same object, now pruned).

    Raises:
        VerificationError: the check failed (the model is left unpruned).

    Example:
        >>> result = prune(model, torch.randn(1, 3, 224, 224), PruneConfig(ratio=0.5))
        >>> result.max_rel_diff
        3.1e-07
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
    diff = check_plan(model, plan, example_inputs) if verify else None
    apply_plan(model, plan, soft=soft)
    notes = weak_plan_notes(graph, plan, cfg)
    for note in notes:
        warnings.warn(note, PruneWarning, stacklevel=2)
    return PruneResult(model, plan, graph, scores, diff, notes)


#: a plan removing less than this fraction of what was asked is reported
WEAK_PLAN = 0.2


def weak_plan_notes(graph: DependencyGraph, plan: PruningPlan, cfg: PruneConfig) -> list[str]:
    """Say so when ``plan`` removes much less than ``cfg`` asked, and why channels stayed.

    "Much less": no unit at all, or under :data:`WEAK_PLAN` of the asked fraction (ratio 0.5
    but under 10% of the parameters; a MACs/params target: of that cost).

    Returns:
        One message (empty list when the plan is fine), listing the main reasons with the
        tensor dims they kept, e.g. ``"layer_norm statistics span the channels (at blocks.0.norm1)"``.
    """
    key, asked = next(iter(cfg.target.items())) if cfg.target else ("params", cfg.ratio)
    if key not in ("params", "macs") or asked <= 0:
        key = "params"
    before, after = estimate(graph)[key], estimate(graph, plan)[key]
    cut = 1.0 - after / before if before else 0.0
    if plan.removed_units() > 0 and cut >= WEAK_PLAN * asked:
        return []
    head = (
        "no prunable channel group was found"
        if not graph.groups
        else f"the plan removes only {cut:.1%} of the {key} (asked: {asked:g})"
    )
    lines = [f"{head}; channels were kept whole mainly because:"]
    for why, dims in graph.kept_reasons():
        more = f" and {len(dims) - 3} more" if len(dims) > 3 else ""
        lines.append(f"  - {why}: {', '.join(dims[:3])}{more}")
    return ["\n".join(lines)]
