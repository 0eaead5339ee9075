"""Resolve a recipe against a model: which pruners act at which epoch with what target, which
regularizers are active, and the LR of every epoch.

Pure bookkeeping (no training): the executor follows the :class:`ResolvedRecipe` it gets from
here, and ``prunekit recipe check`` prints it.

Example:
    >>> resolved = resolve(load_recipe("examples/recipes/resnet18_l1_filters_agp.yaml"),
    ...                    build_model("torchvision:resnet18"))
    >>> print(resolved.to_table())
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from prunekit._fileio import atomic_write_text
from prunekit.errors import ConfigError
from prunekit.recipes import _targets
from prunekit.recipes.lr import recipe_lr
from prunekit.recipes.native import (
    Policy,
    PrunerConfig,
    Recipe,
)
from prunekit.schedules import SCHEDULES


@dataclass(frozen=True)
class PruneAction:
    """One pruning event.

    Attributes:
        pruner: the pruner's name in the recipe.
        method: ``magnitude`` | ``std_threshold`` | ``structured`` | ``slim``.
        sparsity: fraction to prune at this event (None for threshold-based pruning).
        per_param: parameter → value for per-tensor targets; ``quantity`` says what it is.
        quantity: ``sparsity`` | ``threshold`` (absolute |w|, or a structure's mean/max |w|) |
            ``sensitivity`` (× std) | ``random_level`` (drawn from ``level_range``).
        step: 1-based index of this event within its policy; ``steps`` events in all.
        policy: index of the policy this event belongs to (its ``masking`` applies).
        level_range: ``[low, high]`` for ``random_level`` events.
    """

    pruner: str
    method: str
    sparsity: float | None
    per_param: dict[str, float]
    quantity: str
    step: int
    steps: int
    policy: int = -1
    level_range: tuple[float, float] | None = None


@dataclass
class EpochPlan:
    """What happens in one epoch: pruning at its start, regularizers during it, its LR."""

    epoch: int
    lr: float
    prune: list[PruneAction] = field(default_factory=list)
    regularize: list[str] = field(default_factory=list)
    lr_step: list[str] = field(default_factory=list)  # named LR schedules stepped at its end
    thinning: bool = False  # Distiller-style thinning after this epoch's pruning


@dataclass
class ResolvedRecipe:
    """A recipe laid out epoch by epoch for one model.

    Attributes:
        recipe: the source recipe.
        epochs: one :class:`EpochPlan` per training epoch.
        targets: pruner / regularizer name → the model parameters it acts on.
        strengths: regularizer name → parameter → λ.
        epochs_source: how the epoch count was chosen (``recipe``, ``override``, ``derived``).
        warnings: things that are legal but probably unintended.
    """

    recipe: Recipe
    epochs: list[EpochPlan]
    targets: dict[str, list[str]]
    strengths: dict[str, dict[str, float]]
    epochs_source: str
    warnings: list[str] = field(default_factory=list)

    @property
    def num_epochs(self) -> int:
        """Number of training epochs."""
        return len(self.epochs)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON-ready)."""
        return {
            "recipe": self.recipe.model_dump(mode="json"),
            "num_epochs": self.num_epochs,
            "epochs_source": self.epochs_source,
            "targets": self.targets,
            "strengths": self.strengths,
            "epochs": [asdict(e) for e in self.epochs],
            "warnings": self.warnings,
        }

    def to_json(self, indent: int | None = 2) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=indent)

    def save_json(self, path: str | Path) -> None:
        """Write :meth:`to_json` atomically (temp file in the same folder, then replace)."""
        atomic_write_text(path, self.to_json())

    def to_table(self) -> str:
        """Human-readable plan: items, their targets, then one row per epoch."""
        from prunekit.recipes._table import render

        return render(self)


# ---------------------------------------------------------------------------------------------
# policies → epochs, sparsity schedules
# ---------------------------------------------------------------------------------------------


def policy_epochs(policy: Policy, num_epochs: int) -> list[int]:
    """All epochs at which ``policy`` is active, before truncation to the run's length.

    ``ending_epoch`` is exclusive (Distiller: ``range(start, end, frequency)``); None means
    the end of training.
    """
    if policy.epochs is not None:
        return sorted(set(policy.epochs))
    start = policy.starting_epoch or 0
    end = policy.ending_epoch if policy.ending_epoch is not None else num_epochs
    return list(range(start, end, policy.frequency or 1))


