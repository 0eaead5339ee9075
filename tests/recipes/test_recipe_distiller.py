"""Distiller schedules → native recipes, one supported class at a time."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torchvision

from prunekit.errors import ConfigError
from prunekit.recipes import load_distiller, load_recipe, resolve
from prunekit.recipes.native import (
    GroupLassoRegularizerConfig,
    L1RegularizerConfig,
    MagnitudePrunerConfig,
    SlimPrunerConfig,
    StdThresholdPrunerConfig,
    StructuredPrunerConfig,
)

Write = Callable[[str], Path]


@pytest.fixture(scope="module")
def resnet18() -> torch.nn.Module:
    return torchvision.models.resnet18(weights=None)


def _pruner_yaml(body: str) -> str:
    return f"""
    version: 1
    pruners:
      p:
{body}
    policies:
      - pruner:
          instance_name: p
        starting_epoch: 0
        ending_epoch: 7
        frequency: 2
    """


def test_automated_gradual_pruner(write: Write, resnet18: torch.nn.Module) -> None:
    recipe = load_recipe(
        write(
            _pruner_yaml(
                """
        class: AutomatedGradualPruner
        initial_sparsity: 0.05
        final_sparsity: 0.80
        weights: [module.layer1.0.conv1.weight, module.fc.weight]
"""
            )
        )
    )
    p = recipe.pruners["p"]
    assert isinstance(p, MagnitudePrunerConfig)
    assert (p.schedule, p.initial_sparsity, p.final_sparsity) == ("agp", 0.05, 0.8)
    assert p.params == ["module.layer1.0.conv1.weight", "module.fc.weight"]
    resolved = resolve(recipe, resnet18, epochs=8)
    assert resolved.targets["p"] == ["layer1.0.conv1.weight", "fc.weight"]  # prefix stripped
    levels = {e.epoch: e.prune[0].sparsity for e in resolved.epochs if e.prune}
    # Distiller: span = ((7 - 0 - 1) // 2) * 2 = 6, s_t = s_f + (s_i - s_f)(1 - t/6)^3.
    expected = {t: 0.8 + (0.05 - 0.8) * (1 - t / 6) ** 3 for t in (0, 2, 4, 6)}
    assert levels == pytest.approx(expected)
    assert levels[6] == pytest.approx(0.8)


@pytest.mark.parametrize(
    ("cls", "group", "criterion", "target"),
    [
        ("L1RankedStructureParameterPruner_AGP", "Filters", "l1", "filters"),
        ("L2RankedStructureParameterPruner_AGP", "Channels", "l2", "channels"),
        ("ActivationMeanRankedFilterPruner_AGP", "3D", "activation", "filters"),
        ("ActivationAPoZRankedFilterPruner_AGP", "Filters", "apoz", "filters"),
        ("GradientRankedFilterPruner_AGP", "Filters", "taylor", "filters"),
        ("RandomRankedFilterPruner_AGP", "3D", "random", "filters"),
    ],
)
def test_ranked_structure_agp(
    write: Write, resnet18: torch.nn.Module, cls: str, group: str, criterion: str, target: str
) -> None:
    recipe = load_recipe(
        write(
            _pruner_yaml(
                f"""
        class: {cls}
        initial_sparsity: 0.10
        final_sparsity: 0.50
        group_type: {group}
        group_dependency: Leader
        weights: [module.layer2.0.conv1.weight, module.layer2.1.conv1.weight]
