"""Allocators: how many units each group keeps — the part of planning that is a policy.

:func:`prunekit.plan.make_plan` asks the allocator named by its :class:`Allocation` for a keep
count per group, then keeps each group's highest-scoring units. Allocators are entries of
:data:`ALLOCATORS`; the built-in ones:

* ``local`` — every group removes ``floor(ratio · size)`` units (overrides per group);
* ``global`` — all units ranked together (scores normalised per group, see ``normalize``):
  exactly ``floor(ratio · total)`` units are removed — lowest first; tied scores (an untrained
  network's BatchNorm scales) are spread evenly over the tied groups, so ties never remove more
  than asked — while every group keeps at least ``floor``;
* ``macs`` / ``params`` — *target* allocators: the ratio whose ranking (``local``, or ``global``
  with ``global_ranking``) removes the target fraction of the model's MACs / parameters;
* ``latency`` / ``latency_ms`` — the widths that buy the most measured time per unit of
  importance lost until the model runs at the target fraction of its dense latency (or in the
  target milliseconds), confirmed by timing it (:mod:`prunekit.latency`).

A new allocator is one registered function (see ``docs/extending.md``); recipes and the CLI
read the names from the registry.

Example:
    >>> @ALLOCATORS.register("half_of_big")
    ... def half_of_big(req):  # prune only groups of 64+ units, by half
    ...     return {g.id: g.size // 2 if g.size >= 64 else g.size for g in req.groups}
    >>> plan = make_plan(graph, scores, Allocation(allocator="half_of_big"))
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph, Group
from prunekit.registry import Registry


@dataclass
class Allocation:
    """How many units each group keeps (the part of planning that needs no surgery).

    Attributes:
        ratio: fraction of units removed (per group, or of all ranked units).
        global_ranking: rank all groups together (allocator ``global``; also the ranking the
            target allocators search with).
        floor: units every group keeps at least.
        round_to: each group keeps a multiple of this many units (capped at its size).
        round_min: ``round_to`` applies to groups of at least this many units; narrower ones
            keep exact counts (0: every group is rounded).
        overrides: glob (group id, tensor or module path) → ratio for matching groups.
        max_ratio: no group loses more than this fraction.
        normalize: how ``global`` makes scores of different groups comparable: ``"mean"``,
            ``"max"``, ``"sum"`` (divide by it) or ``None`` (raw scores, e.g. BN |γ|).
        allocator: a name in :data:`ALLOCATORS`; ``None`` → ``"global"`` with
            ``global_ranking``, else ``"local"``.
        target: the target allocators' goal (``macs``/``params``: fraction removed, in (0, 1)).
        weights: group id → per-unit weight for ``global`` (how much each unit counts towards
            ``ratio``, e.g. how many BatchNorm channels it is); ``None`` → 1 per unit.
    """

    ratio: float = 0.5
    global_ranking: bool = False
    floor: int = 1
    round_to: int | None = None
    round_min: int = 0
    overrides: Mapping[str, float] | None = None
    max_ratio: float = 1.0
    normalize: str | None = "mean"
    allocator: str | None = None
    target: float | None = None
    weights: Mapping[str, torch.Tensor] | None = field(default=None, repr=False)

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
        spec = ALLOCATORS.get(self.name)
        if spec.takes_target and self.target is None:
            raise ConfigError(f"allocator {self.name!r} needs a target ({spec.target_help})")
        if not spec.takes_target and self.target is not None:
            raise ConfigError(f"allocator {self.name!r} takes no target (got {self.target})")
        if spec.takes_target and spec.check_target is not None:
            spec.check_target(float(self.target or 0.0))

    def rounding(self, size: int) -> int | None:
        """The multiple a group of ``size`` units keeps (``None``: exact)."""
        return self.round_to if size >= self.round_min else None

    @property
    def name(self) -> str:
        """The allocator this allocation uses."""
        if self.allocator is not None:
            return self.allocator
        return "global" if self.global_ranking else "local"

    def meta(self) -> dict[str, Any]:
        """What a plan records about its allocation."""
        out: dict[str, Any] = {
            "allocator": self.name,
            "ratio": self.ratio,
            "global": self.global_ranking,
            "floor": self.floor,
            "round_to": self.round_to,
        }
        if self.round_min:
            out["round_min"] = self.round_min
        if self.target is not None:
            out["target"] = self.target
        return out


@dataclass
class AllocationRequest:
    """What an allocator sees: the graph, the scored groups, the settings, and helpers.

    Attributes:
        graph: the dependency graph.
        scores: group id → per-unit importance (only groups that may be pruned).
        alloc: the settings.
        plan_for: ``fn(counts) -> plan`` building the plan a keep-count choice gives (target
            allocators measure it).
        meta: what the allocator wants recorded in the plan (e.g. the achieved target).
        context: what else the caller knows (``model``, ``example_inputs``: the ``latency``
            allocators time the model).
    """

    graph: DependencyGraph
    scores: Mapping[str, torch.Tensor]
    alloc: Allocation
    plan_for: Callable[[Mapping[str, int]], Any]
    meta: dict[str, Any] = field(default_factory=dict)
    context: Mapping[str, Any] = field(default_factory=dict)

    @property
    def groups(self) -> list[Group]:
        """The scored groups, in graph order."""
        return [g for g in self.graph.groups if g.id in self.scores]

    def override(self, group: Group) -> float | None:
        """The ratio an ``overrides`` glob sets for ``group`` (None: not overridden)."""
        for pattern, r in (self.alloc.overrides or {}).items():
            names = [group.id, *group.tensors, *(t.rsplit(".", 1)[0] for t in group.tensors)]
            if any(fnmatch.fnmatchcase(n, pattern) for n in names):
                return float(r)
        return None

    def keep(self, group: Group, ratio: float) -> int:
        """Units ``group`` keeps at ``ratio`` under this allocation's floor/round_to/max."""
        return keep_count(
            group.size,
            min(ratio, self.alloc.max_ratio),
            floor=self.alloc.floor,
            round_to=self.alloc.rounding(group.size),
        )

    def with_ratio(self, ratio: float, allocator: str | None = None) -> dict[str, int]:
        """Keep counts at another ratio with a ranking allocator (what targets search over)."""
        name = allocator or ("global" if self.alloc.global_ranking else "local")
        alloc = Allocation(
            ratio=ratio,
            global_ranking=self.alloc.global_ranking,
            floor=self.alloc.floor,
            round_to=self.alloc.round_to,
            round_min=self.alloc.round_min,
            overrides=self.alloc.overrides,
            max_ratio=self.alloc.max_ratio,
            normalize=self.alloc.normalize,
            allocator=name,
            weights=self.alloc.weights,
        )
        sub = AllocationRequest(self.graph, self.scores, alloc, self.plan_for, context=self.context)
        return ALLOCATORS.get(name).fn(sub)


