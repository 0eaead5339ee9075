"""A recipe's learning rate: the library's one schedule plus the recipe's LR policies.

The base schedule is :class:`prunekit.train.LRSchedule` built from the recipe's ``training``
section (a :class:`~prunekit.train.TrainConfig`), exactly as ``prunekit train`` builds it. Each
named ``lr_schedules`` entry is a torch scheduler stepped at the end of the epochs its policy makes
active (Distiller's ``lr_schedulers``); their combined effect is recorded once as a per-epoch
multiplier (``epoch_scale``) on a stand-in optimizer with LR 1, so the printed table and the run
read the same numbers and a resumed run needs no scheduler state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch

from prunekit.recipes.native import Recipe
from prunekit.train.lr_schedule import LRSchedule

if TYPE_CHECKING:  # resolve imports this module
    from prunekit.recipes.resolve import ResolvedRecipe


def base_schedule_name(recipe: Recipe) -> str:
    """The effective base schedule: ``training.schedule``; unset, ``step`` (as for
    ``prunekit train``), or ``constant`` when ``lr_schedule`` policies drive the LR (as
    Distiller's ``lr_schedulers`` do)."""
    if recipe.training.schedule is not None:
        return recipe.training.schedule
    return "constant" if any(p.kind == "lr_schedule" for p in recipe.policies) else "step"


def policy_scale(
    recipe: Recipe, epochs: int, active: Mapping[str, Sequence[int]]
) -> list[float] | None:
    """Per-epoch LR multiplier of the recipe's named LR schedules (``None``: there are none).

    Args:
        recipe: the recipe (its ``lr_schedules``).
        epochs: run length.
        active: schedule name → epochs at whose end it steps.

    Returns:
        One multiplier per epoch (the LR at the epoch's start over the base LR).
    """
    if not active:
        return None
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    configs = {name: recipe.lr_schedules[name] for name in active}
    # Torch schedulers only for the active-counting ones (they chain multiplicatively, as
    # several torch schedulers on one optimizer do); absolute counting is a closed form.
    named = {n: c.scheduler(opt) for n, c in configs.items() if c.counting == "active"}
    steps = {name: set(es) for name, es in active.items()}
    scale: list[float] = []
    for epoch in range(epochs):
        scale.append(float(opt.param_groups[0]["lr"]))
        # A no-op step first keeps torch from warning that a scheduler ran before the optimizer;
        # the parameter has no gradient, so nothing changes.
        opt.step()
        for name, cfg in configs.items():
            if epoch not in steps[name]:
                continue
            if cfg.counting == "absolute":  # Distiller: step(epoch=current_epoch + 1)
                for group in opt.param_groups:
                    group["lr"] = cfg.factor(epoch + 1)
            else:
                named[name].step()
    return scale


def recipe_lr(
    recipe: Recipe, epochs: int, active: Mapping[str, Sequence[int]], steps_per_epoch: int
) -> LRSchedule:
    """The recipe's learning rate per iteration (what the trainer reads).

    Args:
        recipe: the recipe.
        epochs: run length.
        active: named LR schedule → the epochs whose end steps it.
        steps_per_epoch: batches per epoch.

    Returns:
        An :class:`~prunekit.train.LRSchedule`.

    Example:
        >>> recipe_lr(recipe, 30, {"decay": [0, 1, 2]}, steps_per_epoch=391).lr(0)
    """
    training = recipe.training.model_copy(update={"schedule": base_schedule_name(recipe)})
    scale = policy_scale(recipe, epochs, active)
    return LRSchedule.from_config(training, steps_per_epoch, epochs=epochs, epoch_scale=scale)


def active_lr_epochs(resolved: ResolvedRecipe) -> dict[str, list[int]]:
    """Named LR schedule → the epochs whose end steps it (from the resolved plan)."""
    found = {
        n: [p.epoch for p in resolved.epochs if n in p.lr_step] for n in resolved.recipe.lr_schedules
    }
    return {n: es for n, es in found.items() if es}


def resolved_lr(resolved: ResolvedRecipe, steps_per_epoch: int) -> LRSchedule:
    """:func:`recipe_lr` of a resolved recipe (its epochs and LR policy steps)."""
    return recipe_lr(
        resolved.recipe, resolved.num_epochs, active_lr_epochs(resolved), steps_per_epoch
    )