"""
            )
        )
    )
    p = recipe.pruners["p"]
    assert isinstance(p, StructuredPrunerConfig)
    assert (p.criterion, p.target, p.schedule) == (criterion, target, "agp")
    assert (p.initial_sparsity, p.final_sparsity, p.surgery) == (0.1, 0.5, False)
    assert p.ranking == "own"  # each weight's own filters, as Distiller ranks them
    resolved = resolve(recipe, resnet18, epochs=8)
    assert resolved.targets["p"] == ["layer2.0.conv1.weight", "layer2.1.conv1.weight"]
    assert [e.epoch for e in resolved.epochs if e.prune] == [0, 2, 4, 6]


def test_one_shot_ranked_structure_with_thinning(write: Write, resnet18: torch.nn.Module) -> None:
    path = write(
        """
        version: 1
        pruners:
          filt:
            class: L1RankedStructureParameterPruner
            group_type: Channels
            desired_sparsity: 0.3
            weights: [module.layer3.0.conv2.weight]
        extensions:
          thin:
            class: ChannelRemover
            thinning_func_str: remove_channels
        policies:
          - extension:
              instance_name: thin
            epochs: [1]
          - pruner:
              instance_name: filt
            epochs: [0]
        """
    )
    recipe = load_recipe(path)
    p = recipe.pruners["filt"]
    assert isinstance(p, StructuredPrunerConfig)
    assert (p.criterion, p.target, p.schedule, p.final_sparsity) == (
        "l1",
        "channels",
        "one_shot",
        0.3,
    )
    assert p.surgery is True  # thinning extension → end-of-run surgery
    assert len(recipe.policies) == 1  # the extension policy is not a native policy
    # Lines still point into the Distiller file after dropping the extension policy.
    assert recipe.source.line(("policies", 0, "pruner")) == 17
    resolved = resolve(recipe, resnet18, epochs=3)
    assert resolved.epochs[0].prune[0].sparsity == pytest.approx(0.3)


def test_sensitivity_pruner_std_thresholds(write: Write, resnet18: torch.nn.Module) -> None:
    recipe = load_recipe(
        write(
            _pruner_yaml(
                """
        class: SensitivityPruner
        sensitivities:
          'module.conv1.weight': 0.25
          'module.fc.weight': 0.9
          '*': 0.5