#: ``fn(request) -> {group id: units kept}``
AllocatorFn = Callable[[AllocationRequest], dict[str, int]]


@dataclass(frozen=True)
class Allocator:
    """A registered allocator: the function, and whether it aims at a target value."""

    fn: AllocatorFn
    takes_target: bool = False
    target_help: str = ""
    check_target: Callable[[float], None] | None = None


ALLOCATORS: Registry[Allocator] = Registry("allocator")


def register_allocator(
    name: str,
    *,
    takes_target: bool = False,
    target_help: str = "",
    check_target: Callable[[float], None] | None = None,
) -> Callable[[AllocatorFn], AllocatorFn]:
    """Decorator registering ``fn(request) -> {group id: kept units}`` as allocator ``name``.

    Args:
        name: the name recipes, the CLI and :class:`Allocation` use.
        takes_target: the allocator reaches ``Allocation.target`` (e.g. a latency).
        target_help: what the target means, for error messages.
        check_target: validates a target value (raise :class:`ConfigError`).

    Returns:
        The decorator.
    """

    def deco(fn: AllocatorFn) -> AllocatorFn:
        ALLOCATORS.add(name, Allocator(fn, takes_target, target_help, check_target))
        return fn

    return deco


def keep_count(size: int, ratio: float, *, floor: int = 1, round_to: int | None = None) -> int:
    """Units a group of ``size`` keeps when ``ratio`` of them go — the one keep-count rule.

    ``size − floor(ratio·size)``, rounded up to a multiple of ``round_to`` (at most ``size``),
    and at least ``floor``.

    Example:
        >>> keep_count(10, 0.55, round_to=4)
        8
    """
    keep = size - math.floor(ratio * size + 1e-9)
    if round_to:
        keep = min(size, math.ceil(keep / round_to) * round_to)
    return max(min(floor, size), keep)


