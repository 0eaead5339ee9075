"""Declarative pruning recipes: prunekit's native YAML format and Intel Distiller schedules.

* :func:`load_recipe` reads either format into a typed :class:`Recipe` (errors name the file,
  the line and the fix);
* :func:`resolve` lays a recipe out epoch by epoch for a model (:class:`ResolvedRecipe`, with
  ``to_table()`` and ``to_json()``);
* :class:`Executor` runs it (training with the scheduled pruners and regularizers).

Example:
    >>> from prunekit.models import build_model
    >>> recipe = load_recipe("examples/recipes/distiller/resnet18_agp_fine.yaml")
    >>> print(resolve(recipe, build_model("torchvision:resnet18"), epochs=10).to_table())
"""

from __future__ import annotations

from prunekit.recipes.distiller import load_distiller
from prunekit.recipes.executor import Executor, RunResult
from prunekit.recipes.loader import load_recipe
from prunekit.recipes.native import Policy, Recipe, load_native
from prunekit.recipes.resolve import (
    EpochPlan,
    PruneAction,
    ResolvedRecipe,
    policy_epochs,
    resolve,
)

__all__ = [
    "EpochPlan",
    "Executor",
    "Policy",
    "PruneAction",
    "Recipe",
    "ResolvedRecipe",
    "RunResult",
    "load_distiller",
    "load_native",
    "load_recipe",
    "policy_epochs",
    "resolve",
]