def _level(schedule: str, k: int, epochs: Sequence[int], lo: float, hi: float) -> float:
    """Target of the k-th (0-based) pruning event of a policy active at ``epochs``, by the
    schedule kind's rule (:data:`prunekit.schedules.SCHEDULES`: ``agp`` Zhu & Gupta 2017 eq. 1,
    ``iterative`` Han et al. 2015, ``one_shot``)."""
    return SCHEDULES.get(schedule).levels(epochs, lo, hi)[k]


# ---------------------------------------------------------------------------------------------
# resolve
# ---------------------------------------------------------------------------------------------


def count_epochs(recipe: Recipe, override: int | None = None) -> tuple[int, str]:
    """Number of epochs to run and where it came from (``override``/``recipe``/``derived``).

    Derived: the largest exclusive end over all policies (``ending_epoch``, or the last listed
    epoch + 1). Distiller schedules often end LR policies at a large placeholder (e.g. 400):
    pass an explicit count then.
    """
    if override is not None:
        if override < 1:
            raise ConfigError(f"the epoch count must be >= 1, got {override}")
        return override, "override"
    if recipe.training.epochs is not None:
        return recipe.training.epochs, "recipe"
    ends = [max(p.epochs) + 1 if p.epochs is not None else p.ending_epoch for p in recipe.policies]
    ends += [e + 1 for e in recipe.thinning_epochs]  # a thinning acts in its epoch
    known = [e for e in ends if e is not None]
    if not known:
        raise ConfigError(
            f"{recipe.source.filename}: cannot tell how many epochs to run; set "
            "'training: {epochs: N}' or pass --epochs"
        )
    return max(known), "derived"


def resolve(recipe: Recipe, model: nn.Module, epochs: int | None = None) -> ResolvedRecipe:
    """Lay ``recipe`` out epoch by epoch for ``model``.

    Args:
        recipe: a validated recipe (native, or converted from Distiller).
        model: the network; parameter names are matched against it (a DataParallel
            ``module.`` prefix in a name is ignored when the plain name exists).
        epochs: run length override (None: ``training.epochs`` or derived from policies).

    Returns:
        The :class:`ResolvedRecipe`.

    Raises:
        ConfigError: a name that matches nothing in the model (with close matches), or an AGP
            policy with fewer than two pruning epochs.
    """
    num_epochs, how = count_epochs(recipe, epochs)
    universe = _targets.Universe.of(model)
    targets: dict[str, list[str]] = {}
    per_param: dict[str, dict[str, float]] = {}
    for name, pruner in recipe.pruners.items():
        targets[name], per_param[name] = _targets.pruner_targets(recipe, name, pruner, universe)
    strengths: dict[str, dict[str, float]] = {}
    for name, reg in recipe.regularizers.items():
        strengths[name] = _targets.regularizer_strengths(recipe, name, reg, universe)
        targets[name] = sorted(strengths[name])
    warnings: list[str] = list(recipe.notes)
    active = _active_epochs(recipe, num_epochs, warnings)
    lr_active = {n: sorted({e for _, es in active[n] for e in es}) for n in recipe.lr_schedules}
    lr_active = {n: es for n, es in lr_active.items() if es}
    # One step per epoch stands in for the batches: for 'onecycle' the printed value is the
    # LR at the epoch's first batch only approximately (the run reads the per-batch table).
    lrs = recipe_lr(recipe, num_epochs, lr_active, steps_per_epoch=1).per_epoch()
    thin = set(recipe.thinning_epochs)
    plans = [EpochPlan(epoch=e, lr=lr, thinning=e in thin) for e, lr in enumerate(lrs)]
    for name, pruner in recipe.pruners.items():
        for i, full in active[name]:
            _schedule_pruner(recipe, name, pruner, i, full, per_param[name], plans)
    for name in recipe.regularizers:
        for e in sorted({e for _, es in active[name] for e in es if e < num_epochs}):
            plans[e].regularize.append(name)
    for name, es in lr_active.items():
        for e in es:
            if e < num_epochs:
                plans[e].lr_step.append(name)
    _warn_horizon(recipe, num_epochs, active, warnings)
    late = [e for e in recipe.thinning_epochs if e >= num_epochs]
    if late:
        warnings.append(
            f"{recipe.source.filename}: thinning at epoch {late[0]} comes after the run's "
            f"{num_epochs} epochs; what is pruned after the last thinning in the run stays "
            "zeroed, not sliced"
        )
    return ResolvedRecipe(recipe, plans, targets, strengths, how, warnings)


