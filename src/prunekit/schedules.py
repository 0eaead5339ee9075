"""Pruning schedules: which pruning level to apply at which step.

Pure functions plus small schedule objects; nothing here touches a model. A *level* is a number
in [0, 1]: the sparsity for unstructured pruning, or the fraction of channels removed for
structured pruning. A *step* is whatever unit the training loop counts (epoch or iteration);
``start``, ``end``, ``frequency`` and ``at`` are in that unit.

Driving a run (the same for unstructured and structured pruning)::

    schedule = AGPSchedule(initial=0.0, final=0.9, start=0, end=10, frequency=1)
    for step in range(total_steps):
        if schedule.should_prune(step):
            level = schedule.level(step)
            # unstructured: prunekit.sparse.prune_magnitude(model, level)
            # structured:   plan = make_plan(graph, scores, ratio=level)
            #               apply_plan(model, plan, soft=True)    # zero channels, keep shapes
        train_one_step_or_epoch(model)
    # structured: at the end, apply the last plan with soft=False to thin the model physically

For structured pruning, :class:`prunekit.structured.StructuredPruner` runs exactly this loop
(also as a ``Trainer`` callback), including re-zeroing after every optimizer step and the final
surgery.

:meth:`Schedule.events` lists every ``(step, level)`` at which to prune, for drivers that want
the whole timeline up front, and :func:`schedule_from_config` builds a schedule from a recipe's
dict (``{"kind": "agp", ...}``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from prunekit.errors import ConfigError
from prunekit.registry import Registry


def _check_level(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0 or math.isnan(value):
        raise ConfigError(f"{name} must be a level in [0, 1], got {value}")


def agp_sparsity(
    step: float, *, initial: float, final: float, start: int, end: int, frequency: int = 1
) -> float:
    """Automated Gradual Pruning level at ``step`` (Zhu & Gupta 2017, eq. 1).

    ``s_t = s_f + (s_i − s_f)·(1 − (t − t0)/(nΔt))³`` with ``t0 = start``, ``nΔt = end − start``,
    ``Δt = frequency``. The level only changes at ``t0 + kΔt``: between those steps it holds the
    last value. Before ``start`` it is ``initial``; from ``end`` on it is ``final`` (also when
    ``end − start`` is not a multiple of ``frequency``: the last jump then happens at ``end``).

    Args:
        step: current step (epoch or iteration).
        initial: level at ``start`` (``s_i``).
        final: level reached at ``end`` (``s_f``).
        start: first pruning step ``t0``.
        end: step where ``final`` is reached, ``> start``.
        frequency: steps between pruning events ``Δt``, ``>= 1``.

    Returns:
        The level to prune to at ``step``.

    Example:
        >>> agp_sparsity(5, initial=0.0, final=0.8, start=0, end=10, frequency=1)
        0.7
    """
    _check_level("initial", initial)
    _check_level("final", final)
    if end <= start:
        raise ConfigError(f"AGP needs end > start, got start={start}, end={end}")
    if frequency < 1:
        raise ConfigError(f"AGP frequency must be >= 1, got {frequency}")
    if step < start:
        return initial
    if step >= end:
        return final
    t = start + math.floor((step - start) / frequency) * frequency  # last pruning event
    progress = (t - start) / (end - start)
    return final + (initial - final) * (1.0 - progress) ** 3


def one_shot(step: float, *, level: float, at: int = 0) -> float:
    """One-shot schedule: 0 before ``at``, ``level`` from ``at`` on.

    Example:
        >>> one_shot(3, level=0.9, at=2)
        0.9
    """
    _check_level("level", level)
    return level if step >= at else 0.0


def iterative(
    final: float,
    cycles: int,
    *,
    initial: float = 0.0,
    mode: Literal["geometric", "linear"] = "geometric",
) -> list[float]:
    """Target levels of iterative prune → retrain cycles, ending exactly at ``final``.

    ``geometric`` removes the same fraction of the *remaining* entries each cycle (Han et al.
    2015's iterative pruning; density ``(1−s_i)·((1−s_f)/(1−s_i))^(k/n)``); ``linear`` raises the
    level by equal amounts.

    Args:
        final: level after the last cycle.
        cycles: number of cycles ``n >= 1``.
        initial: level before the first cycle.
        mode: ``"geometric"`` or ``"linear"``.

    Returns:
        ``n`` increasing levels, the last one equal to ``final``.

    Example:
        >>> iterative(0.75, 2)
        [0.5, 0.75]
    """
    _check_level("initial", initial)
    _check_level("final", final)
    if cycles < 1:
        raise ConfigError(f"iterative schedule needs cycles >= 1, got {cycles}")
    if mode == "linear":
        levels = [initial + (final - initial) * k / cycles for k in range(1, cycles + 1)]
    elif mode == "geometric":
        if final >= 1.0:
            raise ConfigError("geometric schedule cannot reach level 1.0; use mode='linear'")
        ratio = (1.0 - final) / (1.0 - initial)
        levels = [1.0 - (1.0 - initial) * ratio ** (k / cycles) for k in range(1, cycles + 1)]
    else:
        raise ConfigError(f"unknown iterative mode {mode!r}; use 'geometric' or 'linear'")
    levels[-1] = final  # avoid floating-point drift on the level that matters most
    return levels


@dataclass(frozen=True)
class Schedule:
    """Base class: a level per step and the steps at which to prune."""

    def level(self, step: int) -> float:
        """Level in force at ``step``."""
        raise NotImplementedError

    def events(self) -> list[tuple[int, float]]:
        """Every ``(step, level)`` at which the model should be (re-)pruned, in order."""
        raise NotImplementedError

    def should_prune(self, step: int) -> bool:
        """Whether ``step`` is a pruning event."""
        return any(s == step for s, _ in self.events())

    @property
    def last_step(self) -> int:
        """Step of the last pruning event; train past it to recover accuracy."""
        return self.events()[-1][0]


@dataclass(frozen=True)
class OneShotSchedule(Schedule):
    """Prune once to ``target`` at step ``at``."""

    target: float
    at: int = 0

    def __post_init__(self) -> None:
        _check_level("target", self.target)

    def level(self, step: int) -> float:
        return one_shot(step, level=self.target, at=self.at)

    def events(self) -> list[tuple[int, float]]:
        return [(self.at, self.target)]


@dataclass(frozen=True)
class AGPSchedule(Schedule):
    """Automated Gradual Pruning (Zhu & Gupta 2017), see :func:`agp_sparsity`."""

    final: float
    start: int
    end: int
    initial: float = 0.0
    frequency: int = 1

    def __post_init__(self) -> None:
        self.level(self.start)  # validates all fields, raising ConfigError

    def level(self, step: int) -> float:
        return agp_sparsity(
            step,
            initial=self.initial,
            final=self.final,
            start=self.start,
            end=self.end,
            frequency=self.frequency,
        )

    def events(self) -> list[tuple[int, float]]:
        steps = [*range(self.start, self.end, self.frequency), self.end]
        return [(s, self.level(s)) for s in steps]


@dataclass(frozen=True)
class IterativeSchedule(Schedule):
    """Prune → retrain cycles: cycle ``k`` prunes at ``start + k·cycle_length``."""

    final: float
    cycles: int
    cycle_length: int = 1
    start: int = 0
    initial: float = 0.0
    mode: Literal["geometric", "linear"] = "geometric"

    def __post_init__(self) -> None:
        if self.cycle_length < 1:
            raise ConfigError(f"cycle_length must be >= 1, got {self.cycle_length}")
        self.events()  # validates

    def events(self) -> list[tuple[int, float]]:
        levels = iterative(self.final, self.cycles, initial=self.initial, mode=self.mode)
        return [(self.start + k * self.cycle_length, lv) for k, lv in enumerate(levels)]

    def level(self, step: int) -> float:
        current = self.initial
        for s, lv in self.events():
            if step >= s:
                current = lv
        return current


@dataclass(frozen=True)
class ScheduleKind:
    """A registered pruning-schedule kind.

    Attributes:
        cls: the :class:`Schedule` class (built by :func:`schedule_from_config`).
        levels: ``fn(epochs, initial, final) -> level per event`` when the events are a policy's
            active epochs (how recipes lay out a pruner's targets).
        min_events: events the kind needs (AGP needs a start and an end).
    """

    cls: type[Schedule]
    levels: Callable[[Sequence[int], float, float], list[float]]
    min_events: int = 1


#: schedule kind name → :class:`ScheduleKind` (recipes and :func:`schedule_from_config` read it).
SCHEDULES: Registry[ScheduleKind] = Registry("pruning schedule")


def _agp_levels(epochs: Sequence[int], lo: float, hi: float) -> list[float]:
    # From the first to the last active epoch — the span Distiller uses
    # (((end - start - 1) // freq) * freq), so the final level is reached at the last event.
    return [agp_sparsity(e, initial=lo, final=hi, start=epochs[0], end=epochs[-1]) for e in epochs]


SCHEDULES.add("one_shot", ScheduleKind(OneShotSchedule, lambda epochs, lo, hi: [hi] * len(epochs)))
SCHEDULES.add("agp", ScheduleKind(AGPSchedule, _agp_levels, min_events=2))
SCHEDULES.add(
    "iterative",
    ScheduleKind(IterativeSchedule, lambda epochs, lo, hi: iterative(hi, len(epochs), initial=lo)),
)


def schedule_from_config(config: Mapping[str, Any]) -> Schedule:
    """Build a schedule from a dict such as ``{"kind": "agp", "final": 0.9, "start": 0, "end": 10}``.

    Keys are the constructor arguments of the chosen class; a value of
    None means "use the default". Unknown keys and unknown kinds raise :class:`ConfigError`.

    Args:
        config: mapping with ``kind``, a name in :data:`SCHEDULES` (``one_shot``, ``agp``,
            ``iterative``).

    Returns:
        The schedule object.
    """
    cfg = {k: v for k, v in config.items() if v is not None}
    kind = cfg.pop("kind", None)
    if kind not in SCHEDULES:
        raise ConfigError(f"schedule kind must be one of {SCHEDULES.names()}, got {kind!r}")
    cls = SCHEDULES.get(kind).cls
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(cfg) - names)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {unknown} for a {kind} schedule; allowed: {sorted(names)}"
        )
    try:
        return cls(**cfg)
    except TypeError as exc:
        raise ConfigError(f"bad {kind} schedule config {dict(config)}: {exc}") from None
