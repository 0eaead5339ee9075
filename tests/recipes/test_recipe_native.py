"""Native recipe format: parsing, defaults, JSON round trip."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from prunekit.errors import ConfigError
from prunekit.recipes import Recipe, load_native, load_recipe
from prunekit.recipes.native import MagnitudePrunerConfig, SlimPrunerConfig, StructuredPrunerConfig

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "recipes"

FULL = """
version: 1
name: demo
model: zoo:vgg19
data: {dataset: digits, batch_size: 32}
training:
  epochs: 12
  lr: 1e-2
  weight_decay: 5e-5
pruners:
  fine:
    method: magnitude
    schedule: agp
    initial_sparsity: 0.1
    final_sparsity: 0.8
    params: ["features.*.weight"]
  slim:
    method: slim
    percent: 0.5
regularizers:
  bn: {kind: bn_l1, strength: 1e-4}
lr_schedules: {}
distillation: {temperature: 2, alpha: 0.5}
policies:
  - {pruner: fine, starting_epoch: 0, ending_epoch: 6, frequency: 2}
  - {regularizer: bn, ending_epoch: 8}
  - {pruner: slim, epochs: [8]}
"""


def test_full_recipe_parses_with_types_and_defaults(write: Callable[[str], Path]) -> None:
    recipe = load_native(write(FULL))
    assert recipe.name == "demo"
    assert recipe.model is not None and recipe.model.spec == "zoo:vgg19"  # shorthand
    assert recipe.model.kwargs == {} and recipe.model.input_shape is None
    assert recipe.data is not None and recipe.data.batch_size == 32 and recipe.data.augment
    # PyYAML alone reads "1e-2" as a string; the recipe loader reads it as a float.
    assert recipe.training.lr == pytest.approx(0.01)
    assert recipe.training.weight_decay == pytest.approx(5e-5)
    assert recipe.training.momentum == 0.9 and recipe.training.schedule is None
    fine = recipe.pruners["fine"]
    assert isinstance(fine, MagnitudePrunerConfig)
    assert (fine.schedule, fine.initial_sparsity, fine.final_sparsity) == ("agp", 0.1, 0.8)
    assert isinstance(recipe.pruners["slim"], SlimPrunerConfig)
    assert recipe.pruners["slim"].sparsity_range() == (0.0, 0.5)
    assert recipe.distillation is not None and recipe.distillation.teacher == "dense"
    assert [p.kind for p in recipe.policies] == ["pruner", "regularizer", "pruner"]
    assert [p.target for p in recipe.policies] == ["fine", "bn", "slim"]
    assert recipe.source.format == "native"
    assert recipe.source.line(("pruners", "slim"), key=True) == 16  # the key
    assert recipe.source.line(("pruners", "slim")) == 17  # its value (a block mapping)
    assert recipe.source.line(("pruners", "slim", "percent", "nested")) == 18  # longest prefix


def test_json_round_trip_is_lossless(write: Callable[[str], Path]) -> None:
    recipe = load_native(write(FULL))
    text = recipe.to_json()
    again = Recipe.from_json(text)
    assert again.model_dump() == recipe.model_dump()  # private source map differs
    assert again.to_json() == text


@pytest.mark.parametrize("path", sorted(EXAMPLES.rglob("*.yaml")), ids=lambda p: p.name)
def test_every_example_round_trips_through_json(path: Path) -> None:
    recipe = load_recipe(path, skip_quantizers=True)
    again = Recipe.from_json(recipe.to_json())
    assert again.model_dump() == recipe.model_dump()
    assert again.policies and (again.pruners or again.regularizers or again.lr_schedules)


def test_from_json_reports_bad_json_with_line() -> None:
    with pytest.raises(ConfigError, match=r"<json>:2: invalid JSON"):
        Recipe.from_json('{"pruners": {},\n "policies": [}')


def test_validation_from_python_dicts() -> None:
    recipe = Recipe.model_validate(
        {
            "pruners": {
                "s": {"method": "structured", "final_sparsity": 0.3, "modules": ["layer*"]}
            },
            "policies": [{"pruner": "s", "epochs": [0]}],
        }
    )
    pruner = recipe.pruners["s"]
    assert isinstance(pruner, StructuredPrunerConfig)
    assert (pruner.criterion, pruner.target, pruner.floor, pruner.surgery) == (
        "l1",
        "filters",
        1,
        True,
    )


def test_strict_types_reject_quoted_numbers(write: Callable[[str], Path]) -> None:
    path = write(
        """
        pruners:
          p: {method: magnitude, final_sparsity: "0.5"}
        """
    )
    with pytest.raises(ConfigError, match=r"recipe.yaml:2: 'final_sparsity' in pruner 'p' must be"):
        load_native(path)


def test_json_file_loads_like_yaml(write: Callable[[str], Path], tmp_path: Path) -> None:
    recipe = load_native(write(FULL))
    path = tmp_path / "recipe.json"
    path.write_text(recipe.to_json())
    again = load_recipe(path)
    assert again.model_dump() == recipe.model_dump()
    assert again.source.line(("pruners", "slim")) is not None  # JSON lines are tracked too


def test_docs_example_is_valid(tmp_path: Path) -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "recipes.md"
    text = docs.read_text(encoding="utf-8").split("### Example", 1)[1]
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "docs_example.yaml"
    path.write_text(block)
    recipe = load_recipe(path)
    assert recipe.name == "vgg19-slimming"
    assert recipe.pruners["slim70"].method == "slim"