@register_allocator("local")
def _local(req: AllocationRequest) -> dict[str, int]:
    """The same ratio in every group (or the group's override)."""
    out = {}
    for g in req.groups:
        r = req.override(g)
        out[g.id] = req.keep(g, req.alloc.ratio if r is None else r)
    return out


def _normalized(s: torch.Tensor, how: str | None) -> torch.Tensor:
    s = s.double()
    if how is None:
        return s
    d = {"mean": s.mean(), "max": s.max(), "sum": s.sum()}[how]
    return s / d if float(d) > 0 else s


@register_allocator("global")
def _global(req: AllocationRequest) -> dict[str, int]:
    """One ranking over all groups: the lowest (normalised) units go until ``ratio`` of the
    units (by weight) is removed; each group keeps at least ``floor``."""
    alloc = req.alloc
    out: dict[str, int] = {}
    free = []
    for g in req.groups:
        r = req.override(g)
        if r is None:
            free.append(g)
        else:
            out[g.id] = req.keep(g, r)
    if free:
        out.update(
            global_keep(
                {g.id: req.scores[g.id] for g in free},
                alloc.ratio,
                floor=alloc.floor,
                round_to=alloc.round_to,
                round_min=alloc.round_min,
                max_ratio=alloc.max_ratio,
                normalize=alloc.normalize,
                weights=alloc.weights,
            )
        )
    return out


def global_keep(
    scores: Mapping[str, torch.Tensor],
    ratio: float,
    *,
    floor: int = 1,
    round_to: int | None = None,
    round_min: int = 0,
    max_ratio: float = 1.0,
    normalize: str | None = "mean",
    weights: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, int]:
    """Keep counts of one global ranking — the ``global`` allocator's rule, for any scored sets.

    Units are removed lowest (normalised) score first until ``ratio`` of the total weight is
    gone; every set keeps at least ``floor`` and loses at most ``max_ratio``; ``round_to``
    rounds each kept count up. Used by the ``global`` allocator (sets = graph groups) and by
    the recipe ``slim`` pruner (sets = BatchNorm weight tensors).

    Args:
        scores: set name → 1-D per-unit scores (its length is the set's size).
        ratio: fraction of the total weight to remove.
        floor: units each set keeps at least.
        round_to: each set keeps a multiple of this many units (capped at its size).
        round_min: ``round_to`` applies to sets of at least this many units.
        max_ratio: no set loses more than this fraction.
        normalize: ``"mean"``/``"max"``/``"sum"`` divides each set's scores by it; ``None``
            ranks raw scores (BatchNorm |γ|).
        weights: set name → per-unit weight towards ``ratio`` (default 1 per unit).

    Returns:
        set name → units kept.

    Example:
        >>> global_keep({"a": torch.tensor([1., 2.]), "b": torch.tensor([3., 4.])}, 0.5,
        ...             normalize=None)
        {'a': 1, 'b': 1}
    """
    names = list(scores)
    sizes = [int(scores[n].numel()) for n in names]
    s = torch.cat([_normalized(scores[n].flatten(), normalize) for n in names])
    w = torch.cat(
        [
            (weights or {}).get(n, torch.ones(size)).double().reshape(size)
            for n, size in zip(names, sizes)
        ]
    )
    owner = np.concatenate([np.full(size, i) for i, size in enumerate(sizes)])
    # Ties (an untrained network's equal BatchNorm scales) are broken by a unit's relative
    # position in its set, so tied sets each lose about the same share, not the first ones
    # everything; then by set order (np.lexsort: last key first).
    frac = np.concatenate([np.arange(size) / size for size in sizes])
    order = np.lexsort((owner, frac, s.numpy()))
    budget = ratio * float(w.sum()) + 1e-9
    removable = [
        min(size - min(floor, size), math.floor(max_ratio * size + 1e-9)) for size in sizes
    ]
    removed = [0] * len(names)
    spent = 0.0
    unit_weights = w.tolist()
    for i in order.tolist():
        si = int(owner[i])
        if spent + unit_weights[i] > budget:
            break
        if removed[si] < removable[si]:
            removed[si] += 1
            spent += unit_weights[i]
    out = {}
    for name, size, n in zip(names, sizes, removed):
        kept = size - n
        if round_to and size >= round_min:
            kept = min(size, math.ceil(kept / round_to) * round_to)
        out[name] = kept
    return out


