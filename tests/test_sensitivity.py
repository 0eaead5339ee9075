"""Sensitivity analysis: one target pruned at a time, exact restore, CSV/plot, budgets."""

from __future__ import annotations

import copy
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from prunekit._fileio import atomic_path, atomic_write_bytes
from prunekit.data import TensorLoader, load_dataset
from prunekit.demo import train as demo_train
from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph, trace
from prunekit.importance import score
from prunekit.plan import plan_from_keep
from prunekit.sensitivity import (
    SensitivityResult,
    ratios_from_budget,
    restoring_pruner,
    sensitivity_analysis,
    structured_pruner,
)
from prunekit.sparse import apply_masks, get_masks
from prunekit.surgery import apply_plan
from prunekit.train import evaluate
from prunekit.zoo import build


def _model() -> nn.Sequential:
    return nn.Sequential(nn.Linear(12, 20), nn.ReLU(), nn.Linear(20, 4))


def _zero_share(model: nn.Module) -> dict[str, float]:
    return {n: float((p == 0).float().mean()) for n, p in model.named_parameters()}


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_each_target_pruned_alone_and_model_restored_exactly() -> None:
    model = _model()
    before = _state(model)
    seen: list[dict[str, float]] = []
    x = torch.randn(32, 12)
    ref = model(x).detach()

    def evaluate(m: nn.Module) -> float:
        seen.append(_zero_share(m))
        with torch.no_grad():  # 0 for the dense model, lower when pruned
            return float(-(m(x) - ref).abs().mean())

    levels = (0.25, 0.5, 0.75)
    res = sensitivity_analysis(model, evaluate, levels=levels, progress=False)
    after = _state(model)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit-for-bit restored
    assert list(res.curves) == ["0.weight", "2.weight"]
    assert res.baseline == 0.0
    # call 0 is the baseline, then 3 levels for each target, each pruning only that target
    assert len(seen) == 1 + 2 * 3
    for i, (target, level) in enumerate((t, lv) for t in res.curves for lv in levels):
        shares = seen[1 + i]
        assert shares[target] == pytest.approx(level, abs=0.01)
        assert all(v == 0.0 for k, v in shares.items() if k != target)
    for curve in res.curves.values():
        assert curve[0.0] == 0.0 and curve[0.75] < curve[0.25] < 0.0


