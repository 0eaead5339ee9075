"""Resolving policies into per-epoch actions, LR values, targets, table and JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torchvision

from prunekit.errors import ConfigError
from prunekit.recipes import Policy, Recipe, load_recipe, policy_epochs, resolve
from prunekit.recipes.resolve import count_epochs

Write = Callable[[str], Path]


@pytest.fixture(scope="module")
def resnet18() -> torch.nn.Module:
    return torchvision.models.resnet18(weights=None)


def _recipe(**data: object) -> Recipe:
    return Recipe.model_validate(data)


def test_policy_epochs_follow_distiller_semantics() -> None:
    assert policy_epochs(Policy(pruner="p", starting_epoch=2, ending_epoch=9, frequency=3), 50) == [
        2,
        5,
        8,
    ]
    assert policy_epochs(Policy(pruner="p", ending_epoch=3), 50) == [0, 1, 2]  # exclusive end
    assert policy_epochs(Policy(pruner="p", starting_epoch=7), 10) == [7, 8, 9]  # None: run end
    assert policy_epochs(Policy(pruner="p", epochs=[9, 3, 3]), 5) == [3, 9]  # sorted, not cut


def test_iterative_removes_a_constant_fraction_of_what_remains(resnet18: torch.nn.Module) -> None:
    r = _recipe(
        pruners={"it": {"method": "magnitude", "schedule": "iterative", "final_sparsity": 0.875}},
        policies=[{"pruner": "it", "epochs": [0, 1, 2]}],
    )
    levels = [e.prune[0].sparsity for e in resolve(r, resnet18).epochs]
    assert levels == pytest.approx([0.5, 0.75, 0.875])  # density halves at each event


def test_count_epochs() -> None:
    r = _recipe(
        pruners={"p": {"method": "magnitude", "final_sparsity": 0.5}},
        policies=[{"pruner": "p", "epochs": [4]}, {"pruner": "p", "ending_epoch": 9}],
    )
    assert count_epochs(r) == (9, "derived")
    assert count_epochs(r, 3) == (3, "override")
    r2 = _recipe(training={"epochs": 12})
    assert count_epochs(r2) == (12, "recipe")
    with pytest.raises(ConfigError, match="cannot tell how many epochs"):
        count_epochs(_recipe())
    with pytest.raises(ConfigError, match="must be >= 1"):
        count_epochs(r, 0)


def test_per_epoch_actions(resnet18: torch.nn.Module) -> None:
    r = _recipe(
        training={"epochs": 10, "lr": 0.1, "schedule": "constant"},
        pruners={
            "agp": {
                "method": "magnitude",
                "schedule": "agp",
                "initial_sparsity": 0.2,
                "final_sparsity": 0.8,
                "modules": ["layer1.*"],
                "ignore": ["layer1.1.conv2"],
            },
            "it": {
                "method": "structured",
                "schedule": "iterative",
                "final_sparsity": 0.75,
                "params": ["layer2.0.conv1.weight"],
            },
        },
        regularizers={"bn": {"kind": "bn_l1", "strength": 1e-4, "modules": ["layer4.*"]}},
        policies=[
            {"pruner": "agp", "starting_epoch": 1, "ending_epoch": 8, "frequency": 3},
            {"pruner": "it", "epochs": [2, 5, 8]},
            {"regularizer": "bn", "ending_epoch": 3},
        ],
    )
    res = resolve(r, resnet18)
    assert res.num_epochs == 10 and res.epochs_source == "recipe"
    assert res.targets["agp"] == [
        "layer1.0.conv1.weight",
        "layer1.0.conv2.weight",
        "layer1.1.conv1.weight",
    ]
    assert set(res.targets["bn"]) == {
        "layer4.0.bn1.weight",
        "layer4.0.bn2.weight",
        "layer4.0.downsample.1.weight",
        "layer4.1.bn1.weight",
        "layer4.1.bn2.weight",
    }
    prune = {e.epoch: {a.pruner: a for a in e.prune} for e in res.epochs if e.prune}
    assert sorted(prune) == [1, 2, 4, 5, 7, 8]
    # AGP over epochs 1, 4, 7: span 6.
    assert prune[1]["agp"].sparsity == pytest.approx(0.2)
    assert prune[4]["agp"].sparsity == pytest.approx(0.8 - 0.6 * 0.5**3)
    assert prune[7]["agp"].sparsity == pytest.approx(0.8)
    assert (prune[7]["agp"].step, prune[7]["agp"].steps) == (3, 3)
    # Iterative: density × 0.25^(1/3) at each of the 3 events, 75% sparsity at the last.
    expected = [1 - 0.25 ** (k / 3) for k in (1, 2, 3)]
    assert [prune[e]["it"].sparsity for e in (2, 5, 8)] == pytest.approx(expected)
    assert [e.regularize for e in res.epochs[:4]] == [["bn"], ["bn"], ["bn"], []]
    assert all(e.lr == pytest.approx(0.1) for e in res.epochs)
    assert res.warnings == []


@pytest.mark.parametrize(
    ("training", "make"),
    [
        ({"schedule": "cosine"}, lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=8)),
        (
            {"schedule": "step", "step_size": 3, "gamma": 0.5},
            lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.5),
        ),
        (
            {"schedule": "step", "milestones": [2, 6]},
            lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [2, 6], 0.1),
        ),
        # default: Network Slimming's step decay at 50% and 75%, as for `prunekit train`
        ({}, lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [4, 6], 0.1)),
        ({"schedule": "constant"}, None),
    ],
)
def test_base_lr_schedule_matches_torch(
    resnet18: torch.nn.Module, training: dict, make: object
) -> None:
    r = _recipe(training={"epochs": 8, "lr": 0.2, **training})
    res = resolve(r, resnet18)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.2)
    sched = make(opt) if callable(make) else None
    expected = []
    for _ in range(8):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is not None:
            sched.step()
    assert [e.lr for e in res.epochs] == pytest.approx(expected)


def test_onecycle_peaks_in_the_run(resnet18: torch.nn.Module) -> None:
    res = resolve(_recipe(training={"epochs": 10, "lr": 0.4, "schedule": "onecycle"}), resnet18)
    lrs = [e.lr for e in res.epochs]
    assert lrs[0] < 0.05 and max(lrs) == pytest.approx(0.4, rel=0.05) and lrs[-1] < 0.05


def test_magnitude_levels_scheduled_per_tensor(resnet18: torch.nn.Module) -> None:
    r = _recipe(
        pruners={
            "lv": {
                "method": "magnitude",
                "schedule": "agp",
                "final_sparsity": 0.5,
                "levels": {"fc.weight": 0.9},
                "params": ["fc.weight", "conv1.weight"],
            }
        },
        policies=[{"pruner": "lv", "starting_epoch": 0, "ending_epoch": 3}],
    )
    res = resolve(r, resnet18)
    last = res.epochs[2].prune[0]
    assert last.per_param == pytest.approx({"fc.weight": 0.9, "conv1.weight": 0.5})
    mid = res.epochs[1].prune[0].per_param
    assert mid["fc.weight"] == pytest.approx(0.9 * (1 - 0.5**3))


def test_warnings_for_unused_and_out_of_range(write: Write, resnet18: torch.nn.Module) -> None:
    path = write(
        """
        training: {epochs: 5}
        pruners:
          used: {method: magnitude, schedule: agp, final_sparsity: 0.5}
          idle: {method: magnitude, final_sparsity: 0.5}
          late: {method: magnitude, final_sparsity: 0.5}
        policies:
          - {pruner: used, starting_epoch: 0, ending_epoch: 9}
          - {pruner: late, epochs: [7]}
        """
    )
    res = resolve(load_recipe(path), resnet18)
    text = "\n".join(res.warnings)
    assert f"{path}:4: 'idle' is defined but no policy uses it" in text
    assert f"{path}:7: policy #1 prunes until epoch 8 but the run stops after epoch 4" in text
    assert f"{path}:8: policy #2 starts at epoch 7 but the run has only 5 epochs" in text
    assert [e.epoch for e in res.epochs if e.prune] == [0, 1, 2, 3, 4]


def test_table_and_json(write: Write, resnet18: torch.nn.Module, tmp_path: Path) -> None:
    path = write(
        """
        name: demo
        training: {epochs: 4, lr: 0.1, schedule: constant}
        pruners:
          agp: {method: magnitude, schedule: agp, initial_sparsity: 0.1, final_sparsity: 0.7,
                params: [fc.weight]}
        regularizers:
          bn: {kind: bn_l1, strength: 1e-4}
        policies:
          - {pruner: agp, starting_epoch: 0, ending_epoch: 4, frequency: 1}
          - {regularizer: bn, epochs: [0, 1]}
        """
    )
    res = resolve(load_recipe(path), resnet18)
    table = res.to_table()
    lines = table.splitlines()
    assert lines[0] == "recipe: demo (native format)"
    assert "epochs: 4 (from the recipe); base lr 0.1, schedule constant" in lines[1]
    assert any("agp" in ln and "1 tensor: fc.weight" in ln for ln in lines)
    assert any("bn_l1 λ=0.0001; 20 tensors" in ln for ln in lines)
    row0 = next(ln for ln in lines if ln.strip().startswith("0 "))
    assert "agp 10.0%" in row0 and row0.rstrip().endswith("bn")
    row3 = next(ln for ln in lines if ln.strip().startswith("3 "))
    assert "agp 70.0%" in row3 and row3.rstrip().endswith("-")

    data = json.loads(res.to_json())
    assert data["num_epochs"] == 4
    assert [e["epoch"] for e in data["epochs"]] == [0, 1, 2, 3]
    assert data["epochs"][3]["prune"][0]["sparsity"] == pytest.approx(0.7)
    assert Recipe.model_validate(data["recipe"]).model_dump() == res.recipe.model_dump()
    out = tmp_path / "sub" / "resolved.json"
    res.save_json(out)
    assert json.loads(out.read_text()) == data
    assert not any(p.name.endswith(".tmp") for p in out.parent.iterdir())


def test_lr_in_table_is_finite(resnet18: torch.nn.Module) -> None:
    res = resolve(_recipe(training={"epochs": 3}), resnet18)
    assert all(math.isfinite(e.lr) and e.lr > 0 for e in res.epochs)
