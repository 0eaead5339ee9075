"""A criterion or allocator registered once is used by the Python API, native recipes and the
CLI alike, without touching any other file (issue 11's extension seams)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torchvision

import prunekit
from prunekit.allocators import ALLOCATORS, register_allocator
from prunekit.cli import main
from prunekit.importance import CRITERIA
from prunekit.pipeline import PruneConfig, prune
from prunekit.recipes import Executor, Recipe

CALLS: dict[str, int] = {}


@pytest.fixture()
def registered() -> Iterator[None]:
    """A toy criterion (filters with a larger index matter more) and a toy allocator (prune
    only groups of at least 64 units, by a quarter), registered for the test only."""

    @CRITERIA.register("test_index")
    def index_criterion(slot, tensor, ctx):
        CALLS["criterion"] = CALLS.get("criterion", 0) + 1
        return torch.as_tensor(slot.positions, dtype=torch.float64) if slot.dim == 0 else None

    @register_allocator("test_quarter_of_big")
    def quarter_of_big(req):
        CALLS["allocator"] = CALLS.get("allocator", 0) + 1
        return {g.id: g.size - g.size // 4 if g.size >= 64 else g.size for g in req.groups}

    CALLS.clear()
    try:
        yield
    finally:
        CRITERIA.remove("test_index")
        ALLOCATORS.remove("test_quarter_of_big")


def _big_groups_lose_a_quarter(model: torch.nn.Module, base: torch.nn.Module) -> None:
    for (name, a), (_, b) in zip(model.named_modules(), base.named_modules()):
        if isinstance(a, torch.nn.Conv2d) and name.endswith("conv1") and b.out_channels >= 64:
            assert a.out_channels == b.out_channels - b.out_channels // 4, name


def test_python_api(registered: None) -> None:
    model = torchvision.models.resnet18().eval()
    result = prune(model, torch.randn(1, 3, 32, 32),
                   PruneConfig(criterion="test_index", allocator="test_quarter_of_big"))  # fmt: skip
    assert CALLS["criterion"] > 0 and CALLS["allocator"] == 1
    _big_groups_lose_a_quarter(model, torchvision.models.resnet18())
    # the toy criterion keeps the highest filter indices
    g = next(g for g in result.graph.groups if len(result.plan.groups[g.id]["keep"]) < g.size)
    kept = result.plan.groups[g.id]["keep"]
    assert kept == list(range(g.size - len(kept), g.size))


def test_native_recipe(registered: None) -> None:
    recipe = Recipe.model_validate(
        {
            "training": {"epochs": 1},
            "pruners": {"p": {"method": "structured", "criterion": "test_index",
                              "allocator": "test_quarter_of_big", "final_sparsity": 0.25,
                              "params": ["layer1.0.conv1.weight"]}},
            "policies": [{"pruner": "p", "epochs": [0]}],
            "model": {"spec": "torchvision:resnet18", "input_shape": [1, 3, 32, 32]},
        }
    )  # fmt: skip
    assert recipe.pruners["p"].criterion == "test_index"
    result = Executor(recipe, device="cpu", progress=False).prune_only()
    assert CALLS["criterion"] > 0 and CALLS["allocator"] >= 1
    assert result.model.layer1[0].conv1.out_channels == 64 - 16


def test_cli(registered: None, tmp_path: Path) -> None:
    args = ["prune", "--model", "torchvision:resnet18", "--input-shape", "1,3,32,32",
            "--criterion", "test_index", "--allocator", "test_quarter_of_big",
            "--out", str(tmp_path / "m")]  # fmt: skip
    assert main(args) == 0
    assert CALLS["criterion"] > 0 and CALLS["allocator"] >= 1
    _big_groups_lose_a_quarter(prunekit.load(tmp_path / "m"), torchvision.models.resnet18())
