"""Pruning plans: which units of each group are kept — plain data with a JSON round trip.

A :class:`PruningPlan` holds, per group, the kept unit indices, and per tensor dim the kept
positions (what surgery needs). It is produced from a graph and scores by :func:`make_plan`
(local ratio, global ranking with a per-layer floor, overrides, ``round_to``) or by
:func:`plan_for_target` (a MACs or params reduction), and consumed by
:func:`prunekit.surgery.apply_plan`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from prunekit.allocators import ALLOCATORS, Allocation, AllocationRequest
from prunekit.errors import PlanError
from prunekit.graph import DependencyGraph

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

    def keep_masks(self, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Boolean keep-masks (``True`` = kept) of the named tensors this plan slices.

        The one conversion from kept positions to dense masks: soft pruning, the structured
        schedules and the recipe executor all zero through these masks
        (:func:`prunekit.sparse.masks.zero_pruned`).

        Args:
            tensors: name → tensor (e.g. ``dict(model.named_parameters())``); plan tensors
                missing here (buffers such as BN running stats) are left out.

        Returns:
            name → mask of the tensor's shape.

        Example:
            >>> zero_pruned(params, plan.keep_masks(params))
        """
        out: dict[str, torch.Tensor] = {}
        for name, dims in self.tensors.items():
            t = tensors.get(name)
            if t is None:
                continue
            mask = torch.ones(t.shape, dtype=torch.bool, device=t.device)
            for dim, kept in dims.items():
                keep = torch.zeros(t.shape[dim], dtype=torch.bool, device=t.device)
                keep[torch.as_tensor(kept, dtype=torch.long, device=t.device)] = True
                shape = [1] * t.dim()
                shape[dim] = -1
                mask &= keep.view(shape)
            out[name] = mask
        return out

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
        plan = cls(groups=groups, tensors=tensors, shapes=shapes, meta=dict(data.get("meta", {})))
        plan.validate()
        return plan

    def validate(self) -> None:
        """Check the plan is internally consistent (what a file read from disk must be).

        Raises:
            PlanError: naming the group or tensor whose indices are out of range, repeated,
                unsorted or empty, or a tensor dim its recorded shape does not have.
        """
        for gid, g in self.groups.items():
            where = f"plan group {gid!r}"
            _check_positions(where, g["keep"], g["size"])
            if not g["keep"]:
                raise PlanError(f"{where} keeps no unit; every group keeps at least one")
        for name, dims in self.tensors.items():
            shape = self.shapes.get(name)
            if shape is None:
                raise PlanError(f"malformed plan: tensor {name!r} has no recorded shape")
            for dim, kept in dims.items():
                if not 0 <= dim < len(shape):
                    raise PlanError(f"plan tensor {name!r} has no dim {dim} (shape {shape})")
                _check_positions(f"plan tensor {name!r} dim {dim}", kept, shape[dim])

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


def _check_positions(where: str, idx: list[int], size: int) -> None:
    """Kept positions must be sorted, unique and in ``[0, size)``."""
    bad = [i for i in idx if not 0 <= i < size]
    if bad:
        raise PlanError(f"{where}: index {bad[0]} is out of range for size {size}; re-make the plan")
    if any(a >= b for a, b in itertools.pairwise(idx)):
        raise PlanError(f"{where}: kept indices must be sorted and unique; re-make the plan")


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


def top_units(scores: torch.Tensor, n: int) -> list[int]:
    """The ``n`` highest-scoring units, sorted (ties: the lower index stays)."""
    order = torch.argsort(scores.double(), descending=True, stable=True)
    return sorted(order[:n].tolist())


def make_plan(
    graph: DependencyGraph,
    scores: Mapping[str, torch.Tensor],
    alloc: Allocation | None = None,
    *,
    context: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> PruningPlan:
    """Choose kept units from importance scores.

    The allocator named by ``alloc`` (:data:`prunekit.allocators.ALLOCATORS`: ``local``,
    ``global``, ``macs``, ``params``, or one you registered) decides how many units each group
    keeps; each group then keeps its highest-scoring units.

    Args:
        graph: the dependency graph.
        scores: group id -> per-unit importance (higher = more important). Groups with no
            score are not pruned.
        alloc: allocation settings; or pass its fields as keyword arguments
            (``ratio=0.5, global_ranking=True, floor=1, round_to=8, overrides={...}``).
        context: what allocators may use besides scores: ``model`` and ``example_inputs``
            (needed by the ``latency`` allocators, which time the model).

    Returns:
        A :class:`PruningPlan` (``meta``: the allocation, and what the allocator recorded).

    Example:
        >>> plan = make_plan(graph, score(model, graph, "l2"), ratio=0.5, round_to=8)
    """
    alloc = alloc or Allocation(**kwargs)
    scored = {g.id: g for g in graph.groups if g.id in scores}
    for gid, g in scored.items():
        if scores[gid].numel() != g.size:
            raise PlanError(
                f"score for group {gid!r} has {scores[gid].numel()} entries, group has {g.size}"
            )

    def plan_for(counts: Mapping[str, int]) -> PruningPlan:
        keep = {gid: top_units(scores[gid], int(n)) for gid, n in counts.items()}
        return plan_from_keep(graph, keep, alloc.meta())

    req = AllocationRequest(
        graph, {gid: scores[gid] for gid in scored}, alloc, plan_for, context=dict(context or {})
    )
    counts = ALLOCATORS.get(alloc.name).fn(req)
    unknown = sorted(set(counts) - set(scored))
    if unknown:
        raise PlanError(f"allocator {alloc.name!r} returned unscored group(s) {unknown[:3]}")
    plan = plan_for(counts)
    plan.meta.update(req.meta)
    return plan


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
        macs += numel * graph.macs_per_weight.get(name, 0.0)
    return {"params": params, "macs": macs}


def plan_for_target(
    graph: DependencyGraph,
    scores: Mapping[str, torch.Tensor],
    *,
    target: str = "macs",
    reduction: float = 0.5,
    **kwargs: Any,
) -> PruningPlan:
    """:func:`make_plan` with a target allocator: remove ``reduction`` of the MACs or params.

    Args:
        target: a target allocator (``"macs"``, ``"params"`` ...).
        reduction: its target (for MACs/params: the fraction removed, in (0, 1)).
        **kwargs: other :class:`Allocation` fields.

    Returns:
        The plan (its ``meta`` records the achieved reduction).
    """
    return make_plan(graph, scores, Allocation(allocator=target, target=reduction, **kwargs))
