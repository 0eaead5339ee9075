"""Pruning plans: which units of each group are kept — plain data with a JSON round trip.

A :class:`PruningPlan` holds, per group, the kept unit indices, and per tensor dim the kept
positions (what surgery needs). It is produced from a graph and scores by :func:`make_plan`
(local ratio, global ranking with a per-layer floor, overrides, ``round_to``) or by
:func:`plan_for_target` (a MACs or params reduction), and consumed by
:func:`prunekit.surgery.apply_plan`.
"""

from __future__ import annotations

import fnmatch
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from prunekit.errors import ConfigError, PlanError
from prunekit.graph import DependencyGraph, Group

FORMAT = "prunekit.plan/1"


@dataclass
class PruningPlan:
    """Kept units per group and kept positions per tensor dim.

    Attributes:
        groups: group id -> ``{"size": n, "keep": [unit indices]}``.
        tensors: tensor name -> {dim: kept positions}; only tensors that shrink.
        shapes: original shape of every tensor named in ``tensors`` (checked by surgery).
        meta: free-form provenance (criterion, ratio, ...).
    """

    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    tensors: dict[str, dict[int, list[int]]] = field(default_factory=dict)
    shapes: dict[str, list[int]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "format": FORMAT,
            "meta": self.meta,
            "groups": self.groups,
            "tensors": {
                t: {str(d): idx for d, idx in dims.items()} for t, dims in self.tensors.items()
            },
            "shapes": self.shapes,
        }

    def to_json(self) -> str:
        """Serialise to a JSON string."""
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PruningPlan:
        """Parse a dict made by :meth:`to_dict`, validating its structure."""
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise PlanError(f"not a prunekit plan (expected format {FORMAT!r})")
        try:
            tensors = {
                str(t): {int(d): [int(i) for i in idx] for d, idx in dims.items()}
                for t, dims in data["tensors"].items()
            }
            shapes = {str(t): [int(s) for s in sh] for t, sh in data["shapes"].items()}
            groups = {
                str(g): {"size": int(v["size"]), "keep": [int(i) for i in v["keep"]]}
                for g, v in data["groups"].items()
            }
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PlanError(f"malformed plan: {exc!r}") from None
        for t in tensors:
            if t not in shapes:
                raise PlanError(f"malformed plan: tensor {t!r} has no recorded shape")
        return cls(groups=groups, tensors=tensors, shapes=shapes, meta=dict(data.get("meta", {})))

    @classmethod
    def from_json(cls, text: str) -> PruningPlan:
        """Parse :meth:`to_json` output."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError(f"plan is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    def removed_units(self) -> int:
        """Total number of units removed."""
        return sum(g["size"] - len(g["keep"]) for g in self.groups.values())


def plan_from_keep(
    graph: DependencyGraph, keep: Mapping[str, Any], meta: Mapping[str, Any] | None = None
) -> PruningPlan:
    """Build a plan from kept unit indices per group id (groups not named keep everything).

    Args:
        graph: the model's dependency graph.
        keep: group id -> iterable of kept unit indices.
        meta: provenance stored in the plan.

    Returns:
        The :class:`PruningPlan`.
    """
    groups: dict[str, dict[str, Any]] = {}
    removed: dict[tuple[str, int], np.ndarray] = {}  # (tensor, dim) -> removed-position mask
    for g in graph.groups:
        kept = np.unique(np.fromiter((int(i) for i in keep.get(g.id, range(g.size))), np.int64))
        if kept.size and (kept[0] < 0 or kept[-1] >= g.size):
            raise PlanError(f"group {g.id!r} has {g.size} units; keep index out of range")
        if not kept.size:
            raise PlanError(f"group {g.id!r} would lose all {g.size} units; keep at least one")
        groups[g.id] = {"size": g.size, "keep": kept.tolist()}
        if kept.size == g.size:
            continue
        dropped = np.ones(g.size, dtype=bool)
        dropped[kept] = False
        for s in g.slots:
            lost = s.positions[dropped[s.units]]
            if lost.size:
                key = (s.tensor, s.dim)
                if key not in removed:
                    removed[key] = np.zeros(graph.tensor_shapes[s.tensor][s.dim], dtype=bool)
                removed[key][lost] = True
    plan = PruningPlan(groups=groups, meta=dict(meta or {}))
    for (name, dim), gone in sorted(removed.items()):
        plan.tensors.setdefault(name, {})[dim] = np.flatnonzero(~gone).tolist()
        plan.shapes[name] = list(graph.tensor_shapes[name])
    return plan


@dataclass
class Allocation:
    """How many units each group keeps (the part of planning that needs no scores)."""

    ratio: float = 0.5
    global_ranking: bool = False
    floor: int = 1
    round_to: int | None = None
    overrides: Mapping[str, float] | None = None
    max_ratio: float = 1.0
    normalize: str | None = "mean"

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise ConfigError(f"ratio must be in [0, 1), got {self.ratio}")
        if self.floor < 1:
            raise ConfigError(
                f"floor must be >= 1 (a layer never loses all channels), got {self.floor}"
            )
        if self.round_to is not None and self.round_to < 1:
            raise ConfigError(f"round_to must be a positive integer, got {self.round_to}")
        for k, v in (self.overrides or {}).items():
            if not 0.0 <= float(v) < 1.0:
                raise ConfigError(f"override ratio for {k!r} must be in [0, 1), got {v}")
        if self.normalize not in (None, "mean", "max", "sum"):
            raise ConfigError(
                f"normalize must be None, 'mean', 'max' or 'sum', got {self.normalize!r}"
            )


def _override(group: Group, overrides: Mapping[str, float] | None) -> float | None:
    for pattern, r in (overrides or {}).items():
        names = [group.id, *group.tensors, *(t.rsplit(".", 1)[0] for t in group.tensors)]
        if any(fnmatch.fnmatchcase(n, pattern) for n in names):
            return float(r)
    return None


def _n_keep(size: int, ratio: float, alloc: Allocation) -> int:
    keep = size - math.floor(ratio * size + 1e-9)
    if alloc.round_to:
        keep = min(size, math.ceil(keep / alloc.round_to) * alloc.round_to)
    return max(min(alloc.floor, size), keep)


def _normalized(s: torch.Tensor, how: str | None) -> torch.Tensor:
    s = s.double()
    if how is None:
        return s
    d = {"mean": s.mean(), "max": s.max(), "sum": s.sum()}[how]
    return s / d if float(d) > 0 else s


def make_plan(
    graph: DependencyGraph,
    scores: Mapping[str, torch.Tensor],
    alloc: Allocation | None = None,
    **kwargs: Any,
) -> PruningPlan:
    """Choose kept units from importance scores.

    Args:
        graph: the dependency graph.
        scores: group id -> per-unit importance (higher = more important). Groups with no
            score are not pruned.
        alloc: allocation settings; or pass its fields as keyword arguments
            (``ratio=0.5, global_ranking=True, floor=1, round_to=8, overrides={...}``).

    Returns:
        A :class:`PruningPlan`.

    Example:
        >>> plan = make_plan(graph, score(model, graph, "l2"), ratio=0.5, round_to=8)
    """
    alloc = alloc or Allocation(**kwargs)
    scored = [g for g in graph.groups if g.id in scores]
    ratios = {g.id: _override(g, alloc.overrides) for g in scored}
    local_ratio = {
        g.id: (r if r is not None else alloc.ratio) for g, r in ((g, ratios[g.id]) for g in scored)
    }
    if alloc.global_ranking:
        local_ratio.update(_global_ratios(scored, scores, alloc, ratios))
    keep = {}
    for g in scored:
        s = scores[g.id]
        if s.numel() != g.size:
            raise PlanError(f"score for group {g.id!r} has {s.numel()} entries, group has {g.size}")
        n = _n_keep(g.size, min(local_ratio[g.id], alloc.max_ratio), alloc)
        order = torch.argsort(s.double(), descending=True, stable=True)
        keep[g.id] = sorted(order[:n].tolist())
    meta = {
        "ratio": alloc.ratio,
        "global": alloc.global_ranking,
        "floor": alloc.floor,
        "round_to": alloc.round_to,
    }
    return plan_from_keep(graph, keep, meta)


def _global_ratios(
    groups: list[Group],
    scores: Mapping[str, torch.Tensor],
    alloc: Allocation,
    fixed: Mapping[str, float | None],
) -> dict[str, float]:
    """One threshold over all (normalised) scores; each group's share below it is its ratio."""
    free = [g for g in groups if fixed.get(g.id) is None]
    if not free:
        return {}
    allv = torch.cat([_normalized(scores[g.id], alloc.normalize) for g in free])
    k = math.floor(alloc.ratio * allv.numel())
    if k == 0:
        return {g.id: 0.0 for g in free}
    thr = torch.sort(allv).values[k - 1]
    out = {}
    for g in free:
        below = int((_normalized(scores[g.id], alloc.normalize) <= thr).sum())
        out[g.id] = min(below / g.size, (g.size - alloc.floor) / g.size)
    return out