def _active_epochs(
    recipe: Recipe, num_epochs: int, warnings: list[str]
) -> dict[str, list[tuple[int, list[int]]]]:
    """Item name → [(policy index, its full epoch list)], warning on unused items."""
    active: dict[str, list[tuple[int, list[int]]]] = {
        n: [] for n in (*recipe.pruners, *recipe.regularizers, *recipe.lr_schedules)
    }
    for i, policy in enumerate(recipe.policies):
        active[policy.target].append((i, policy_epochs(policy, num_epochs)))
    for name, uses in active.items():
        if not uses:
            where = recipe.source.prefix(_item_loc(recipe, name))
            warnings.append(f"{where}{name!r} is defined but no policy uses it")
    return active


def _item_loc(recipe: Recipe, name: str) -> tuple[str, str]:
    for section in ("pruners", "regularizers", "lr_schedules"):
        if name in getattr(recipe, section):
            return section, name
    return ("policies", name)  # pragma: no cover - names always come from a section


def _schedule_pruner(
    recipe: Recipe,
    name: str,
    pruner: PrunerConfig,
    policy_index: int,
    full: list[int],
    per_param_final: dict[str, float],
    plans: list[EpochPlan],
) -> None:
    """Add this pruner's events for one policy to ``plans``."""
    schedule = getattr(pruner, "schedule", "one_shot")
    need = SCHEDULES.get(schedule).min_events
    if len(full) < need:
        raise recipe.source.error(
            ("policies", policy_index),
            f"policy #{policy_index + 1}: pruner {name!r} uses schedule {schedule!r}, which needs "
            f"at least {need} pruning epochs (got {full}); widen the epoch range or use one_shot",
        )
    quantity = pruner.quantity
    rng = pruner.sparsity_range()
    policy = recipe.policies[policy_index]
    span = _span(policy, full, len(plans))
    for k, epoch in enumerate(full):
        if epoch >= len(plans):
            break
        sparsity = _level(schedule, k, full, *rng) if rng is not None else None
        params = per_param_final
        if quantity == "sparsity" and params:
            lo = rng[0] if rng is not None else 0.0
            params = {p: _level(schedule, k, full, min(lo, v), v) for p, v in params.items()}
        params = pruner.event_values(epoch, span, params)
        level_range = pruner.level_bounds()
        plans[epoch].prune.append(
            PruneAction(
                name,
                pruner.method,
                sparsity,
                dict(params),
                quantity,
                k + 1,
                len(full),
                policy_index,
                level_range,
            )
        )


def _span(policy: Policy, full: list[int], num_epochs: int) -> tuple[int, int, int]:
    """(starting epoch, exclusive ending epoch, frequency) of a policy, as Distiller's pruners
    see them (an ``epochs`` list spans its first to one past its last epoch)."""
    if policy.epochs is not None:
        return full[0], full[-1] + 1, 1
    end = policy.ending_epoch if policy.ending_epoch is not None else num_epochs
    return policy.starting_epoch or 0, end, policy.frequency or 1


def _warn_horizon(
    recipe: Recipe,
    num_epochs: int,
    active: dict[str, list[tuple[int, list[int]]]],
    warnings: list[str],
) -> None:
    for uses in active.values():
        for i, full in uses:
            where = recipe.source.prefix(("policies", i))
            if full and full[0] >= num_epochs:
                warnings.append(
                    f"{where}policy #{i + 1} starts at epoch {full[0]} but the run has only "
                    f"{num_epochs} epochs; it never acts"
                )
            elif full and full[-1] >= num_epochs and recipe.policies[i].kind == "pruner":
                warnings.append(
                    f"{where}policy #{i + 1} prunes until epoch {full[-1]} but the run stops "
                    f"after epoch {num_epochs - 1}; the final sparsity is not reached"
                )


__all__ = [
    "EpochPlan",
    "PruneAction",
    "ResolvedRecipe",
    "count_epochs",
    "policy_epochs",
    "resolve",
]
