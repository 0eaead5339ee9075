"""LR schedules: Network Slimming step decay, one-cycle, cosine, warm-up."""

from __future__ import annotations

import itertools
import math

import pytest

from prunekit.errors import ConfigError
from prunekit.train import LRSchedule


def test_step_decays_at_half_and_three_quarters() -> None:
    s = LRSchedule("step", base_lr=0.1, epochs=160, steps_per_epoch=10)
    assert s.lr(0) == pytest.approx(0.1)
    assert s.lr(80 * 10 - 1) == pytest.approx(0.1)
    assert s.lr(80 * 10) == pytest.approx(0.01)
    assert s.lr(120 * 10 - 1) == pytest.approx(0.01)
    assert s.lr(120 * 10) == pytest.approx(0.001)
    assert s.lr(160 * 10 - 1) == pytest.approx(0.001)
    values = {round(s.lr(i), 12) for i in range(s.total_steps)}
    assert values == {0.1, 0.01, 0.001}


def test_step_milestones_fall_on_epoch_boundaries_for_odd_epochs() -> None:
    s = LRSchedule("step", base_lr=1.0, epochs=3, steps_per_epoch=4)
    assert [s.lr(i) for i in range(12)] == pytest.approx([1.0] * 4 + [0.1] * 4 + [0.01] * 4)


def test_onecycle_shape() -> None:
    s = LRSchedule("onecycle", base_lr=0.4, epochs=10, steps_per_epoch=10)
    lrs = [s.lr(i) for i in range(s.total_steps)]
    peak = max(range(len(lrs)), key=lrs.__getitem__)
    assert peak == 30  # 30% of 100 steps
    assert lrs[0] == pytest.approx(0.4 / 25)
    assert lrs[peak] == pytest.approx(0.4)
    assert lrs[-1] == pytest.approx(0.4 / 25 / 1e4)
    assert all(a < b for a, b in itertools.pairwise(lrs[: peak + 1]))  # strictly rising
    assert all(a > b for a, b in itertools.pairwise(lrs[peak:]))  # strictly falling
    # Cosine: halfway through the fall the lr is halfway between peak and end.
    mid = peak + (len(lrs) - 1 - peak) / 2
    assert s.lr(math.floor(mid)) >= (0.4 + 0.4 / 25e4) / 2 >= s.lr(math.ceil(mid))


def test_onecycle_warmup_sets_rising_phase() -> None:
    s = LRSchedule("onecycle", base_lr=1.0, epochs=10, steps_per_epoch=10, warmup=1)
    assert max(range(100), key=s.lr) == 10


def test_cosine_and_warmup() -> None:
    s = LRSchedule("cosine", base_lr=1.0, epochs=10, steps_per_epoch=10, warmup=1)
    assert [s.lr(i) for i in range(10)] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert s.lr(10) == pytest.approx(1.0)
    assert s.lr(55) == pytest.approx(0.5)
    assert s.lr(99) == pytest.approx(0.5 * (1 + math.cos(math.pi * 89 / 90)))


def test_constant() -> None:
    s = LRSchedule("constant", base_lr=0.3, epochs=2, steps_per_epoch=5)
    assert {s.lr(i) for i in range(10)} == {0.3}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "linear"}, "unknown lr schedule 'linear'"),
        ({"warmup": 5}, "warmup"),
        ({"steps_per_epoch": 0}, "empty"),
    ],
)
def test_bad_schedule_arguments(kwargs: dict, match: str) -> None:
    args = {"kind": "step", "base_lr": 0.1, "epochs": 5, "steps_per_epoch": 3, **kwargs}
    with pytest.raises(ConfigError, match=match):
        LRSchedule(**args)


def test_step_milestones_and_step_size() -> None:
    ms = LRSchedule("step", base_lr=1.0, epochs=6, steps_per_epoch=2, milestones=[1, 4], gamma=0.5)
    assert ms.per_epoch() == pytest.approx([1.0, 0.5, 0.5, 0.5, 0.25, 0.25])
    every = LRSchedule("step", base_lr=1.0, epochs=7, steps_per_epoch=1, step_size=3)
    assert every.per_epoch() == pytest.approx([1.0] * 3 + [0.1] * 3 + [0.01])


def test_epoch_scale_multiplies_the_base() -> None:
    s = LRSchedule("constant", 0.2, epochs=3, steps_per_epoch=2, epoch_scale=[1.0, 0.5, 0.25])
    assert [s.lr(i) for i in range(6)] == pytest.approx([0.2, 0.2, 0.1, 0.1, 0.05, 0.05])


def test_from_config_matches_the_config() -> None:
    from prunekit.train import TrainConfig

    cfg = TrainConfig(epochs=10, lr=0.3, schedule="step", milestones=[3], gamma=0.2)
    s = LRSchedule.from_config(cfg, steps_per_epoch=4)
    assert (s.total_steps, s.milestone_epochs) == (40, [3])
    assert s.lr(11) == pytest.approx(0.3) and s.lr(12) == pytest.approx(0.06)


def test_step_options_need_a_step_schedule() -> None:
    from prunekit.train import TrainConfig

    with pytest.raises(ConfigError, match="milestones/step_size shape a 'step' schedule"):
        TrainConfig(schedule="cosine", milestones=[3])