def estimate(graph: DependencyGraph, plan: PruningPlan | None = None) -> dict[str, float]:
    """Params and MACs of the model after ``plan``, from tensor shapes alone (fast).

    MACs count convolutions and linear layers (the graph records how many output positions
    each weight element is used at); norms, activations and attention products are ignored.
    """
    params = 0.0
    macs = 0.0
    for name, shape in graph.tensor_shapes.items():
        dims = plan.tensors.get(name, {}) if plan else {}
        numel = float(np.prod([len(dims[d]) if d in dims else s for d, s in enumerate(shape)]))
        if name in graph.params:
            params += numel
        macs += numel * graph.positions.get(name, 0.0)
    return {"params": params, "macs": macs}


def plan_for_target(
    graph: DependencyGraph,
    scores: Mapping[str, torch.Tensor],
    *,
    target: str = "macs",
    reduction: float = 0.5,
    tol: float = 0.005,
    **kwargs: Any,
) -> PruningPlan:
    """Find the ratio whose plan removes ``reduction`` of the model's MACs or params.

    Args:
        target: ``"macs"`` or ``"params"``.
        reduction: wanted fraction removed, in (0, 1).
        tol: accepted error of the achieved fraction.
        **kwargs: other :class:`Allocation` fields.

    Returns:
        The plan (its ``meta`` records the achieved reduction).
    """
    if target not in ("macs", "params"):
        raise ConfigError(f"target must be 'macs' or 'params', got {target!r}")
    if not 0.0 < reduction < 1.0:
        raise ConfigError(f"reduction must be in (0, 1), got {reduction}")
    base = estimate(graph)[target]
    lo, hi = 0.0, 0.999
    best = make_plan(graph, scores, ratio=0.0, **kwargs)
    for _ in range(30):
        mid = (lo + hi) / 2
        plan = make_plan(graph, scores, ratio=mid, **kwargs)
        got = 1.0 - estimate(graph, plan)[target] / base
        best = plan
        if abs(got - reduction) <= tol:
            break
        lo, hi = (mid, hi) if got < reduction else (lo, mid)
    best.meta.update(
        {
            "target": target,
            "reduction": reduction,
            "achieved": 1.0 - estimate(graph, best)[target] / base,
        }
    )
    return best
