"""Gradual structured (channel/filter) pruning driven by a schedule, on the core engine.

:class:`StructuredPruner` prunes *soft* while training: at each schedule event it scores the
model's groups (:func:`prunekit.importance.score`), makes a plan for the event's level
(:func:`prunekit.plan.make_plan`) and zeros the removed units
(:func:`prunekit.surgery.apply_plan` with ``soft=True``); shapes never change, so the optimizer,
LR scheduler and checkpoints keep working. After every optimizer step the removed entries are
zeroed again (momentum and weight decay would otherwise revive them). :meth:`~StructuredPruner.
finalize` then applies the last plan physically: the thin model computes exactly what the soft
one did (the core engine's soft-mode guarantee, see ``docs/design.md``).

With :class:`~prunekit.schedules.AGPSchedule` this is Automated Gradual Pruning applied to filters
(Zhu & Gupta 2017, eq. 1, with the level read as the fraction of channels removed per group);
with :class:`~prunekit.schedules.IterativeSchedule` it is prune → retrain cycles (Li et al.
2017's iterative filter pruning, Han et al. 2015's schedule).

Once removed, a unit stays removed: later plans keep a subset of the units the previous plan
kept, so levels only go up and finalizing the last plan removes everything ever zeroed.

Example:
    >>> pruner = StructuredPruner(model, torch.randn(1, 3, 32, 32),
    ...                           AGPSchedule(final=0.5, start=0, end=10), criterion="l1")
    >>> Trainer(model, train, test, {"epochs": 15}, callbacks=[pruner]).fit("runs/agp")
    >>> pruner.finalize()          # physically thinner model, same outputs
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph, trace
from prunekit.importance import CRITERIA, score
from prunekit.plan import Allocation, PruningPlan, make_plan, plan_from_keep
from prunekit.schedules import Schedule, schedule_from_config
from prunekit.sparse.masks import zero_pruned
from prunekit.surgery import apply_plan
from prunekit.verify import check_plan

__all__ = ["PruneEvent", "StructuredPruner"]


@dataclass(frozen=True)
class PruneEvent:
    """One applied schedule event: when, to which level, and how many units are gone."""

    step: int
    level: float
    removed_units: int


def _as_schedule(schedule: Schedule | Mapping[str, Any]) -> Schedule:
    sched = schedule if isinstance(schedule, Schedule) else schedule_from_config(schedule)
    too_high = [lv for _, lv in sched.events() if lv >= 1.0]
    if too_high:
        raise ConfigError(
            f"structured pruning levels must be < 1 (every group keeps at least `floor` units), "
            f"got {too_high[0]}; lower the schedule's final level"
        )
    return sched


class StructuredPruner:
    """Apply a pruning schedule to a model's channel groups, soft during training.

    Args:
        model: the model to prune (in place).
        example_inputs: inputs for tracing (a tensor or a tuple), e.g. one batch.
        schedule: a :class:`~prunekit.schedules.Schedule` or its config dict
            (``{"kind": "agp", "final": 0.5, "start": 0, "end": 10}``); level = fraction of
            each group's units removed (with ``global_ranking``: of all units). ``None``: no
            schedule, levels are set by calling :meth:`prune_to` (as the recipe executor does).
        criterion: importance criterion (``l1 l2 bn_scale taylor activation apoz random``).
        global_ranking: rank all groups together instead of pruning each by ``level``.
        round_to: keep a multiple of this many units per group (e.g. 8 for tensor cores).
        floor: units every group keeps at least.
        overrides: glob (group id, tensor or module path) -> level, replacing the schedule's.
        ignored_layers: module paths whose output channels stay (passed to ``trace``).
        groups: ids of the only groups to prune (default: every prunable group).
        unit: what :meth:`step` counts when used as a Trainer callback: ``"epoch"`` (events
            checked before each epoch) or ``"step"`` (after each optimizer step).
        score_kwargs: extra arguments of :func:`prunekit.importance.score` (``batches``,
            ``loss_fn``, ``reduce`` ...), e.g. calibration data for ``taylor``.
        graph: a graph already traced from this model (skips tracing).
        allocator: a name in :data:`prunekit.allocators.ALLOCATORS` deciding each group's kept
            count at an event's level (default ``global`` with ``global_ranking``, else
            ``local``); target allocators are not schedulable (they choose their own level).

    Example:
        >>> pruner = StructuredPruner(model, x, IterativeSchedule(final=0.6, cycles=3,
        ...                           cycle_length=2), criterion="l2")
        >>> for epoch in range(8):
        ...     pruner.step(epoch)
        ...     train_one_epoch(model, after_each_step=pruner.zero_pruned)
        >>> pruner.finalize()
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Any,
        schedule: Schedule | Mapping[str, Any] | None,
        criterion: str = "l1",
        global_ranking: bool = False,
        round_to: int | None = None,
        *,
        floor: int = 1,
        overrides: Mapping[str, float] | None = None,
        ignored_layers: Sequence[str] = (),
        groups: Iterable[str] | None = None,
        unit: Literal["epoch", "step"] = "epoch",
        score_kwargs: Mapping[str, Any] | None = None,
        graph: DependencyGraph | None = None,
        allocator: str | None = None,
    ) -> None:
        CRITERIA.get(criterion)  # unknown names fail here, with the known ones listed
        if unit not in ("epoch", "step"):
            raise ConfigError(f"unit must be 'epoch' or 'step', got {unit!r}")
        self.model = model
        self.example_inputs = example_inputs
        self.schedule = None if schedule is None else _as_schedule(schedule)
        # Computed once: step() runs after every optimizer step in "step" mode.
        self._events = [] if self.schedule is None else self.schedule.events()
        self.criterion = criterion
        self.unit = unit
        self.score_kwargs = dict(score_kwargs or {})
        # Validated once here; each event only swaps in its level.
        self._alloc = Allocation(
            ratio=0.0,
            global_ranking=global_ranking,
            round_to=round_to,
            floor=floor,
            overrides=dict(overrides or {}),
            allocator=allocator,
        )
        self.graph = (
            graph
            if graph is not None
            else trace(model, example_inputs, ignored_layers=list(ignored_layers))
        )
        known = {g.id for g in self.graph.groups}
        self.groups = None if groups is None else set(groups)
        unknown = sorted((self.groups or set()) - known)
        if unknown:
            raise ConfigError(f"unknown group id(s) {unknown}; known: {sorted(known)}")
        self.plan: PruningPlan | None = None
        self.level = 0.0
        self.history: list[PruneEvent] = []
        self._next_event = 0  # index of the first schedule event not yet handled
        self._keep: dict[str, torch.Tensor] = {}
        self._finalized = False

    # ------------------------------------------------------------------ schedule
    def step(self, t: int) -> PruningPlan | None:
        """Apply the schedule at step/epoch ``t``: prune softly if an event is due.

        Events skipped over (``t`` jumped past them) collapse into the latest one, so calling
        this once per epoch with an iteration-based schedule still reaches every level.

        Args:
            t: current step or epoch, in the schedule's unit.

        Returns:
            The new plan if the model was pruned now, else None.
        """
        if self._finalized:
            raise ConfigError("this StructuredPruner was finalized; make a new one to prune again")
        start = self._next_event
        while self._next_event < len(self._events) and self._events[self._next_event][0] <= t:
            self._next_event += 1
        if self._next_event == start:
            return None
        level = self._events[self._next_event - 1][1]
        if level <= self.level or level == 0.0:
            return None  # levels never go down; level 0 (AGP's first event) prunes nothing
        return self.prune_to(level, step=t)

    def prune_to(
        self,
        level: float,
        *,
        step: int = -1,
        overrides: Mapping[str, float] | None = None,
        score_kwargs: Mapping[str, Any] | None = None,
    ) -> PruningPlan:
        """Soft-prune to ``level`` now (outside the schedule); returns the plan applied.

        Args:
            level: fraction of each group's units removed.
            step: recorded in the plan and the history.
            overrides: group id (or glob) → level for this event only, on top of the
                pruner's own ``overrides`` (e.g. exact per-group counts).
            score_kwargs: extra :func:`prunekit.importance.score` arguments for this event
                (e.g. ``tensors`` with BN-folded weights).
        """
        if not 0.0 <= level < 1.0:
            raise ConfigError(f"structured pruning level must be in [0, 1), got {level}")
        kwargs = {**self.score_kwargs, **(score_kwargs or {})}
        scores = score(self.model, self.graph, self.criterion, **kwargs)
        if self.groups is not None:  # unscored groups are left whole by make_plan
            scores = {gid: s for gid, s in scores.items() if gid in self.groups}
        merged = {**(self._alloc.overrides or {}), **(overrides or {})}
        alloc = dataclasses.replace(self._alloc, ratio=level, overrides=merged)
        plan = make_plan(self.graph, scores, alloc)
        plan = self._monotone(plan, scores)
        plan.meta.update({"criterion": self.criterion, "level": level, "step": step})
        apply_plan(self.model, plan, soft=True)
        self.plan, self.level = plan, level
        self._keep = self._masks(plan)
        self.history.append(PruneEvent(step, level, plan.removed_units()))
        return plan

    def _monotone(self, plan: PruningPlan, scores: Mapping[str, torch.Tensor]) -> PruningPlan:
        """Restrict ``plan`` to units the previous plan kept (same counts, best scores first).

        A unit zeroed earlier usually scores 0 and is dropped again anyway; this makes it a
        guarantee for every criterion (``random``, ``taylor``, ties), so finalizing the last
        plan removes exactly what was zeroed during training.
        """
        if self.plan is None:
            return plan
        keep: dict[str, list[int]] = {}
        for gid, entry in plan.groups.items():
            before = self.plan.groups.get(gid)
            kept = entry["keep"]
            if before is None or set(kept) <= set(before["keep"]):
                keep[gid] = kept
                continue
            allowed = before["keep"]
            s = scores.get(gid)
            order = sorted(allowed, key=lambda u: -float(s[u])) if s is not None else allowed
            keep[gid] = sorted(order[: min(len(kept), len(allowed))])
        return plan_from_keep(self.graph, keep, plan.meta)

    # ------------------------------------------------------------------ masking
    def _masks(self, plan: PruningPlan) -> dict[str, torch.Tensor]:
        """Keep-masks of the parameters the plan shrinks (BN running stats are not zeroed, as
        in soft apply_plan)."""
        return plan.keep_masks(dict(self.model.named_parameters()))

    def zero_pruned(self) -> None:
        """Zero the removed entries again (call after every optimizer step)."""
        if not self._keep or self._finalized:
            return
        zero_pruned(dict(self.model.named_parameters()), self._keep)

    # ------------------------------------------------------------------ Trainer hooks
    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        """Trainer hook: epoch schedules prune here; step schedules handle step 0 here."""
        self.step(epoch if self.unit == "epoch" else int(getattr(trainer, "step", 0)))

    def on_step_end(self, trainer: Any, step: int) -> None:
        """Trainer hook: re-zero after the optimizer step (and prune if a step event is due)."""
        self.zero_pruned()
        if self.unit == "step":
            self.step(step)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The pruner's progress as plain data (the current plan as JSON data, the level, the
        events handled); the Trainer saves it in every checkpoint."""
        return {
            "plan": None if self.plan is None else self.plan.to_dict(),
            "level": self.level,
            "next_event": self._next_event,
            "history": [dataclasses.asdict(e) for e in self.history],
            "finalized": self._finalized,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (a resumed run re-zeroes and finalizes what the
        interrupted one had pruned, instead of starting over)."""
        plan = state["plan"]
        self.plan = None if plan is None else PruningPlan.from_dict(plan)
        self.level = float(state["level"])
        self._next_event = int(state["next_event"])
        self.history = [PruneEvent(**e) for e in state["history"]]
        self._finalized = bool(state["finalized"])
        self._keep = {} if self.plan is None else self._masks(self.plan)

    # ------------------------------------------------------------------ the end
    def finalize(self, *, verify: bool = True) -> nn.Module:
        """Remove the pruned units physically (the last plan, ``soft=False``).

        Args:
            verify: first check on a copy, on the example inputs, that the thin model computes
                what the soft one does (:func:`prunekit.verify.check_plan`; a
                :class:`~prunekit.errors.VerificationError` leaves the model soft).

        Returns:
            The same model object, now smaller; build a new optimizer for any further
            training. A pruner that never pruned returns the model unchanged.
        """
        if self._finalized:
            raise ConfigError("finalize() was already called on this StructuredPruner")
        if self.plan is not None:
            if verify and self.example_inputs is None:
                raise ConfigError(
                    "finalize() checks the thin model on the example inputs, and this pruner has "
                    "none: construct it with example_inputs, or call finalize(verify=False)"
                )
            if verify:
                check_plan(self.model, self.plan, self.example_inputs)
            apply_plan(self.model, self.plan, soft=False)
        self._finalized = True
        return self.model

    def levels(self, steps: Iterable[int]) -> list[float]:
        """The schedule's level at each of ``steps`` (what :meth:`step` would prune to)."""
        if self.schedule is None:
            raise ConfigError("this StructuredPruner has no schedule (levels come from prune_to)")
        return [self.schedule.level(s) for s in steps]
