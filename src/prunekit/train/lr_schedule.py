"""Per-iteration learning-rate schedules: the one LR implementation of prunekit.

The learning rate is a pure function of the global iteration, so the only scheduler state a
checkpoint needs is the iteration counter and a resumed run lands on exactly the same values.
``prunekit train``, ``prunekit slim``, methods and recipes (native and Distiller) all build their
schedule here, from a :class:`~prunekit.train.TrainConfig` (:meth:`LRSchedule.from_config`), so
the same settings give the same table everywhere.

Base schedules are entries of :data:`BASE_SCHEDULES` (name → factor function); a recipe's
epoch-stepped LR *policies* (Distiller's ``lr_schedulers``) multiply the base factor through
``epoch_scale``.

Example:
    >>> sched = LRSchedule("step", base_lr=0.1, epochs=160, steps_per_epoch=391)
    >>> [round(sched.lr(i * 391), 6) for i in (0, 79, 80, 120)]
    [0.1, 0.1, 0.01, 0.001]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from prunekit.errors import ConfigError
from prunekit.registry import Registry

if TYPE_CHECKING:  # config imports this module for the schedule names
    from prunekit.train.config import TrainConfig

# One-cycle constants as in Smith & Topping 2019 ("Super-Convergence") and torch's OneCycleLR:
# start at lr/25, peak at lr, end at lr/25/1e4, cosine-annealed in both phases.
ONECYCLE_DIV = 25.0
ONECYCLE_FINAL_DIV = 1e4
ONECYCLE_DEFAULT_PCT = 0.3
# Network Slimming (Liu et al. 2017) reference schedule: ×gamma at 50% and at 75% of the epochs.
STEP_MILESTONES = (0.5, 0.75)
STEP_GAMMA = 0.1

#: ``fn(schedule, step) -> multiplier of base_lr`` (warm-up included), by schedule name.
ScheduleFn = Callable[["LRSchedule", int], float]
BASE_SCHEDULES: Registry[ScheduleFn] = Registry("lr schedule")


def _cos_interp(start: float, end: float, t: float) -> float:
    """Cosine interpolation from ``start`` (t=0) to ``end`` (t=1)."""
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * min(max(t, 0.0), 1.0)))


class LRSchedule:
    """Learning rate as a function of the global iteration.

    Args:
        kind: a name in :data:`BASE_SCHEDULES` (``step``, ``onecycle``, ``cosine``,
            ``constant``).
        base_lr: peak learning rate.
        epochs: length of the run in epochs.
        steps_per_epoch: iterations per epoch (``len(train_loader)``).
        warmup: epochs of linear warm-up (``"onecycle"``: length of the rising phase).
        milestones: ``step``: epochs at which the LR is multiplied by ``gamma``; ``None`` →
            every ``step_size`` epochs, or (neither given) 50% and 75% of the run.
        step_size: ``step``: decay every this many epochs (instead of ``milestones``).
        gamma: ``step``: decay factor.
        epoch_scale: a multiplier per epoch on top of the base schedule (a recipe's LR
            policies); ``None`` → 1.

    Example:
        >>> LRSchedule("step", 0.1, epochs=30, steps_per_epoch=1, step_size=10).lr(10)
        0.01
    """

    def __init__(
        self,
        kind: str,
        base_lr: float,
        epochs: int,
        steps_per_epoch: int,
        warmup: float = 0.0,
        *,
        milestones: Sequence[int] | None = None,
        step_size: int | None = None,
        gamma: float = STEP_GAMMA,
        epoch_scale: Sequence[float] | None = None,
    ) -> None:
        self._factor = BASE_SCHEDULES.get(kind)
        if steps_per_epoch < 1:
            raise ConfigError("the training loader is empty (len(loader) == 0); give it data")
        if milestones is not None and step_size is not None:
            raise ConfigError("give either milestones or step_size for a step schedule, not both")
        if step_size is not None and step_size < 1:
            raise ConfigError(f"step_size must be >= 1 epoch, got {step_size}")
        if epoch_scale is not None and len(epoch_scale) < epochs:
            raise ConfigError(f"epoch_scale has {len(epoch_scale)} entries for {epochs} epochs")
        self.kind = kind
        self.base_lr = base_lr
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = epochs * steps_per_epoch
        self.warmup_steps = round(warmup * steps_per_epoch)
        if self.warmup_steps >= self.total_steps:
            raise ConfigError(
                f"warmup ({warmup} epochs) must be shorter than the run ({epochs} epochs)"
            )
        self.gamma = gamma
        self.milestone_epochs = _milestones(epochs, milestones, step_size)
        self.milestones = [e * steps_per_epoch for e in self.milestone_epochs]
        self.epoch_scale = None if epoch_scale is None else [float(v) for v in epoch_scale]

    @classmethod
    def from_config(
        cls,
        config: TrainConfig,
        steps_per_epoch: int,
        *,
        epochs: int | None = None,
        epoch_scale: Sequence[float] | None = None,
    ) -> LRSchedule:
        """The schedule a :class:`~prunekit.train.TrainConfig` describes.

        Args:
            config: the training config (``schedule``, ``lr``, ``warmup``, ``milestones``,
                ``step_size``, ``gamma``, ``epochs``).
            steps_per_epoch: batches per epoch.
            epochs: run length (default ``config.epochs``).
            epoch_scale: per-epoch multipliers (a recipe's LR policies).

        Returns:
            The :class:`LRSchedule`.
        """
        return cls(
            config.schedule_name,
            config.lr,
            config.num_epochs if epochs is None else epochs,
            steps_per_epoch,
            config.warmup,
            milestones=config.milestones,
            step_size=config.step_size,
            gamma=config.gamma,
            epoch_scale=epoch_scale,
        )

    def warm(self, step: int) -> float:
        """Linear warm-up multiplier at ``step`` (1 after the warm-up)."""
        return (step + 1) / self.warmup_steps if step < self.warmup_steps else 1.0

    def factor(self, step: int) -> float:
        """Multiplier of ``base_lr`` at iteration ``step`` (0-based)."""
        f = self._factor(self, step)
        if self.epoch_scale is not None:
            f *= self.epoch_scale[min(step // self.steps_per_epoch, self.epochs - 1)]
        return f

    def lr(self, step: int) -> float:
        """Learning rate at iteration ``step``."""
        return self.base_lr * self.factor(step)

    def per_epoch(self) -> list[float]:
        """The learning rate at the first iteration of every epoch (for tables)."""
        return [self.lr(e * self.steps_per_epoch) for e in range(self.epochs)]


def _milestones(epochs: int, milestones: Sequence[int] | None, step_size: int | None) -> list[int]:
    """Epochs at which a ``step`` schedule decays."""
    if milestones is not None:
        return sorted(int(m) for m in milestones)
    if step_size is not None:
        return list(range(step_size, epochs, step_size))
    # On epoch boundaries, as in the reference (decay at epochs 80 and 120 of 160); int()
    # keeps them integral for odd epoch counts.
    return [int(epochs * f) for f in STEP_MILESTONES]


@BASE_SCHEDULES.register("constant")
def _constant(s: LRSchedule, step: int) -> float:
    """The base LR throughout (after the warm-up)."""
    return s.warm(step)


@BASE_SCHEDULES.register("step")
def _step(s: LRSchedule, step: int) -> float:
    """×gamma at each milestone (Network Slimming's 50%/75% by default)."""
    return s.warm(step) * s.gamma ** sum(step >= m for m in s.milestones)


@BASE_SCHEDULES.register("cosine")
def _cosine(s: LRSchedule, step: int) -> float:
    """Cosine decay to 0 after the warm-up (Loshchilov & Hutter 2017, SGDR without restarts)."""
    span = max(s.total_steps - s.warmup_steps, 1)
    return s.warm(step) * _cos_interp(1.0, 0.0, (step - s.warmup_steps) / span)


@BASE_SCHEDULES.register("onecycle")
def _onecycle(s: LRSchedule, step: int) -> float:
    """One-cycle (Smith & Topping 2019): cosine rise over ``warmup`` (default 30%), then fall."""
    rise = s.warmup_steps or max(round(ONECYCLE_DEFAULT_PCT * s.total_steps), 1)
    start = 1.0 / ONECYCLE_DIV
    end = start / ONECYCLE_FINAL_DIV
    if step < rise:
        return _cos_interp(start, 1.0, step / rise)
    fall = max(s.total_steps - 1 - rise, 1)
    return _cos_interp(1.0, end, (step - rise) / fall)
