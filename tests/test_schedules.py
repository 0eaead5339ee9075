"""Schedules: AGP values vs hand calculations, iterative levels, schedule objects and configs."""

from __future__ import annotations

import pytest

from prunekit.errors import ConfigError
from prunekit.schedules import (
    AGPSchedule,
    IterativeSchedule,
    OneShotSchedule,
    agp_sparsity,
    iterative,
    one_shot,
    schedule_from_config,
)


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (-3, 0.0),  # before t0: initial
        (0, 0.0),  # t0: (1 - 0)^3 = 1 -> s_i
        (1, 0.0),  # holds until the next multiple of Δt=2
        (2, 0.9 - 0.9 * 0.8**3),  # 0.4392
        (3, 0.4392),
        (4, 0.9 - 0.9 * 0.6**3),  # 0.7056
        (5, 0.7056),
        (8, 0.9 - 0.9 * 0.2**3),  # 0.8928
        (10, 0.9),
        (1000, 0.9),
    ],
)
def test_agp_matches_hand_calculation(step: int, expected: float) -> None:
    got = agp_sparsity(step, initial=0.0, final=0.9, start=0, end=10, frequency=2)
    assert got == pytest.approx(expected, abs=1e-12)


def test_agp_with_offset_and_nonzero_initial() -> None:
    kw = {"initial": 0.5, "final": 0.9, "start": 2, "end": 6, "frequency": 1}
    assert agp_sparsity(4, **kw) == pytest.approx(0.9 - 0.4 * 0.5**3)  # 0.85
    assert agp_sparsity(3, **kw) == pytest.approx(0.9 - 0.4 * 0.75**3)
    # end not a multiple of Δt: last event at 4, final reached at end=5
    kw2 = {"initial": 0.0, "final": 0.8, "start": 0, "end": 5, "frequency": 2}
    assert agp_sparsity(4.9, **kw2) == pytest.approx(0.8 - 0.8 * 0.2**3)
    assert agp_sparsity(5, **kw2) == 0.8


def test_agp_is_monotone_and_validates() -> None:
    values = [agp_sparsity(t, initial=0.1, final=0.95, start=0, end=50) for t in range(60)]
    assert values == sorted(values)
    with pytest.raises(ConfigError, match="end > start"):
        agp_sparsity(0, initial=0, final=0.5, start=3, end=3)
    with pytest.raises(ConfigError, match="frequency"):
        agp_sparsity(0, initial=0, final=0.5, start=0, end=3, frequency=0)
    with pytest.raises(ConfigError, match=r"final must be a level in \[0, 1\]"):
        agp_sparsity(0, initial=0, final=1.5, start=0, end=3)


def test_one_shot() -> None:
    assert one_shot(1, level=0.9, at=2) == 0.0
    assert one_shot(2, level=0.9, at=2) == 0.9


def test_iterative_levels() -> None:
    assert iterative(0.75, 2) == pytest.approx([0.5, 0.75])
    # Han et al.-style geometric: each cycle keeps the same share of the survivors
    lv = iterative(0.9, 3)
    densities = [1 - x for x in lv]
    assert densities[0] == pytest.approx(0.1 ** (1 / 3))
    assert densities[1] / densities[0] == pytest.approx(densities[2] / densities[1])
    assert lv[-1] == 0.9
    assert iterative(0.8, 4, mode="linear", initial=0.4) == pytest.approx([0.5, 0.6, 0.7, 0.8])
    with pytest.raises(ConfigError, match="cycles"):
        iterative(0.5, 0)
    with pytest.raises(ConfigError, match="mode"):
        iterative(0.5, 2, mode="cubic")  # type: ignore[arg-type]


def test_schedule_objects() -> None:
    agp = AGPSchedule(final=0.8, start=1, end=5, frequency=2)
    assert agp.events() == [
        (1, 0.0),
        (3, pytest.approx(0.8 - 0.8 * 0.5**3)),
        (5, 0.8),
    ]
    assert [agp.should_prune(s) for s in range(7)] == [False, True, False, True, False, True, False]
    assert agp.level(4) == agp.level(3) and agp.last_step == 5

    it = IterativeSchedule(final=0.75, cycles=2, cycle_length=3, start=1)
    assert it.events() == [(1, pytest.approx(0.5)), (4, 0.75)]
    assert [it.level(s) for s in (0, 1, 3, 4, 9)] == [
        0.0,
        pytest.approx(0.5),
        pytest.approx(0.5),
        0.75,
        0.75,
    ]

    once = OneShotSchedule(target=0.9, at=2)
    assert once.events() == [(2, 0.9)] and once.level(1) == 0.0 and once.level(3) == 0.9


def test_schedule_from_config() -> None:
    s = schedule_from_config({"kind": "agp", "final": 0.9, "start": 0, "end": 4, "frequency": None})
    assert isinstance(s, AGPSchedule) and s.frequency == 1  # None means default
    assert schedule_from_config({"kind": "one_shot", "target": 0.5}).events() == [(0, 0.5)]
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['finall'\]"):
        schedule_from_config({"kind": "agp", "finall": 0.9, "start": 0, "end": 4})
    with pytest.raises(ConfigError, match="kind must be one of"):
        schedule_from_config({"kind": "cosine"})
    with pytest.raises(ConfigError, match="bad iterative schedule"):
        schedule_from_config({"kind": "iterative", "cycles": 3})  # final missing
    with pytest.raises(ConfigError, match="end > start"):
        schedule_from_config({"kind": "agp", "final": 0.9, "start": 4, "end": 4})
