"""Learning-rate driving shared by the resolved plan and the executor.

The same object computes the printed per-epoch LR (on a dummy optimizer) and drives the real
optimizer, so the table and the run cannot disagree. The base ``training.schedule`` steps every
epoch (``onecycle`` every batch); each named ``lr_schedules`` entry steps at the end of the
epochs its policy makes active — Distiller's semantics for ``lr_schedulers``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch.optim import Optimizer
from torch.optim import lr_scheduler as sched

from prunekit.errors import ConfigError
from prunekit.recipes.native import (
    CosineLRSchedule,
    ExponentialLRSchedule,
    LRScheduleConfig,
    MultiStepGammasLRSchedule,
    MultiStepLRSchedule,
    PolynomialLRSchedule,
    Recipe,
    StepLRSchedule,
    TrainingSection,
)

if TYPE_CHECKING:  # resolve imports this module
    from prunekit.recipes.resolve import ResolvedRecipe


def _named_scheduler(opt: Optimizer, cfg: LRScheduleConfig) -> sched.LRScheduler:
    if isinstance(cfg, StepLRSchedule):
        return sched.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma)
    if isinstance(cfg, MultiStepLRSchedule):
        return sched.MultiStepLR(opt, milestones=cfg.milestones, gamma=cfg.gamma)
    if isinstance(cfg, ExponentialLRSchedule):
        return sched.ExponentialLR(opt, gamma=cfg.gamma)
    if isinstance(cfg, CosineLRSchedule):
        return sched.CosineAnnealingLR(opt, T_max=cfg.t_max, eta_min=cfg.eta_min)
    if isinstance(cfg, PolynomialLRSchedule):
        return sched.PolynomialLR(opt, total_iters=cfg.total_iters, power=cfg.power)
    if isinstance(cfg, MultiStepGammasLRSchedule):
        # Distiller's MultiStepMultiGammaLR: base · Π gammas[:k], k = milestones reached so far.
        miles, gammas = list(cfg.milestones), list(cfg.gammas)
        return sched.LambdaLR(opt, lambda t: math.prod(gammas[: bisect.bisect_right(miles, t)]))
    raise TypeError(f"unknown lr schedule config {type(cfg).__name__}")  # pragma: no cover


def base_schedule_name(recipe: Recipe) -> str:
    """The effective ``training.schedule``: None means cosine, or constant when the recipe has
    ``lr_schedule`` policies (they drive the LR, as Distiller's ``lr_schedulers`` do)."""
    if recipe.training.schedule is not None:
        return recipe.training.schedule
    return "constant" if any(p.kind == "lr_schedule" for p in recipe.policies) else "cosine"


class LRDriver:
    """Steps the base schedule and the policy-driven named schedules of one optimizer.

    Args:
        optimizer: the optimizer whose ``lr`` is driven (its current lr is the base lr).
        recipe: the recipe (its ``training`` section and ``lr_schedules``).
        epochs: total epochs of the run.
        active: schedule name → epochs at which its policy is active.
        steps_per_epoch: batches per epoch (only ``onecycle`` uses it).

    Example:
        >>> driver = LRDriver(opt, recipe, 30, {"decay": [0, 1, 2]})
        >>> driver.epoch_end(0)
    """

    def __init__(
        self,
        optimizer: Optimizer,
        recipe: Recipe,
        epochs: int,
        active: Mapping[str, Sequence[int]],
        steps_per_epoch: int = 1,
    ) -> None:
        self.optimizer = optimizer
        self.kind = base_schedule_name(recipe)
        self.base = self._base(optimizer, recipe.training, epochs, steps_per_epoch)
        named = recipe.lr_schedules
        self.named = {name: _named_scheduler(optimizer, named[name]) for name in active}
        self.active = {name: set(epochs_) for name, epochs_ in active.items()}
        self.steps_per_epoch = steps_per_epoch

    def _base(
        self, opt: Optimizer, training: TrainingSection, epochs: int, steps: int
    ) -> sched.LRScheduler | None:
        if self.kind == "cosine":
            return sched.CosineAnnealingLR(opt, T_max=max(1, epochs))
        if self.kind == "onecycle":
            return sched.OneCycleLR(opt, max_lr=training.lr, total_steps=max(2, epochs * steps))
        if self.kind == "step":
            if training.milestones is not None:
                return sched.MultiStepLR(opt, training.milestones, gamma=training.gamma)
            step = training.step_size or max(1, epochs // 3)
            return sched.StepLR(opt, step_size=step, gamma=training.gamma)
        return None

    @property
    def lr(self) -> float:
        """The optimizer's current learning rate (first param group)."""
        return float(self.optimizer.param_groups[0]["lr"])

    def batch_end(self) -> None:
        """Call after every optimizer step (drives ``onecycle``)."""
        if self.kind == "onecycle" and self.base is not None:
            total = getattr(self.base, "total_steps", None)
            if total is None or self.base.last_epoch + 1 < total:
                self.base.step()

    def epoch_end(self, epoch: int) -> None:
        """Call after epoch ``epoch`` finished."""
        if self.base is not None and self.kind != "onecycle":
            self.base.step()
        for name, scheduler in self.named.items():
            if epoch in self.active[name]:
                scheduler.step()


class RecipeLR:
    """A recipe run's learning rate per iteration, as a table (what the trainer reads).

    The table is recorded by stepping an :class:`LRDriver` on a stand-in optimizer through the
    whole run, so the LR is a pure function of the iteration: a resumed run needs no scheduler
    state and lands on exactly the same values. Only ``onecycle`` changes the LR within an
    epoch, so every other schedule is recorded once per epoch (a long run's table costs
    milliseconds, not seconds, at start-up).

    Args:
        recipe: the recipe.
        resolved: its resolved plan (epochs, and which named schedules step when).
        steps_per_epoch: batches per epoch.

    Example:
        >>> RecipeLR(recipe, resolved, steps_per_epoch=391).lr(0)
    """

    def __init__(self, recipe: Recipe, resolved: ResolvedRecipe, steps_per_epoch: int) -> None:
        if steps_per_epoch < 1:
            raise ConfigError("the training data is empty (0 batches per epoch); give it data")
        per_batch = base_schedule_name(recipe) == "onecycle"
        self.steps_per_table_entry = 1 if per_batch else steps_per_epoch
        self.table = _record(
            recipe,
            resolved.num_epochs,
            _active(recipe, resolved),
            steps_per_epoch if per_batch else 1,
        )
        self.total_steps = resolved.num_epochs * steps_per_epoch

    def lr(self, step: int) -> float:
        """Learning rate at iteration ``step`` (0-based)."""
        return self.table[step // self.steps_per_table_entry]


def _active(recipe: Recipe, resolved: ResolvedRecipe) -> dict[str, list[int]]:
    """Named LR schedule → the epochs whose end steps it (from the resolved plan)."""
    found = {n: [p.epoch for p in resolved.epochs if n in p.lr_step] for n in recipe.lr_schedules}
    return {n: es for n, es in found.items() if es}


def _record(
    recipe: Recipe, epochs: int, active: Mapping[str, Sequence[int]], steps_per_epoch: int
) -> list[float]:
    """LR of every iteration: the optimizer's LR before each step, with the real schedulers."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=recipe.training.lr)
    driver = LRDriver(opt, recipe, epochs, active, steps_per_epoch)
    table: list[float] = []
    for epoch in range(epochs):
        for _ in range(steps_per_epoch):
            table.append(driver.lr)
            # A no-op step first keeps torch from warning that the scheduler ran before the
            # optimizer; the parameter has no gradient so nothing changes.
            opt.step()
            driver.batch_end()
        driver.epoch_end(epoch)
    return table


def simulate_lr(recipe: Recipe, epochs: int, active: Mapping[str, Sequence[int]]) -> list[float]:
    """LR at the start of each epoch, computed with the real torch schedulers.

    For ``onecycle`` one step per epoch stands in for the batches: the printed value is the LR
    at the epoch's first batch only approximately (the run itself uses :class:`RecipeLR`).
    """
    return _record(recipe, epochs, active, steps_per_epoch=1)
