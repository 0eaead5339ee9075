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
        ({"kind": "linear"}, "unknown schedule 'linear'"),
        ({"warmup": 5}, "warmup"),
        ({"steps_per_epoch": 0}, "empty"),
    ],
)
def test_bad_schedule_arguments(kwargs: dict, match: str) -> None:
    args = {"kind": "step", "base_lr": 0.1, "epochs": 5, "steps_per_epoch": 3, **kwargs}
    with pytest.raises(ConfigError, match=match):
        LRSchedule(**args)
