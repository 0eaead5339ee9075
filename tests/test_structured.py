"""StructuredPruner: AGP/iterative levels, soft zeros through training, exact finalize."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from prunekit.data import TensorLoader, load_dataset
from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph, trace
from prunekit.schedules import AGPSchedule, IterativeSchedule, agp_sparsity
from prunekit.structured import StructuredPruner
from prunekit.train import TrainConfig, Trainer, evaluate
from prunekit.verify import max_rel_diff
from prunekit.zoo import build

X = torch.randn(2, 1, 8, 8)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Tiny convs: threading only adds sync cost, and CI machines are shared.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build("digits_cnn")


@pytest.fixture(scope="module")
def graph() -> DependencyGraph:
    """One trace shared by every test (all use fresh digits_cnn instances of one shape)."""
    return trace(_model(), X)


def _removed_entries(pruner: StructuredPruner) -> list[torch.Tensor]:
    """Every parameter slice the current plan removes (must be all zeros)."""
    params = dict(pruner.model.named_parameters())
    return [params[n][~keep] for n, keep in pruner._keep.items()]


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_agp_levels_follow_zhu_gupta_formula(graph: DependencyGraph) -> None:
    sched = AGPSchedule(final=0.6, start=1, end=7, frequency=2)
    pruner = StructuredPruner(_model(), X, sched, graph=graph)
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


def test_group_subset(graph: DependencyGraph) -> None:
    model = _model()
    once = {"kind": "one_shot", "target": 0.5}
    pruner = StructuredPruner(model, X, once, graph=graph, groups=["fc1.weight:0"])
    plan = pruner.step(0)
    assert plan is not None and plan.removed_units() == 32  # only fc1's 64 hidden units
    pruner.finalize()
    assert model.fc1.out_features == 32 and model.stem[0].out_channels == 32
    with pytest.raises(ConfigError, match="unknown group"):
        StructuredPruner(_model(), X, once, graph=graph, groups=["nope:0"])


def test_skipped_events_collapse_and_iterative_levels(graph: DependencyGraph) -> None:
    sched = IterativeSchedule(final=0.75, cycles=2, cycle_length=3)
    pruner = StructuredPruner(_model(), X, sched, criterion="l2", graph=graph)
    assert pruner.step(5) is not None  # events 0 and 3 both due: jump to the later one
    assert pruner.level == 0.75 and len(pruner.history) == 1
    assert pruner.step(6) is None  # nothing new


def test_units_removed_once_stay_removed(graph: DependencyGraph) -> None:
    model = _model()
    pruner = StructuredPruner(model, X, AGPSchedule(final=0.5, start=0, end=2), graph=graph)
    first = pruner.prune_to(0.25)
    with torch.no_grad():  # revive the zeroed filters with huge weights
        for n, keep in pruner._keep.items():
            model.get_parameter(n).masked_fill_(~keep, 10.0)
    second = pruner.prune_to(0.5)
    for gid, entry in second.groups.items():
        assert set(entry["keep"]) <= set(first.groups[gid]["keep"])
        size = entry["size"]
        assert len(entry["keep"]) == size - math.floor(0.5 * size)
    assert all(bool((t == 0).all()) for t in _removed_entries(pruner))


def test_finalize_equals_soft_model_with_fewer_params(graph: DependencyGraph) -> None:
    model = _model()
    sched = AGPSchedule(final=0.5, start=0, end=3)
    pruner = StructuredPruner(model, X, sched, round_to=4, graph=graph)
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


def test_bad_settings_are_config_errors(graph: DependencyGraph) -> None:
    with pytest.raises(ConfigError, match="levels must be < 1"):
        StructuredPruner(_model(), X, {"kind": "one_shot", "target": 1.0})
    with pytest.raises(ConfigError, match="unit"):
        StructuredPruner(_model(), X, {"kind": "one_shot", "target": 0.5}, unit="batch")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="round_to"):
        StructuredPruner(_model(), X, {"kind": "one_shot", "target": 0.5}, round_to=0)
    with pytest.raises(Exception, match="criterion"):
        StructuredPruner(_model(), X, {"kind": "one_shot", "target": 0.5}, criterion="l7")
    untouched = _model()
    once = {"kind": "one_shot", "target": 0.5, "at": 9}
    pruner = StructuredPruner(untouched, X, once, graph=graph)
    assert pruner.finalize() is untouched and _n_params(untouched) == _n_params(_model())


def test_trainer_hooks_by_epoch(graph: DependencyGraph) -> None:
    """unit="epoch": events fire in on_epoch_start; on_step_end only re-zeros."""
    model = _model()
    pruner = StructuredPruner(model, X, AGPSchedule(final=0.5, start=0, end=2), graph=graph)
    trainer = type("FakeTrainer", (), {"step": 0})()
    pruner.on_step_end(trainer, 5)  # no event for steps in epoch mode
    assert pruner.plan is None
    pruner.on_epoch_start(trainer, 1)
    assert pruner.level == pytest.approx(agp_sparsity(1, initial=0, final=0.5, start=0, end=2))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # what an optimizer step may do to removed entries
    pruner.on_step_end(trainer, 6)
    assert all(bool((t == 0).all()) for t in _removed_entries(pruner))


def test_soft_zeros_survive_training_on_digits(graph: DependencyGraph, tmp_path: Path) -> None:
    """AGP per step inside the Trainer on real digits: zeros stay zero, accuracy stays useful."""
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    train_dl = TensorLoader(train, 64, shuffle=True, seed=0)
    test_dl = TensorLoader(test, 512)
    model = _model()
    steps = len(train_dl)
    sched = AGPSchedule(final=0.5, start=steps, end=3 * steps, frequency=steps // 2)
    pruner = StructuredPruner(model, X, sched, criterion="l1", unit="step", graph=graph)
    cfg = TrainConfig(epochs=4, lr=0.05, schedule="cosine", progress=False, device="cpu")
    zeros_seen: list[bool] = []

    class Probe:  # runs after the pruner's own hook: entries must be zero after every step
        def on_step_end(self, trainer: Trainer, step: int) -> None:
            zeros_seen.append(all(bool((t == 0).all()) for t in _removed_entries(pruner)))

    Trainer(model, train_dl, test_dl, cfg, callbacks=[pruner, Probe()]).fit(tmp_path / "run")
    assert pruner.level == 0.5 and len(pruner.history) >= 4
    assert [e.step for e in pruner.history][-1] == 3 * steps
    assert len(zeros_seen) == 4 * steps and all(zeros_seen)
    soft_acc = evaluate(model, test_dl)["acc"]
    assert soft_acc > 0.85  # 1797 real 8x8 digits: a half-width CNN still reads them
    soft = copy.deepcopy(model)
    pruner.finalize()
    assert max_rel_diff(soft, model, next(iter(test_dl))[0]) < 1e-4
    assert evaluate(model, test_dl)["acc"] == pytest.approx(soft_acc, abs=2e-3)


def _agp_run(graph: DependencyGraph, out: Path, kill_at: int | None = None) -> StructuredPruner:
    """AGP over epochs 0..2 of 4, taylor scores on real digits, inside the Trainer."""
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    train_dl = TensorLoader(train, 128, shuffle=True, seed=0)
    model = _model()
    calib = [next(iter(TensorLoader(train, 64)))]
    pruner = StructuredPruner(
        model, X, AGPSchedule(final=0.5, start=0, end=2), criterion="taylor", graph=graph,
        score_kwargs={"batches": calib},
    )  # fmt: skip
    cfg = TrainConfig(epochs=4, lr=0.05, schedule="cosine", progress=False, device="cpu")

    class Kill:
        def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
            if epoch == kill_at:
                raise KeyboardInterrupt

    trainer = Trainer(model, train_dl, TensorLoader(test, 512), cfg, callbacks=[pruner, Kill()])
    trainer.fit(out, resume=kill_at is None)
    pruner.finalize()
    return pruner


def test_resume_restores_the_pruner(graph: DependencyGraph, tmp_path: Path) -> None:
    """Killed after its last event, a resumed run still re-zeroes and thins what it pruned."""
    whole = _agp_run(graph, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        _agp_run(graph, tmp_path / "killed", kill_at=3)
    resumed = _agp_run(graph, tmp_path / "killed")
    assert resumed.history == whole.history  # every event, not only a re-prune at the resume
    assert resumed.plan is not None and whole.plan is not None
    assert resumed.plan.groups == whole.plan.groups
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert _n_params(resumed.model) < _n_params(_model())
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.gpu
def test_pruner_on_cuda(graph: DependencyGraph) -> None:
    """Index tensors follow the parameters' device; finalize stays exact on the GPU."""
    model = _model().cuda()
    pruner = StructuredPruner(model, X.cuda(), {"kind": "one_shot", "target": 0.5}, graph=graph)
    pruner.step(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    pruner.zero_pruned()
    assert all(bool((t == 0).all()) for t in _removed_entries(pruner))
    soft = copy.deepcopy(model)
    pruner.finalize()
    assert max_rel_diff(soft, model, torch.randn(8, 1, 8, 8, device="cuda")) < 1e-4