"""
            )
        )
    )
    p = recipe.pruners["p"]
    assert isinstance(p, StdThresholdPrunerConfig)
    assert p.schedule == "iterative" and p.sensitivities is not None
    assert p.std == "first"  # Distiller computes std(W) once
    resolved = resolve(recipe, resnet18, epochs=8)
    action = resolved.epochs[0].prune[0]
    assert action.quantity == "sensitivity" and action.sparsity is None
    assert action.per_param["conv1.weight"] == 0.25
    assert action.per_param["fc.weight"] == 0.9
    assert action.per_param["layer4.1.conv2.weight"] == 0.5  # '*' default
    assert len(action.per_param) == 21  # every conv/linear weight of resnet18 (no RNN/embedding)


def test_magnitude_and_level_pruners(write: Write, resnet18: torch.nn.Module) -> None:
    path = write(
        """
        version: 1
        pruners:
          thr:
            class: MagnitudeParameterPruner
            thresholds: {module.fc.weight: 0.01, module.conv1.weight: 0.02}
          lvl:
            class: SparsityLevelParameterPruner
            levels: {module.layer1.0.conv1.weight: 0.4, module.layer1.0.conv2.weight: 0.6}
        policies:
          - {pruner: {instance_name: thr}, epochs: [0]}
          - {pruner: {instance_name: lvl}, epochs: [1]}
        """
    )
    recipe = load_recipe(path)
    thr, lvl = recipe.pruners["thr"], recipe.pruners["lvl"]
    assert isinstance(thr, MagnitudePrunerConfig) and thr.thresholds is not None
    assert isinstance(lvl, MagnitudePrunerConfig) and lvl.levels is not None
    resolved = resolve(recipe, resnet18, epochs=2)
    (a0,), (a1,) = resolved.epochs[0].prune, resolved.epochs[1].prune
    assert a0.quantity == "threshold"
    assert a0.per_param == {"fc.weight": 0.01, "conv1.weight": 0.02}
    assert a1.quantity == "sparsity"
    assert a1.per_param == {"layer1.0.conv1.weight": 0.4, "layer1.0.conv2.weight": 0.6}


def test_regularizers(write: Write, resnet18: torch.nn.Module) -> None:
    path = write(
        """
        version: 1
        regularizers:
          bn:
            class: L1Regularizer
            reg_regims:
              module.bn1.weight: 0.0001
              module.layer1.0.bn1.weight: 0.0002
          lasso:
            class: GroupLassoRegularizer
            reg_regims:
              module.layer1.0.conv1.weight: [0.00002, Channels]
        policies:
          - {regularizer: {instance_name: bn}, starting_epoch: 0, ending_epoch: 3}
          - {regularizer: {instance_name: lasso}, starting_epoch: 1, ending_epoch: 4, frequency: 2}
        """
    )
    recipe = load_recipe(path)
    bn, lasso = recipe.regularizers["bn"], recipe.regularizers["lasso"]
    assert isinstance(bn, L1RegularizerConfig) and isinstance(lasso, GroupLassoRegularizerConfig)
    assert lasso.groups == {"module.layer1.0.conv1.weight": "channels"}
    resolved = resolve(recipe, resnet18)
    assert resolved.num_epochs == 4 and resolved.epochs_source == "derived"
    assert resolved.strengths["bn"] == {"bn1.weight": 1e-4, "layer1.0.bn1.weight": 2e-4}
    assert resolved.strengths["lasso"] == {"layer1.0.conv1.weight": 2e-5}
    assert [e.regularize for e in resolved.epochs] == [["bn"], ["bn", "lasso"], ["bn"], ["lasso"]]


LR_CASES = [
    (
        "StepLR",
        "step_size: 2\n            gamma: 0.5",
        torch.optim.lr_scheduler.StepLR,
        {"step_size": 2, "gamma": 0.5},
    ),
    (
        "MultiStepLR",
        "milestones: [1, 3]",
        torch.optim.lr_scheduler.MultiStepLR,
        {"milestones": [1, 3]},
    ),
    ("ExponentialLR", "gamma: 0.9", torch.optim.lr_scheduler.ExponentialLR, {"gamma": 0.9}),
    ("CosineAnnealingLR", "T_max: 5", torch.optim.lr_scheduler.CosineAnnealingLR, {"T_max": 5}),
    (
        "PolynomialLR",
        "T_max: 4\n            power: 2.0",
        torch.optim.lr_scheduler.PolynomialLR,
        {"total_iters": 4, "power": 2.0},
    ),
]


@pytest.mark.parametrize(
    ("cls", "args", "torch_cls", "torch_kwargs"), LR_CASES, ids=[c[0] for c in LR_CASES]
)
def test_lr_schedulers_match_torch(
    write: Write,
    resnet18: torch.nn.Module,
    cls: str,
    args: str,
    torch_cls: type,
    torch_kwargs: dict,
) -> None:
    path = write(
        f"""
        version: 1
        lr_schedulers:
          lr:
            class: {cls}
            {args}
        policies:
          - lr_scheduler: {{instance_name: lr}}
            starting_epoch: 0
            ending_epoch: 6
        """
    )
    resolved = resolve(load_recipe(path), resnet18)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    ref = torch_cls(opt, **torch_kwargs)
    expected = []
    for _ in range(6):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    assert [e.lr for e in resolved.epochs] == pytest.approx(expected)
    assert resolved.epochs[3].lr_step == ["lr"]


def test_lr_policy_window_only_steps_inside(write: Write, resnet18: torch.nn.Module) -> None:
    path = write(
        """
        lr_schedulers:
          lr: {class: StepLR, step_size: 1, gamma: 0.1}
        policies:
          - lr_scheduler: {instance_name: lr}
            starting_epoch: 2
            ending_epoch: 4
        """
    )
    resolved = resolve(load_recipe(path), resnet18, epochs=6)
    # Steps after epochs 2 and 3 only, with the absolute epoch as Distiller does
    # (step(epoch=current_epoch + 1)): after epoch 2 the LR is 0.1·0.1^3, after epoch 3 0.1·0.1^4.
    assert [e.lr for e in resolved.epochs] == pytest.approx([0.1, 0.1, 0.1, 1e-4, 1e-5, 1e-5])


def test_late_lr_policy_uses_the_absolute_epoch_and_no_policy_means_constant(
    write: Write, resnet18: torch.nn.Module
) -> None:
    """Distiller's numbers: ExponentialLR(0.9) from epoch 12 gives 0.1·0.9^14 = 0.0229 at epoch
    14 (counting active epochs would give 0.1·0.9^2 = 0.081); without any LR policy the LR is
    constant, as Distiller keeps it."""
    path = write(
        """
        lr_schedulers:
          decay: {class: ExponentialLR, gamma: 0.9}
        policies:
          - lr_scheduler: {instance_name: decay}
            starting_epoch: 12
            ending_epoch: 30
        """
    )
    lrs = [e.lr for e in resolve(load_recipe(path), resnet18, epochs=20).epochs]
    assert lrs[:13] == pytest.approx([0.1] * 13)
    assert lrs[14] == pytest.approx(0.1 * 0.9**14) and round(lrs[14], 4) == 0.0229
    assert lrs[19] == pytest.approx(0.1 * 0.9**19)
    plain = write(
        """
        pruners:
          p: {class: AutomatedGradualPruner, initial_sparsity: 0.1, final_sparsity: 0.5,
              weights: [module.fc.weight]}
        policies:
          - pruner: {instance_name: p}
            starting_epoch: 0
            ending_epoch: 4
        """
    )
    assert {e.lr for e in resolve(load_recipe(plain), resnet18, epochs=10).epochs} == {0.1}


def test_network_slimming_extension(write: Write, resnet18: torch.nn.Module) -> None:
    path = write(
        """
        version: 1
        pruners:
          slim:
            class: NetworkSlimmingPruner
            desired_sparsity: 0.4
        policies:
          - {pruner: {instance_name: slim}, epochs: [5]}
        """
    )
    recipe = load_distiller(path)
    p = recipe.pruners["slim"]
    assert isinstance(p, SlimPrunerConfig) and p.percent == 0.4 and p.params is None
    resolved = resolve(recipe, resnet18)
    assert resolved.num_epochs == 6
    assert len(resolved.targets["slim"]) == 20  # every BatchNorm of resnet18
    assert resolved.epochs[5].prune[0].sparsity == pytest.approx(0.4)


def test_inner_data_parallel_prefix(write: Write) -> None:
    """AlexNet-style ``features.module.0.weight`` (DataParallel around a submodule)."""
    path = write(
        _pruner_yaml(
            """
        class: AutomatedGradualPruner
        initial_sparsity: 0.0
        final_sparsity: 0.5
        weights: [features.module.0.weight, classifier.1.weight]