def test_masked_model_keeps_its_masks() -> None:
    model = _model()
    mask = torch.rand(20, 12) > 0.5
    apply_masks(model, {"0.weight": mask})
    before = _state(model)
    sensitivity_analysis(model, lambda m: 1.0, ["0.weight"], levels=[0.9], progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(get_masks(model)["0.weight"], mask)


@dataclass(frozen=True)
class FakeGroup:
    id: str
    rows: slice


def test_custom_targets_with_restoring_pruner() -> None:
    model = _model()
    before = _state(model)

    def soft_prune(m: nn.Module, group: FakeGroup, level: float) -> None:
        n = round(level * 20)
        with torch.no_grad():
            m[0].weight[group.rows][: n // 2].zero_()

    groups = [FakeGroup("a", slice(0, 10)), FakeGroup("b", slice(10, 20))]
    zeros = []
    res = sensitivity_analysis(
        model,
        lambda m: zeros.append(int((m[0].weight == 0).sum())) or 0.0,
        groups,
        levels=[0.5, 1.0],
        pruner=restoring_pruner(soft_prune),
        progress=False,
    )
    assert list(res.curves) == ["a", "b"]  # labelled by .id
    assert zeros == [0, 5 * 12, 10 * 12, 5 * 12, 10 * 12]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_csv_round_trip_and_plot(tmp_path: Path) -> None:
    res = SensitivityResult(
        0.98, {"fc1.weight": {0.0: 0.98, 0.5: 0.97}, "fc2.weight": {0.0: 0.98, 0.5: 0.9}}
    )
    res.to_csv(tmp_path / "s.csv")
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0] == "target,level,metric"
    assert lines[1:] == [
        "fc1.weight,0.0,0.98",
        "fc1.weight,0.5,0.97",
        "fc2.weight,0.0,0.98",
        "fc2.weight,0.5,0.9",
    ]
    back = SensitivityResult.from_csv(tmp_path / "s.csv")
    assert back.curves == res.curves and back.baseline == 0.98
    res.plot(tmp_path / "plots" / "s.png", metric_name="top-1")
    assert (tmp_path / "plots" / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["s.png"]  # no temp left


def test_ratios_from_budget() -> None:
    curves = {
        "robust": {0.0: 0.99, 0.5: 0.99, 0.8: 0.985, 0.9: 0.95},
        "fragile": {0.0: 0.99, 0.5: 0.95, 0.8: 0.90},
        "noisy": {0.0: 0.99, 0.3: 0.97, 0.6: 0.989},
    }
    res = SensitivityResult(0.99, curves)
    assert ratios_from_budget(res, 0.01) == {"robust": 0.8, "fragile": 0.0, "noisy": 0.0}
    loose = ratios_from_budget(res, 0.01, contiguous=False)
    assert loose["noisy"] == 0.6
    assert ratios_from_budget(curves, 0.05)["fragile"] == 0.5  # baselines from level 0
    losses = {"t": {0.0: 1.0, 0.5: 1.05, 0.9: 2.0}}
    assert ratios_from_budget(losses, 0.1, higher_is_better=False) == {"t": 0.5}
    with pytest.raises(ConfigError, match="no baseline"):
        ratios_from_budget({"t": {0.5: 1.0}}, 0.1)


def test_bad_levels_and_targets() -> None:
    with pytest.raises(ConfigError, match="levels"):
        sensitivity_analysis(_model(), lambda m: 0.0, levels=[1.5])
    with pytest.raises(ConfigError, match="no targets"):
        sensitivity_analysis(_model(), lambda m: 0.0, targets=[])


# --------------------------------------------------------------------- structured (core groups)


@pytest.fixture(scope="module")
def digits() -> tuple[nn.Module, TensorLoader, DependencyGraph]:
    """A digits_cnn trained for a few epochs on scikit-learn's real 8x8 digits."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convs: threads only add sync cost on a shared machine
    try:
        torch.manual_seed(0)
        train = load_dataset("digits", "train")
        test = TensorLoader(load_dataset("digits", "test"), 512)
        model = build("digits_cnn")
        demo_train(model, TensorLoader(train, 64, shuffle=True, seed=0), epochs=4, lr=0.1)
        graph = trace(model.eval(), torch.randn(1, 1, 8, 8))
    finally:
        torch.set_num_threads(before)
    return model, test, graph


def _acc(model: nn.Module, loader: TensorLoader) -> float:
    return float(evaluate(model, loader)["acc"])


def test_structured_groups_pruned_alone_and_restored(
    digits: tuple[nn.Module, TensorLoader, DependencyGraph],
) -> None:
    model, test, graph = digits
    torch.set_num_threads(1)
    before = _state(model)
    levels = [0.5, 0.9]
    res = sensitivity_analysis(model, lambda m: _acc(m, test), graph.groups, levels=levels)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert list(res.curves) == [g.id for g in graph.groups]
    assert res.baseline > 0.9  # trained on real digits
    for curve in res.curves.values():
        assert sorted(curve) == [0.0, 0.5, 0.9] and curve[0.9] <= res.baseline
    assert min(c[0.9] for c in res.curves.values()) < res.baseline - 0.05  # some layer hurts

    # The soft measurement is exactly the physically thinned model's accuracy.
    group = graph.groups[1]
    scores = score(model, graph, "l1")[group.id]
    keep = torch.argsort(scores, descending=True, stable=True)[: group.size - group.size // 2]
    thin = apply_plan(copy.deepcopy(model), plan_from_keep(graph, {group.id: keep.tolist()}))
    assert _acc(thin, test) == pytest.approx(res.curves[group.id][0.5], abs=1.5 / 360)


def test_structured_pruner_levels_floor_and_errors(
    digits: tuple[nn.Module, TensorLoader, DependencyGraph],
) -> None:
    model, _, graph = digits
    group = graph.group("fc1.weight:0")  # the 64 hidden units of fc1
    pruner = structured_pruner("l2", round_to=8)
    rows = lambda: int((model.fc1.weight.abs().sum(1) != 0).sum())  # noqa: E731
    with pruner(model, group, 0.3):  # keep 64 - 19 = 45 -> 48 with round_to=8
        assert rows() == 48
        assert int((model.fc2.weight.abs().sum(0) != 0).sum()) == 48  # consumer columns too
    with structured_pruner()(model, group, 1.0):  # level 1.0 keeps the floor
        assert rows() == 1
    assert rows() == 64
    with (
        pytest.raises(ConfigError, match="cannot score"),
        structured_pruner("bn_scale")(model, group, 0.5),
    ):
        pass
    with pytest.raises(ConfigError, match="not an unstructured criterion"):
        sensitivity_analysis(model, lambda m: 0.0, ["fc1.weight"], levels=[0.5], method="l2")


def test_results_are_written_atomically_with_normal_permissions(tmp_path: Path) -> None:
    """to_csv/plot go through prunekit._fileio: umask permissions, no temp files, no torn file."""
    res = SensitivityResult(1.0, {"t": {0.0: 1.0}})
    path = tmp_path / "s.csv"
    res.to_csv(path)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # mkstemp alone gives 0o600
    old = path.read_text()
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half a file")
        raise RuntimeError("crash mid-write")
    assert path.read_text() == old and sorted(p.name for p in tmp_path.iterdir()) == ["s.csv"]
    atomic_write_bytes(tmp_path / "sub" / "b.bin", b"\x00\x01")
    assert (tmp_path / "sub" / "b.bin").read_bytes() == b"\x00\x01"
