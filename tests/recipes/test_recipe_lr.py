"""A recipe's LR is the library's one LRSchedule (from its training section) times its policies."""

from __future__ import annotations

import pytest
from torch import nn

from prunekit.recipes import Recipe, resolve
from prunekit.recipes.lr import base_schedule_name, resolved_lr
from prunekit.train import LRSchedule, TrainConfig

STEPS = 7


@pytest.mark.parametrize(
    "training",
    [
        {"schedule": "cosine"},
        {"schedule": "step", "step_size": 2, "gamma": 0.5},
        {"schedule": "step", "milestones": [1, 4]},
        {"schedule": "step"},
        {"schedule": "onecycle", "warmup": 1.5},
        {"schedule": "constant"},
        {},
    ],
    ids=["cosine", "step-size", "milestones", "step-default", "onecycle", "constant", "default"],
)
def test_recipe_lr_is_the_training_config_schedule(training: dict) -> None:
    recipe = Recipe.model_validate({"training": {"epochs": 6, "lr": 0.1, **training}})
    table = resolved_lr(resolve(recipe, nn.Linear(2, 2)), steps_per_epoch=STEPS)
    same = LRSchedule.from_config(TrainConfig(epochs=6, lr=0.1, **training), STEPS)
    assert table.total_steps == same.total_steps == 6 * STEPS
    assert [table.lr(i) for i in range(table.total_steps)] == [
        same.lr(i) for i in range(same.total_steps)
    ]


def test_default_base_schedule_is_step_and_constant_under_lr_policies() -> None:
    plain = Recipe.model_validate({"training": {"epochs": 8}})
    assert base_schedule_name(plain) == "step"
    assert resolved_lr(resolve(plain, nn.Linear(2, 2)), 1).per_epoch() == pytest.approx(
        [0.1] * 4 + [0.01] * 2 + [0.001] * 2
    )


def test_named_policy_steps_at_the_end_of_its_active_epochs() -> None:
    recipe = Recipe.model_validate(
        {
            "training": {"epochs": 6, "lr": 0.1},
            "lr_schedules": {"decay": {"kind": "exponential", "gamma": 0.8}},
            "policies": [{"lr_schedule": "decay", "starting_epoch": 2, "ending_epoch": 5}],
        }
    )
    resolved = resolve(recipe, nn.Linear(2, 2))
    table = resolved_lr(resolved, steps_per_epoch=STEPS)
    expected = [0.1, 0.1, 0.1, 0.08, 0.064, 0.0512]
    assert [table.lr(e * STEPS) for e in range(6)] == pytest.approx(expected, rel=1e-12)
    assert [table.lr(e * STEPS + STEPS - 1) for e in range(6)] == pytest.approx(expected)
    assert [p.lr for p in resolved.epochs] == pytest.approx(expected)  # the printed plan