"""
        )
    )
    model = torchvision.models.alexnet(weights=None)
    resolved = resolve(load_recipe(path), model, epochs=8)
    assert resolved.targets["p"] == ["features.0.weight", "classifier.1.weight"]


def test_format_detection(write: Write) -> None:
    distiller = write(
        """
        pruners:
          p: {class: AutomatedGradualPruner, initial_sparsity: 0.0, final_sparsity: 0.5,
              weights: [conv1.weight]}
        """
    )
    assert load_recipe(distiller).source.format == "distiller"
    with pytest.raises(ConfigError, match=r"pruner 'p' needs a 'method' key \(one of: magnitude, "):
        load_recipe(distiller, format="native")
    native = write("pruners:\n  p: {method: magnitude, final_sparsity: 0.5}\n", "n.yaml")
    assert load_recipe(native).source.format == "native"
    with pytest.raises(ConfigError, match="needs a 'class' key"):
        load_recipe(native, format="distiller")


def test_threshold_criteria_is_read(write: Write) -> None:
    path = write(
        """
        regularizers:
          r:
            class: L1Regularizer
            reg_regims: {module.conv1.weight: 0.001}
            threshold_criteria: Mean_Abs
        """
    )
    reg = load_recipe(path).regularizers["r"]
    assert isinstance(reg, L1RegularizerConfig) and reg.threshold == "mean_abs"
