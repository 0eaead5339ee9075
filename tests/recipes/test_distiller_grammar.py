"""Distiller's schedule grammar as its config.py reads it: every field, every class, and one
precise line for what prunekit refuses."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from prunekit.errors import ConfigError
from prunekit.recipes import _distiller_schema as ds
from prunekit.recipes import load_recipe, resolve
from prunekit.recipes.native import (
    GroupLassoRegularizerConfig,
    GroupPrunerConfig,
    GroupVarianceRegularizerConfig,
    MagnitudePrunerConfig,
    RampThresholdPrunerConfig,
    SplicingPrunerConfig,
    StructuredPrunerConfig,
)
from prunekit.zoo import build

Write = Callable[[str], Path]


@pytest.fixture(scope="module")
def resnet20() -> torch.nn.Module:
    return build("resnet20_cifar")


def _one(write: Write, pruner: str, args: str = "", epochs: str = "epochs: [0]") -> Path:
    return write(
        f"""
        version: 1
        pruners:
          p:
{pruner}
        policies:
          - pruner:
              instance_name: p
{args}
            {epochs}
        """
    )


def test_weights_written_as_a_string(write: Write, resnet20: torch.nn.Module) -> None:
    path = _one(
        write,
        """            class: AutomatedGradualPruner
            initial_sparsity: 0.1
            final_sparsity: 0.5
            weights: module.fc.weight""",
        epochs="starting_epoch: 0\n            ending_epoch: 4\n            frequency: 1",
    )
    recipe = load_recipe(path)
    assert recipe.pruners["p"].params == ["module.fc.weight"]
    assert resolve(recipe, resnet20).targets["p"] == ["fc.weight"]


ARGS = """              args:
                keep_mask: true
                mini_batch_pruning_frequency: 4
                mask_on_forward_only: true
                mask_gradients: true
                use_double_copies: true
                discard_masks_at_minibatch_end: true
                skip_first_minibatch: true"""


def test_pruning_policy_args_become_masking(write: Write) -> None:
    path = _one(
        write,
        """            class: SensitivityPruner
            sensitivities: {'*': 0.5}""",
        ARGS,
    )
    m = load_recipe(path).policies[0].masking
    assert m is not None
    assert (m.every_steps, m.forward_only, m.mask_gradients, m.double_copies) == (
        4,
        True,
        True,
        True,
    )
    assert (m.discard, m.keep, m.skip_first_step) == (True, True, True)


def test_args_without_forward_only_change_nothing(write: Write) -> None:
    """Distiller re-masks after every step unless mask_on_forward_only: two copies and keep_mask
    are then no-ops, a zero mini_batch_pruning_frequency means 'off'."""
    path = _one(
        write,
        """            class: SensitivityPruner
            sensitivities: {'*': 0.5}""",
        "              args: {use_double_copies: true, keep_mask: true, "
        "mini_batch_pruning_frequency: 0}",
    )
    assert load_recipe(path).policies[0].masking is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("{mask_gradients: true}", "mask_gradients needs mask_on_forward_only: true"),
        ("{keep_masks: true}", "unknown key 'keep_masks' in policy #1 — did you mean 'keep_mask'?"),
        ("{fold_batchnorm: true}", "args.fold_batchnorm ranks BN-folded weights"),
        ("{levels: {'*': 0.5}}", "args.levels only changes a SparsityLevelParameterPruner"),
    ],
)
def test_bad_policy_args_one_line(write: Write, args: str, message: str) -> None:
    path = _one(
        write,
        """            class: SensitivityPruner
            sensitivities: {'*': 0.5}""",
        f"              args: {args}",
    )
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_levels_arg_overrides_a_level_pruner_per_policy(write: Write) -> None:
    path = write(
        """
        pruners:
          lvl:
            class: SparsityLevelParameterPruner
            levels: {module.fc.weight: 0.3}
        policies:
          - pruner: {instance_name: lvl}
            epochs: [0]
          - pruner:
              instance_name: lvl
              args: {levels: {module.fc.weight: 0.6}}
            epochs: [2]
        """
    )
    recipe = load_recipe(path)
    names = [p.pruner for p in recipe.policies]
    assert names[0] == "lvl" and names[1] != "lvl"
    assert recipe.pruners[names[1]].levels == {"module.fc.weight": 0.6}  # type: ignore[union-attr]
    assert recipe.pruners["lvl"].rounding == "floor"  # type: ignore[union-attr]


def test_regularizer_threshold_criteria_and_keep_mask(write: Write) -> None:
    path = write(
        """
        regularizers:
          lasso:
            class: GroupLassoRegularizer
            threshold_criteria: Max
            reg_regims:
              module.layer1.0.conv1.weight: [0.001, '3D']
        policies:
          - regularizer:
              instance_name: lasso
              args: {keep_mask: true}
            starting_epoch: 0
            ending_epoch: 3
            frequency: 1
        """
    )
    recipe = load_recipe(path)
    reg = recipe.regularizers["lasso"]
    assert isinstance(reg, GroupLassoRegularizerConfig) and reg.threshold == "max"
    assert recipe.policies[0].masking is not None and recipe.policies[0].masking.keep


def test_group_lasso_groups_2d_4d_and_combined(write: Write, resnet20: torch.nn.Module) -> None:
    path = write(
        """
        regularizers:
          lasso:
            class: GroupLassoRegularizer
            reg_regims:
              module.layer1.0.conv1.weight: [0.001, '2D']
              module.layer1.0.conv2.weight: [0.001, '4D']
              module.layer1.1.conv1.weight: [0.001, 'Channels+4D']
              module.fc.weight: [0.002, 'Rows+Cols']
          variance:
            class: GroupVarianceRegularizer
            reg_regims: {module.layer2.0.conv2.weight: [0.0001, 'Channels']}
        policies:
          - {regularizer: {instance_name: lasso}, starting_epoch: 0, ending_epoch: 2, frequency: 1}
          - {regularizer: {instance_name: variance}, epochs: [0]}
        """
    )
    recipe = load_recipe(path)
    lasso = recipe.regularizers["lasso"]
    assert isinstance(lasso, GroupLassoRegularizerConfig)
    assert lasso.groups == {
        "module.layer1.0.conv1.weight": "kernels",
        "module.layer1.0.conv2.weight": "layer",
        "module.layer1.1.conv1.weight": ["channels", "layer"],
        "module.fc.weight": ["rows", "cols"],
    }
    assert isinstance(recipe.regularizers["variance"], GroupVarianceRegularizerConfig)
    assert resolve(recipe, resnet20).strengths["lasso"]["fc.weight"] == 0.002


def test_blocks_with_kwargs(write: Write, resnet20: torch.nn.Module) -> None:
    body = """            class: L1RankedStructureParameterPruner_AGP
            initial_sparsity: 0.1
            final_sparsity: 0.5
            group_type: Blocks
            weights: [module.layer2.1.conv1.weight]"""
    epochs = "starting_epoch: 0\n            ending_epoch: 4\n            frequency: 1"
    ok = load_recipe(
        _one(write, body + "\n            kwargs: {block_shape: [1, 8, 1, 1]}", epochs=epochs)
    )
    p = ok.pruners["p"]
    assert isinstance(p, GroupPrunerConfig) and (p.group, p.block_shape) == ("blocks", [1, 8, 1, 1])
    with pytest.raises(ConfigError, match=r"group_type Blocks needs kwargs: \{block_shape"):
        load_recipe(_one(write, body, epochs=epochs))


def test_duplicate_key_does_not_hide_other_errors(write: Write) -> None:
    path = write(
        """
        version: 1
        regularizers:
          r:
            class: L1Regularizer
            reg_regims:
              module.conv1.weight: 0.1
              module.conv1.weight: 0.2
        pruners:
          p:
            class: AutomatedGradualPruner
            initial_sparsity: 0.1
            final_sparsity: 1.5
            weights: [module.conv1.weight]
        """
    )
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    lines = str(info.value).splitlines()
    assert len(lines) == 2, lines
    assert lines[0].endswith("(first defined at line 6); rename or remove one")
    assert ":7: duplicate key 'module.conv1.weight'" in lines[0]
    assert ":12: 'final_sparsity' in pruner 'p' must be in [0, 1), got 1.5" in lines[1]


def test_refused_and_unknown_classes_one_line_each_others_still_checked(write: Write) -> None:
    path = write(
        """
        pruners:
          fm:
            class: FMReconstructionChannelPruner
            group_type: Channels
            desired_sparsity: 0.5
            weights: [module.conv1.weight]
          typo:
            class: AutomatedGradualPrunr
          bad:
            class: SensitivityPruner
            sensitivities: {'*': -1}
        lr_schedulers:
          plateau: {class: ReduceLROnPlateau, mode: min}
        policies:
          - {pruner: {instance_name: fm}, epochs: [0]}
          - {lr_scheduler: {instance_name: plateau}, epochs: [0]}
        """
    )
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    lines = str(info.value).splitlines()
    assert len(lines) == 4, lines
    assert ":3: FMReconstructionChannelPruner is not supported" in lines[0]
    assert "use L1RankedStructureParameterPruner with group_type: Channels" in lines[0]
    assert ":8: unsupported class 'AutomatedGradualPrunr' in pruner 'typo'" in lines[1]
    assert ":11: 'sensitivities['*']' in pruner 'bad' must be > 0" in lines[2]
    assert ":13: ReduceLROnPlateau is not supported" in lines[3] and "use StepLR" in lines[3]


def test_first_reg_regims_grammar_of_ranked_pruner(write: Write, resnet20: torch.nn.Module) -> None:
    path = _one(
        write,
        """            class: L1RankedStructureParameterPruner
            reg_regims:
              module.layer1.0.conv1.weight: [0.5, '3D']
              module.layer2.0.conv1.weight: [0.25, 'Filters']
              module.fc.weight: [0.5, 'Rows']""",
    )
    recipe = load_recipe(path)
    filters, rows = recipe.pruners["p[filters]"], recipe.pruners["p[cols]"]
    assert isinstance(filters, StructuredPrunerConfig) and filters.ranking == "own"
    assert filters.levels == {
        "module.layer1.0.conv1.weight": 0.5,
        "module.layer2.0.conv1.weight": 0.25,
    }
    assert isinstance(rows, GroupPrunerConfig) and rows.group == "cols"
    assert [p.pruner for p in recipe.policies] == ["p[filters]", "p[cols]"]
    action = resolve(recipe, resnet20).epochs[0].prune[0]
    assert action.per_param == {"layer1.0.conv1.weight": 0.5, "layer2.0.conv1.weight": 0.25}


def test_structure_remover_needs_its_function(write: Write) -> None:
    path = write(
        """
        extensions:
          thin: {class: StructureRemover, arch: resnet20_cifar, dataset: cifar10}
        policies:
          - {extension: {instance_name: thin}, epochs: [1]}
        """
    )
    with pytest.raises(ConfigError, match="StructureRemover needs thinning_func_str"):
        load_recipe(path)


def test_not_a_schedule_says_so_in_one_line(write: Write) -> None:
    amc = write("network:\n  resnet20_cifar: [module.layer1.0.conv2]\n  mobilenet: [module.fc]\n")
    stats = write(
        "conv1:\n  inputs: {0: {min: -2.1, max: 2.6}}\n  output: {min: -5.0, max: 4.1}\n"
        "fc:\n  output: {min: -9.9, max: 12.0}\n",
        "stats.yaml",
    )
    for path in (amc, stats):
        for fmt in ("auto", "distiller"):
            with pytest.raises(ConfigError) as info:
                load_recipe(path, format=fmt)
            message = str(info.value)
            assert "\n" not in message and "this is not a compression schedule" in message


def test_quantizers_refused_or_skipped(write: Write, resnet20: torch.nn.Module) -> None:
    path = write(
        """
        quantizers:
          q: {class: DorefaQuantizer, bits_weights: 4}
        pruners:
          p: {class: AutomatedGradualPruner, initial_sparsity: 0.1, final_sparsity: 0.5,
              weights: [module.fc.weight]}
        policies:
          - {quantizer: {instance_name: q}, starting_epoch: 0, ending_epoch: 4, frequency: 1}
          - {pruner: {instance_name: p}, starting_epoch: 0, ending_epoch: 4, frequency: 1}
        """
    )
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    assert str(info.value).count("\n") == 0 and "--skip-quantizers" in str(info.value)
    recipe = load_recipe(path, skip_quantizers=True)
    assert [p.target for p in recipe.policies] == ["p"]
    warnings = resolve(recipe, resnet20).warnings
    assert any("quantizers skipped (q; 1 policies)" in w for w in warnings)


# Every pruner class prunekit reads, with the smallest body Distiller accepts, converts to a
# native pruner that resolves on resnet20_cifar.
_FILTERS = "group_type: Filters\n            weights: [module.layer1.0.conv1.weight]"
_AGP = "initial_sparsity: 0.1\n            final_sparsity: 0.5\n            "
BODIES = {
    "AutomatedGradualPruner": _AGP + "weights: [module.fc.weight]",
    "L1RankedStructureParameterPruner_AGP": _AGP + _FILTERS,
    "L2RankedStructureParameterPruner_AGP": _AGP + _FILTERS,
    "ActivationAPoZRankedFilterPruner_AGP": _AGP + _FILTERS,
    "ActivationMeanRankedFilterPruner_AGP": _AGP + _FILTERS,
    "GradientRankedFilterPruner_AGP": _AGP + _FILTERS,
    "RandomRankedFilterPruner_AGP": _AGP + _FILTERS,
    "BernoulliFilterPruner_AGP": _AGP + _FILTERS,
    "L1RankedStructureParameterPruner": "desired_sparsity: 0.5\n            " + _FILTERS,
    "L2RankedStructureParameterPruner": "desired_sparsity: 0.5\n            " + _FILTERS,
    "ActivationAPoZRankedFilterPruner": "desired_sparsity: 0.5\n            " + _FILTERS,
    "ActivationMeanRankedFilterPruner": "desired_sparsity: 0.5\n            " + _FILTERS,
    "GradientRankedFilterPruner": "desired_sparsity: 0.5\n            " + _FILTERS,
    "RandomRankedFilterPruner": "desired_sparsity: 0.5\n            " + _FILTERS,
    "BernoulliFilterPruner": "desired_sparsity: 0.5\n            " + _FILTERS,
    "RandomLevelStructureParameterPruner": "sparsity_range: [0.1, 0.2]\n            " + _FILTERS,
    "SensitivityPruner": "sensitivities: {'*': 0.5}",
    "SplicingPruner": "sensitivities: {'*': 0.1}\n            low_thresh_mult: 0.9\n"
    "            hi_thresh_mult: 1.1",
    "MagnitudeParameterPruner": "thresholds: {'*': 0.01}",
    "SparsityLevelParameterPruner": "levels: {module.fc.weight: 0.5}",
    "StructureParameterPruner": "threshold_criteria: Mean_Abs\n            reg_regims:\n"
    "              module.layer1.0.conv1.weight: [0.01, '2D']",
    "BaiduRNNPruner": _AGP + "q: 0.1\n            ramp_epoch: 2\n            ramp_slope_mult: 2\n"
    "            weights: [module.fc.weight]",
    "NetworkSlimmingPruner": "desired_sparsity: 0.3",
}


def test_every_pruner_class_has_a_body() -> None:
    assert sorted(BODIES) == sorted(ds.PRUNER_CLASSES)


@pytest.mark.parametrize("cls", sorted(BODIES))
def test_every_pruner_class_converts_and_resolves(
    write: Write, resnet20: torch.nn.Module, cls: str
) -> None:
    forward = "              args: {mask_on_forward_only: true}" if "Bernoulli" in cls else ""
    epochs = "starting_epoch: 0\n            ending_epoch: 6\n            frequency: 2"
    path = _one(write, f"            class: {cls}\n            {BODIES[cls]}", forward, epochs)
    recipe = load_recipe(path)
    resolved = resolve(recipe, resnet20)
    events = [a for e in resolved.epochs for a in e.prune]
    assert len(events) == 3 * len(recipe.pruners), cls
    kinds = {type(p) for p in recipe.pruners.values()}
    if cls == "BaiduRNNPruner":
        assert kinds == {RampThresholdPrunerConfig}
    elif cls == "SplicingPruner":
        assert kinds == {SplicingPrunerConfig}
    elif cls in ("AutomatedGradualPruner", "SparsityLevelParameterPruner"):
        assert kinds == {MagnitudePrunerConfig}


def test_every_distiller_pruner_and_lr_class_converts() -> None:
    """The converter dispatches through one table per section: every pruner and LR scheduler
    class the schema accepts has an entry (a new schema class without one fails here)."""
    import inspect

    from prunekit.recipes import _distiller_schema as ds
    from prunekit.recipes import distiller

    def covered(cls: type, table: dict) -> bool:
        return any(c in table for c in cls.__mro__)

    lr = [c for _, c in inspect.getmembers(ds, inspect.isclass) if c.__name__.endswith("LR")]
    assert len(lr) >= 6 and all(covered(c, distiller._LR) for c in lr)
    # DRankedRegims / DStructurePruner expand to several native pruners before this table.
    multi = (ds.DRankedRegims, ds.DStructurePruner)
    pruners = [c for c in ds._PRUNER_MODELS if c not in multi]
    assert len(pruners) >= 12 and all(covered(c, distiller._PRUNERS) for c in pruners)
