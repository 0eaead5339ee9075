"""Malformed recipes: every error is ONE line naming the file, the line and the problem."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torchvision

from prunekit.errors import ConfigError
from prunekit.recipes import load_recipe, resolve

P1 = """
        pruners:
          p1: {method: magnitude, final_sparsity: 0.5}
"""

# (id, YAML text, expected line, expected fragment of the message)
CASES = [
    (
        "unknown-key",
        """
        pruners:
          p1:
            method: magnitude
            final_sparsity: 0.5
            colour: red
        """,
        5,
        "unknown key 'colour' in pruner 'p1' (allowed: ",
    ),
    (
        "typo-with-suggestion",
        """
        pruners:
          agp1:
            method: magnitude
            schedule: agp
            final_sparsty: 0.9
        """,
        5,
        "unknown key 'final_sparsty' in pruner 'agp1' — did you mean 'final_sparsity'?",
    ),
    (
        "out-of-range",
        """
        pruners:
          agp1:
            method: magnitude
            final_sparsity: 1.3
        """,
        4,
        "'final_sparsity' in pruner 'agp1' must be in [0, 1), got 1.3",
    ),
    (
        "wrong-type",
        """
        training:
          epochs: 10
          lr: fast
        """,
        3,
        "'lr' in section 'training' must be a valid number, got 'fast'",
    ),
    (
        "missing-required",
        """
        pruners:
          s:
            method: slim
            floor: 2
        """,
        2,
        "pruner 's' is missing required key 'percent'",
    ),
    (
        "undefined-pruner",
        """
        pruners:
          p1: {method: magnitude, final_sparsity: 0.5}
          p2: {method: magnitude, final_sparsity: 0.6}
        policies:
          - pruner: p1
            epochs: [0]
          - pruner: p9
            epochs: [1]
        """,
        7,
        "policy #2: names pruner 'p9' which is not defined (defined: p1, p2)",
    ),
    (
        "ending-before-starting",
        P1
        + """\
        policies:
          - pruner: p1
            starting_epoch: 10
            ending_epoch: 5
        """,
        6,
        "ending_epoch 5 < starting_epoch 10",
    ),
    (
        "bad-frequency",
        P1
        + """\
        policies:
          - pruner: p1
            frequency: 0
        """,
        5,
        "'frequency' in policy #1 must be > 0, got 0",
    ),
    (
        "negative-epoch",
        P1
        + """\
        policies:
          - pruner: p1
            epochs: [3, -1]
        """,
        5,
        "'epochs[1]' in policy #1 must be >= 0, got -1",
    ),
    ("empty-file", "\n# nothing here\n", 1, "the file is empty"),
    (
        "top-level-unknown-key",
        """
        pruners: {}
        polices: []
        """,
        2,
        "unknown key 'polices' in the recipe — did you mean 'policies'?",
    ),
    (
        "yaml-syntax",
        """
        pruners:
          p1: {method: magnitude, final_sparsity: 0.5
        policies: []
        """,
        3,
        "YAML syntax error",
    ),
    ("top-level-list", "- pruner: p1\n- pruner: p2\n", 1, "must be a YAML mapping"),
    (
        "duplicate-pruner",
        """
        pruners:
          p1: {method: magnitude, final_sparsity: 0.5}
          p1: {method: magnitude, final_sparsity: 0.7}
        """,
        3,
        "duplicate key 'p1' in section 'pruners' (first defined at line 2)",
    ),
    (
        "unknown-method",
        """
        pruners:
          p1:
            method: magnitud
            final_sparsity: 0.5
        """,
        3,
        "unsupported method 'magnitud' in pruner 'p1' — did you mean 'magnitude'?",
    ),
    (
        "literal-choice",
        """
        pruners:
          p1:
            method: structured
            criterion: l3norm
            final_sparsity: 0.5
        """,
        4,
        "'criterion' in pruner 'p1' must be a registered criterion (",
    ),
    (
        "policy-names-two",
        P1
        + """\
        regularizers:
          r: {kind: bn_l1, strength: 1e-4}
        policies:
          - pruner: p1
            regularizer: r
        """,
        6,
        "must name exactly one of 'pruner', 'regularizer', 'lr_schedule' (got pruner, regularizer)",
    ),
    (
        "model-namespace",
        """
        model:
          spec: resnet18
        """,
        2,
        "needs a namespace, e.g. 'torchvision:resnet18'",
    ),
    (
        "lr-conflict",
        """
        training:
          schedule: cosine
        lr_schedules:
          d: {kind: step, step_size: 5}
        policies:
          - lr_schedule: d
        """,
        2,
        "training.schedule 'cosine' and lr_schedule policies both set the LR",
    ),
    (
        "initial-above-final",
        """
        pruners:
          p1:
            method: magnitude
            schedule: agp
            initial_sparsity: 0.6
            final_sparsity: 0.5
        """,
        5,
        "initial_sparsity 0.6 > final_sparsity 0.5",
    ),
    (
        "distiller-unknown-class",
        """
        version: 1
        pruners:
          fancy:
            class: FancyPruner
            weights: [module.conv1.weight]
        """,
        4,
        "unsupported class 'FancyPruner' in pruner 'fancy' (supported: AutomatedGradualPruner",
    ),
    (
        "distiller-quantizers",
        """
        version: 1
        quantizers:
          q:
            class: QuantAwareTrainRangeLinearQuantizer
        """,
        2,
        "quantization is not supported: prunekit does not quantize; pass --skip-quantizers",
    ),
    (
        "distiller-undefined-instance",
        """
        version: 1
        pruners:
          agp:
            class: AutomatedGradualPruner
            initial_sparsity: 0.05
            final_sparsity: 0.5
            weights: [module.conv1.weight]
        policies:
          - pruner:
              instance_name: nope
            epochs: [0]
        """,
        10,
        "policy #1: names pruner 'nope' which is not defined (defined: agp)",
    ),
    (
        "distiller-typo",
        """
        version: 1
        pruners:
          agp:
            class: AutomatedGradualPruner
            initial_sparsity: 0.05
            final_sparsty: 0.5
            weights: [module.conv1.weight]
        """,
        6,
        "unknown key 'final_sparsty' in pruner 'agp' — did you mean 'final_sparsity'?",
    ),
    (
        "distiller-lasso-2d",
        """
        version: 1
        regularizers:
          lasso:
            class: GroupLassoRegularizer
            reg_regims:
              module.conv1.weight: [0.0001, '2Dx']
        """,
        6,
        "group type '2Dx' is not one of Distiller's (2D, 3D, 4D,",
    ),
    (
        "distiller-ending-before-starting",
        """
        version: 1
        lr_schedulers:
          lr: {class: StepLR, step_size: 5}
        policies:
          - lr_scheduler:
              instance_name: lr
            starting_epoch: 20
            ending_epoch: 20
        """,
        8,
        "ending_epoch 20 == starting_epoch 20",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_malformed_recipe_gives_one_line_error(
    write: Callable[[str], Path], text: str, line: int, fragment: str
) -> None:
    path = write(text)
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(f"{path}:{line}: "), message
    assert fragment in message, message


# Errors that need the model: names resolved against real parameters.
MODEL_CASES = [
    (
        "distiller-unknown-weight",
        """
        version: 1
        pruners:
          agp:
            class: AutomatedGradualPruner
            initial_sparsity: 0.05
            final_sparsity: 0.5
            weights: [module.layer1.0.conv1.weight,
                      module.layer1.0.conv9.weight]
        policies:
          - pruner:
              instance_name: agp
            starting_epoch: 0
            ending_epoch: 4
            frequency: 2
        """,
        8,
        "'module.layer1.0.conv9.weight' (read as 'layer1.0.conv9.weight') matches no "
        "conv/linear weight of the model; close matches: layer1.0.conv2.weight, layer1.0.conv1.weight",
    ),
    (
        "native-glob-matches-nothing",
        """
        pruners:
          p:
            method: magnitude
            final_sparsity: 0.5
            modules: ["layer1.*.conv1", "layer9.*"]
        policies:
          - pruner: p
            epochs: [0]
        """,
        5,
        "'layer9.*' matches no conv/linear weight layer of the model",
    ),
    (
        "not-a-weight",
        """
        pruners:
          p:
            method: structured
            final_sparsity: 0.5
            params: [bn1.weight]
        policies:
          - pruner: p
            epochs: [0]
        """,
        5,
        "'bn1.weight' names something that is not a conv/linear weight",
    ),
    (
        "agp-single-epoch",
        """
        pruners:
          p:
            method: magnitude
            schedule: agp
            final_sparsity: 0.5
        policies:
          - pruner: p
            epochs: [3]
        """,
        7,
        "uses schedule 'agp', which needs at least 2 pruning epochs (got [3])",
    ),
    (
        "levels-missing-entry",
        """
        pruners:
          p:
            method: magnitude
            levels: {"layer1.*": 0.5}
            params: [fc.weight]
        policies:
          - pruner: p
            epochs: [0]
        """,
        4,
        "pruner 'p' acts on 'fc.weight' but 'levels' has no entry for it",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "fragment"), [c[1:] for c in MODEL_CASES], ids=[c[0] for c in MODEL_CASES]
)
def test_name_errors_point_at_the_recipe_line(
    write: Callable[[str], Path], text: str, line: int, fragment: str
) -> None:
    path = write(text)
    recipe = load_recipe(path)
    model = torchvision.models.resnet18(weights=None)
    with pytest.raises(ConfigError) as info:
        resolve(recipe, model, epochs=6)
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(f"{path}:{line}: "), message
    assert fragment in message, message


def test_several_errors_give_one_line_each(write: Callable[[str], Path]) -> None:
    path = write(
        """
        training:
          lr: -1.0
          momentum: 2.0
        """
    )
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    lines = str(info.value).splitlines()
    assert lines == [
        f"{path}:2: 'lr' in section 'training' must be greater than 0, got -1.0",
        f"{path}:3: 'momentum' in section 'training' must be less than 1, got 2.0",
    ]


def test_missing_file_and_bad_format() -> None:
    with pytest.raises(ConfigError, match=r"recipe file 'nope\.yaml' not found"):
        load_recipe("nope.yaml")
    with pytest.raises(ConfigError, match="unknown recipe format 'caffe'"):
        load_recipe("nope.yaml", format="caffe")