def _fraction(v: float) -> None:
    if not 0.0 < v < 1.0:
        raise ConfigError(f"a macs/params target is the fraction removed, in (0, 1); got {v}")


def _cost_target(cost: str) -> AllocatorFn:
    def allocate(req: AllocationRequest) -> dict[str, int]:
        from prunekit.plan import estimate

        goal = float(req.alloc.target or 0.0)
        base = estimate(req.graph)[cost]
        lo, hi = 0.0, 0.999
        best = req.with_ratio(0.0)
        got = 0.0
        for _ in range(30):
            mid = (lo + hi) / 2
            counts = req.with_ratio(mid)
            got = 1.0 - estimate(req.graph, req.plan_for(counts))[cost] / base
            best = counts
            if abs(got - goal) <= 0.005:
                break
            lo, hi = (mid, hi) if got < goal else (lo, mid)
        req.meta.update({"target_cost": cost, "achieved": got})
        return best

    allocate.__doc__ = f"The ratio whose ranking removes ``target`` of the model's {cost}."
    return allocate


for _cost in ("macs", "params"):
    register_allocator(
        _cost,
        takes_target=True,
        target_help=f"the fraction of {_cost} to remove, in (0, 1)",
        check_target=_fraction,
    )(_cost_target(_cost))


def _latency_fraction(v: float) -> None:
    if not 0.0 < v < 1.0:
        raise ConfigError(f"a latency target is the fraction of the dense latency kept, in (0, 1); got {v}")


def _positive_ms(v: float) -> None:
    if not v > 0:
        raise ConfigError(f"a latency_ms target is milliseconds > 0; got {v}")


def _latency(kind: str) -> AllocatorFn:
    def allocate(req: AllocationRequest) -> dict[str, int]:
        # Imported on use: timing needs the latency package, planning in general does not.
        from prunekit.latency.allocate import allocate_latency

        return allocate_latency(req, kind)

    allocate.__doc__ = "Widths reaching a measured latency (prunekit.latency, then confirmed)."
    return allocate


register_allocator(
    "latency",
    takes_target=True,
    target_help="the fraction of the dense model's measured latency to reach, in (0, 1)",
    check_target=_latency_fraction,
)(_latency("fraction"))
register_allocator(
    "latency_ms",
    takes_target=True,
    target_help="the latency to reach, in milliseconds",
    check_target=_positive_ms,
)(_latency("ms"))
