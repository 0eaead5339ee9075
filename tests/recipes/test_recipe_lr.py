"""The recipe LR table the trainer reads equals stepping the torch schedulers batch by batch."""

from __future__ import annotations

import pytest
from torch import nn

from prunekit.recipes import Recipe, resolve
from prunekit.recipes.lr import RecipeLR, _active, _record

STEPS = 7


@pytest.mark.parametrize(
    "training",
    [
        {"schedule": "cosine"},
        {"schedule": "step", "step_size": 2, "gamma": 0.5},
        {"schedule": "onecycle"},
        {"schedule": "constant"},
        {},  # None + an lr_schedule policy: constant base, the named schedule drives
    ],
    ids=["cosine", "step", "onecycle", "constant", "named"],
)
def test_table_equals_per_batch_scheduler_steps(training: dict) -> None:
    spec: dict = {"training": {"epochs": 6, "lr": 0.1, **training}}
    if not training:  # a base schedule and lr_schedule policies are exclusive
        spec["lr_schedules"] = {"decay": {"kind": "exponential", "gamma": 0.8}}
        spec["policies"] = [{"lr_schedule": "decay", "starting_epoch": 2, "ending_epoch": 5}]
    recipe = Recipe.model_validate(spec)
    resolved = resolve(recipe, nn.Linear(2, 2))
    table = RecipeLR(recipe, resolved, steps_per_epoch=STEPS)
    per_batch = _record(recipe, resolved.num_epochs, _active(recipe, resolved), STEPS)
    assert table.total_steps == len(per_batch) == 6 * STEPS
    assert [table.lr(i) for i in range(table.total_steps)] == pytest.approx(per_batch, rel=1e-12)
