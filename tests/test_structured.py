"""StructuredPruner: AGP/iterative levels, soft zeros through training, exact finalize."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from prunekit.data import TensorLoader, load_dataset
from prunekit.errors import ConfigError
from prunekit.schedules import AGPSchedule, IterativeSchedule, agp_sparsity
from prunekit.structured import StructuredPruner
from prunekit.train import TrainConfig, Trainer, evaluate
from prunekit.verify import max_rel_diff
from prunekit.zoo import build

X = torch.randn(2, 1, 8, 8)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build("digits_cnn")


def _removed_entries(pruner: StructuredPruner) -> list[torch.Tensor]:
    """Every parameter slice the current plan removes (must be all zeros)."""
    params = dict(pruner.model.named_parameters())
    return [params[n].index_select(d, i) for n, d, i in pruner._zero_index]


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_agp_levels_follow_zhu_gupta_formula() -> None:
    pruner = StructuredPruner(_model(), X, AGPSchedule(final=0.6, start=1, end=7, frequency=2))
    sizes = {g.id: g.size for g in pruner.graph.groups}
    for t in range(10):
        pruner.step(t)
        expected = agp_sparsity(t, initial=0.0, final=0.6, start=1, end=7, frequency=2)
        assert pruner.level == pytest.approx(expected)
        if expected > 0:  # local ranking: every group loses floor(level * size) units
            plan = pruner.plan
            assert plan is not None
            for gid, entry in plan.groups.items():
                assert len(entry["keep"]) == sizes[gid] - math.floor(expected * sizes[gid] + 1e-9)
    # events at 1 (level 0: nothing to do), 3, 5, 7: s_t = 0.6 - 0.6 (1 - (t - 1)/6)^3
    assert [e.step for e in pruner.history] == [3, 5, 7]
    assert [e.level for e in pruner.history] == pytest.approx(
        [0.6 - 0.6 * (2 / 3) ** 3, 0.6 - 0.6 * (1 / 3) ** 3, 0.6]
    )
    assert [e.removed_units for e in pruner.history] == sorted(
        e.removed_units for e in pruner.history
    )


def test_skipped_events_collapse_and_iterative_levels() -> None:
    sched = IterativeSchedule(final=0.75, cycles=2, cycle_length=3)
    pruner = StructuredPruner(_model(), X, sched, criterion="l2")
    assert pruner.step(5) is not None  # events 0 and 3 both due: jump to the later one
    assert pruner.level == 0.75 and len(pruner.history) == 1
    assert pruner.step(6) is None  # nothing new


def test_units_removed_once_stay_removed() -> None:
    model = _model()
    pruner = StructuredPruner(model, X, AGPSchedule(final=0.5, start=0, end=2))
    first = pruner.prune_to(0.25)
    with torch.no_grad():  # revive the zeroed filters with huge weights
        for n, d, i in pruner._zero_index:
            model.get_parameter(n).index_fill_(d, i, 10.0)
    second = pruner.prune_to(0.5)
    for gid, entry in second.groups.items():
        assert set(entry["keep"]) <= set(first.groups[gid]["keep"])
        size = entry["size"]
        assert len(entry["keep"]) == size - math.floor(0.5 * size)
    assert all(bool((t == 0).all()) for t in _removed_entries(pruner))


def test_finalize_equals_soft_model_with_fewer_params() -> None:
    model = _model()
    pruner = StructuredPruner(model, X, AGPSchedule(final=0.5, start=0, end=3), round_to=4)
    for t in range(4):
        pruner.step(t)
    soft = copy.deepcopy(model)
    before = _n_params(model)
    thin = pruner.finalize()
    assert thin is model
    assert _n_params(model) < 0.45 * before  # half the channels of most layers: ~1/4 the weights
    assert model.stem[0].out_channels == 16 and model.fc1.out_features == 32  # round_to=4
    assert max_rel_diff(soft, model, torch.randn(16, 1, 8, 8)) < 1e-5
    with pytest.raises(ConfigError, match="finalized"):
        pruner.step(10)


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="levels must be < 1"):
        StructuredPruner(_model(), X, {"kind": "one_shot", "target": 1.0})
    with pytest.raises(ConfigError, match="unit"):
        StructuredPruner(_model(), X, {"kind": "one_shot", "target": 0.5}, unit="batch")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="round_to"):
        StructuredPruner(_model(), X, {"kind": "one_shot", "target": 0.5}, round_to=0)
    with pytest.raises(Exception, match="criterion"):
        StructuredPruner(_model(), X, {"kind": "one_shot", "target": 0.5}, criterion="l7")
    untouched = _model()
    pruner = StructuredPruner(untouched, X, {"kind": "one_shot", "target": 0.5, "at": 9})
    assert pruner.finalize() is untouched and _n_params(untouched) == _n_params(_model())


@pytest.mark.parametrize("unit", ["epoch", "step"])
def test_soft_zeros_survive_training_on_digits(unit: str, tmp_path: Path) -> None:
    """AGP inside the Trainer on real digits: zeros stay zero, accuracy stays useful."""
    torch.set_num_threads(2)
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    train_dl = TensorLoader(train, 64, shuffle=True, seed=0)
    test_dl = TensorLoader(test, 512)
    model = _model()
    steps = len(train_dl)
    sched = (
        AGPSchedule(final=0.5, start=1, end=4)
        if unit == "epoch"
        else AGPSchedule(final=0.5, start=steps, end=4 * steps, frequency=steps // 2)
    )
    pruner = StructuredPruner(model, X, sched, criterion="l1", unit=unit)  # type: ignore[arg-type]
    cfg = TrainConfig(epochs=6, lr=0.05, schedule="cosine", progress=False, device="cpu")
    zeros_seen: list[bool] = []

    class Probe:  # runs after the pruner's own hook: entries must be zero after every step
        def on_step_end(self, trainer: Trainer, step: int) -> None:
            zeros_seen.append(all(bool((t == 0).all()) for t in _removed_entries(pruner)))

    Trainer(model, train_dl, test_dl, cfg, callbacks=[pruner, Probe()]).fit(tmp_path / unit)
    assert pruner.level == 0.5 and len(pruner.history) >= 3
    assert len(zeros_seen) == 6 * steps and all(zeros_seen)
    soft_acc = evaluate(model, test_dl)["acc"]
    assert soft_acc > 0.85  # 1797 real 8x8 digits: a half-width CNN still reads them
    soft = copy.deepcopy(model)
    pruner.finalize()
    assert max_rel_diff(soft, model, next(iter(test_dl))[0]) < 1e-4
    assert evaluate(model, test_dl)["acc"] == pytest.approx(soft_acc, abs=2e-3)
