"""Issue 11's done-when: ``prunekit train``, a native recipe and ``prunekit slim`` give the same
LR table for the same settings — the one :class:`~prunekit.train.LRSchedule` behind all three."""

from __future__ import annotations

import pytest
from torch import nn

from prunekit.cli import build_parser
from prunekit.cli import slim as slim_cli
from prunekit.cli import train as train_cli
from prunekit.recipes import Recipe, resolve
from prunekit.recipes.lr import resolved_lr
from prunekit.train import LRSchedule

STEPS = 5  # steps per epoch


def _table(schedule: LRSchedule) -> list[float]:
    return [schedule.lr(i) for i in range(schedule.total_steps)]


@pytest.mark.parametrize("schedule", [None, "step", "cosine", "onecycle", "constant"])
@pytest.mark.parametrize("epochs", [7, 30])
def test_train_recipe_and_slim_share_one_lr_table(schedule: str | None, epochs: int) -> None:
    flags = ["--epochs", str(epochs), "--lr", "0.05"]
    flags += [] if schedule is None else ["--schedule", schedule]
    parser = build_parser()
    train = train_cli._config(
        parser.parse_args(["train", "--model", "m", "--data", "d", "--out", "o", *flags])
    )
    slim = slim_cli._config(
        parser.parse_args(["slim", "--model", "m", "--data", "d", "--out", "o", *flags])
    )
    training = {
        "epochs": epochs,
        "lr": 0.05,
        **({} if schedule is None else {"schedule": schedule}),
    }
    recipe = resolved_lr(
        resolve(Recipe.model_validate({"training": training}), nn.Linear(2, 2)), STEPS
    )

    want = _table(LRSchedule.from_config(train, STEPS))
    assert _table(recipe) == want
    assert _table(LRSchedule.from_config(slim.train_config(epochs, 0.05), STEPS)) == want
    if schedule in (None, "step"):  # the documented step default: ×0.1 at 50% and 75%
        per_epoch = want[::STEPS]
        assert per_epoch[epochs // 2 - 1] == pytest.approx(0.05)
        assert per_epoch[epochs // 2 + 1] == pytest.approx(0.005)
        assert per_epoch[-1] == pytest.approx(0.0005)
