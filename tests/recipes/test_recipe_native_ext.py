"""Native recipe pieces behind the Distiller conversion: policy masking and the new pruner,
regularizer and LR kinds — their validation, their plans and what they do in a run."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from recipe_test_models import TinyCNN

from prunekit.errors import ConfigError
from prunekit.recipes import Executor, Recipe, resolve
from prunekit.recipes._source import SourceMap
from prunekit.recipes.native import validate_native
from prunekit.zoo import build


def _recipe(data: dict[str, Any]) -> Recipe:
    return validate_native(data, SourceMap("r.yaml"))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {
                "pruners": {"p": {"method": "magnitude", "final_sparsity": 0.5}},
                "policies": [{"pruner": "p", "epochs": [0], "masking": {"double_copies": True}}],
            },
            "'double_copies' needs 'forward_only: true'",
        ),
        (
            {
                "pruners": {
                    "p": {
                        "method": "group",
                        "group": "filters",
                        "criterion": "bernoulli",
                        "final_sparsity": 0.5,
                    }
                },
                "policies": [{"pruner": "p", "epochs": [0]}],
            },
            "rescales the filters it keeps",
        ),
        (
            {
                "pruners": {"p": {"method": "structured", "final_sparsity": 0.5}},
                "policies": [{"pruner": "p", "epochs": [0], "masking": {"forward_only": True}}],
            },
            "removes units through the dependency graph",
        ),
        (
            {
                "regularizers": {"r": {"kind": "l1", "strength": 0.1}},
                "policies": [{"regularizer": "r", "epochs": [0], "masking": {"keep": True}}],
            },
            "has no 'threshold'",
        ),
        (
            {
                "regularizers": {"r": {"kind": "l1", "strength": 0.1}},
                "policies": [{"regularizer": "r", "epochs": [0], "masking": {"every_steps": 2}}],
            },
            "are for pruner policies",
        ),
        (
            {"pruners": {"p": {"method": "group", "group": "blocks", "final_sparsity": 0.5}}},
            "'blocks' needs one",
        ),
        (
            {
                "lr_schedules": {
                    "l": {"kind": "multistep_gammas", "milestones": [1, 2], "gammas": [0.1]}
                }
            },
            "2 milestones but 1 gammas",
        ),
        (
            {"pruners": {"p": {"method": "splicing", "sensitivity": 0.1, "low": 2.0, "high": 1.0}}},
            "low 2.0 > high 1.0",
        ),
    ],
)
def test_validation_one_line(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _recipe(data)
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_multistep_gammas_lr_is_distillers_formula() -> None:
    recipe = _recipe(
        {
            "training": {"lr": 0.1},
            "lr_schedules": {
                "l": {
                    "kind": "multistep_gammas",
                    "milestones": [2, 4, 5],
                    "gammas": [0.1, 0.1, 0.2],
                }
            },
            "policies": [{"lr_schedule": "l", "starting_epoch": 0, "ending_epoch": 7}],
        }
    )
    lrs = [e.lr for e in resolve(recipe, TinyCNN()).epochs]
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.0002, 0.0002])


def test_ramp_threshold_plan_follows_narang_et_al() -> None:
    recipe = _recipe(
        {
            "pruners": {
                "r": {
                    "method": "ramp_threshold",
                    "q": 0.2,
                    "ramp_epoch": 3,
                    "ramp_slope_mult": 2,
                    "params": ["conv2.weight"],
                }
            },
            "policies": [{"pruner": "r", "starting_epoch": 1, "ending_epoch": 6}],
        }
    )
    got = [
        e.prune[0].per_param["conv2.weight"] for e in resolve(recipe, TinyCNN()).epochs if e.prune
    ]
    slope = 2 * 0.2 * 1 / (2 * (3 - 1) + 3 * (6 - 3))  # θ = 2qf / (2(ramp−start) + 3(end−ramp))
    expected = [
        slope * 1,
        slope * 2,
        slope * 3 + 2 * slope * 1,
        slope * 3 + 2 * slope * 2,
        slope * 3 + 2 * slope * 3,
    ]
    assert got == pytest.approx(expected)


def test_regularizer_threshold_zeroes_and_keep_makes_it_permanent() -> None:
    torch.manual_seed(0)
    batches = [(torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))) for _ in range(3)]
    recipe = _recipe(
        {
            "training": {"epochs": 3, "lr": 0.01},
            "regularizers": {
                "g": {
                    "kind": "group_lasso",
                    "group": "filters",
                    "strength": 0.5,
                    "params": ["conv2.weight"],
                    "threshold": "mean_abs",
                }
            },
            "policies": [
                {
                    "regularizer": "g",
                    "starting_epoch": 0,
                    "ending_epoch": 2,
                    "masking": {"keep": True},
                }
            ],
        }
    )
    torch.manual_seed(0)
    model = TinyCNN()
    result = Executor(recipe, model=model, train_data=batches, device="cpu", progress=False).run()
    w = result.model.conv2.weight.detach()
    dead = ~(w != 0).flatten(1).any(1)
    assert bool(dead.all())  # every filter's mean |w| is below λ = 0.5: all zeroed…
    assert not result.masks["conv2.weight"].any()  # …and kept zero through epoch 2


def test_fold_bn_ranks_folded_weights() -> None:
    recipe = _recipe(
        {
            "pruners": {
                "p": {
                    "method": "structured",
                    "final_sparsity": 0.5,
                    "ranking": "own",
                    "fold_bn": True,
                    "params": ["conv1.weight"],
                }
            },
            "policies": [{"pruner": "p", "epochs": [0]}],
            "model": {"spec": "zoo:digits_cnn", "input_shape": [1, 1, 8, 8]},
        }
    )
    torch.manual_seed(0)
    model = TinyCNN()
    with torch.no_grad():  # BN scales that reverse the filters' L1 order
        l1 = model.conv1.weight.abs().sum((1, 2, 3))
        model.bn1.weight.copy_(1.0 / l1**2)
    folded = (model.conv1.weight.abs().sum((1, 2, 3)) * model.bn1.weight.abs()).detach()
    masks = Executor(recipe, model=model, device="cpu").prune_only().masks
    kept = torch.nonzero(masks["conv1.weight"].flatten(1).any(1)).flatten()
    assert sorted(kept.tolist()) == sorted(folded.argsort(descending=True)[:4].tolist())


def test_group_pruner_random_level_draws_per_tensor_and_event() -> None:
    recipe = _recipe(
        {
            "pruners": {
                "p": {
                    "method": "group",
                    "group": "filters",
                    "level_range": [0.2, 0.8],
                    "params": ["layer1.0.conv1.weight", "layer2.0.conv1.weight"],
                }
            },
            "policies": [{"pruner": "p", "epochs": [0]}],
        }
    )
    masks = Executor(recipe, model=build("resnet20_cifar"), device="cpu").prune_only().masks
    pruned = {n: int((~m.flatten(1).any(1)).sum()) / m.shape[0] for n, m in masks.items()}
    assert all(0.2 - 1 / 16 <= v <= 0.8 for v in pruned.values()) and len(pruned) == 2
