"""Plain-text rendering of a :class:`~prunekit.recipes.resolve.ResolvedRecipe`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prunekit.recipes.lr import base_schedule_name
from prunekit.recipes.native import (
    PrunerConfig,
)

if TYPE_CHECKING:
    from prunekit.recipes.resolve import PruneAction, ResolvedRecipe


def _names(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    more = f", … (+{len(names) - limit})" if len(names) > limit else ""
    return f"{len(names)} tensor{'s' if len(names) != 1 else ''}: {shown}{more}"


def _pruner_line(name: str, pruner: PrunerConfig, targets: list[str]) -> str:
    return f"  {name:<14} {pruner.describe()}; {_names(targets)}"


def _action(a: PruneAction) -> str:
    if a.quantity == "random_level" and a.level_range is not None:
        return f"{a.pruner} {a.level_range[0]:.0%}–{a.level_range[1]:.0%}?"
    if a.quantity == "sparsity" and not a.per_param:
        return f"{a.pruner} {a.sparsity:.1%}"
    values = sorted(a.per_param.values())
    lo, hi = values[0], values[-1]
    if a.quantity == "sparsity":
        span = f"{lo:.1%}" if lo == hi else f"{lo:.1%}–{hi:.1%}"
    elif a.quantity == "sensitivity":
        span = f"{lo:g}·std" if lo == hi else f"{lo:g}–{hi:g}·std"
    else:
        span = f"|w|<{lo:g}" if lo == hi else f"|w|<{lo:g}–{hi:g}"
    return f"{a.pruner} {span}"


def _header(r: ResolvedRecipe) -> list[str]:
    recipe, source = r.recipe, r.recipe.source
    title = recipe.name or source.filename
    base = base_schedule_name(recipe)
    how = {
        "recipe": "from the recipe",
        "override": "override",
        "derived": "derived from the policies; set training.epochs or --epochs to change",
    }[r.epochs_source]
    lines = [
        f"recipe: {title} ({source.format} format)",
        f"epochs: {r.num_epochs} ({how}); base lr {recipe.training.lr:g}, schedule {base}",
    ]
    if recipe.pruners:
        lines.append("pruners:")
        lines += [_pruner_line(n, p, r.targets[n]) for n, p in recipe.pruners.items()]
    if recipe.regularizers:
        lines.append("regularizers:")
        for name, reg in recipe.regularizers.items():
            strengths = sorted(set(r.strengths[name].values()))
            lam = (
                f"λ={strengths[0]:g}"
                if len(strengths) == 1
                else f"λ∈[{strengths[0]:g}, {strengths[-1]:g}]"
            )
            lines.append(f"  {name:<14} {reg.kind} {lam}; {_names(r.targets[name])}")
    if recipe.lr_schedules:
        lines.append("lr schedules:")
        for name, cfg in recipe.lr_schedules.items():
            args = ", ".join(f"{k}={v}" for k, v in cfg.model_dump().items() if k != "kind")
            lines.append(f"  {name:<14} {cfg.kind}({args})")
    if recipe.distillation is not None:
        d = recipe.distillation
        lines.append(f"distillation: teacher={d.teacher} T={d.temperature:g} alpha={d.alpha:g}")
    return lines


def render(r: ResolvedRecipe) -> str:
    """The resolved recipe as text: header, items, one row per epoch, warnings."""
    lines = _header(r)
    lines.append(f"{'epoch':>5}  {'lr':>11}  {'prune (start of epoch)':<40}  regularize")
    for plan in r.epochs:
        prune = ", ".join(_action(a) for a in plan.prune) or "-"
        if plan.thinning:
            prune += " + thinning"
        reg = ", ".join(plan.regularize) or "-"
        lines.append(f"{plan.epoch:>5}  {plan.lr:>11.5g}  {prune:<40}  {reg}")
    if r.warnings:
        lines.append("warnings:")
        lines += [f"  {w}" for w in r.warnings]
    return "\n".join(lines)
