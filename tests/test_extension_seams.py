"""A criterion or allocator registered once is used by the Python API, native recipes and the
CLI alike, without touching any other file (issue 11's extension seams)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torchvision

import prunekit
from prunekit.allocators import ALLOCATORS, register_allocator
from prunekit.cli import main
from prunekit.importance import CRITERIA, REDUCTIONS, register_criterion, score
from prunekit.pipeline import PruneConfig, prune
from prunekit.recipes import Executor, Recipe

CALLS: dict[str, int] = {}


@pytest.fixture()
def registered() -> Iterator[None]:
    """A toy criterion (filters with a larger index matter more) and a toy allocator (prune
    only groups of at least 64 units, by a quarter), registered for the test only."""

    @register_criterion("test_index")
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


def test_group_level_criterion_sees_the_whole_group() -> None:
    """A whole-group criterion (here: score a unit by its smallest |w| over all the group's
    weight slots) plugs in through the same registry and decides what the plan keeps."""
    seen: list[int] = []

    @register_criterion("test_group_min", level="group")
    def group_min(group, ctx):
        seen.append(len(group.slots))
        best = torch.full((group.size,), float("inf"), dtype=torch.float64)
        for s in group.slots:
            t = ctx.tensors[s.tensor]
            if s.tensor in ctx.params and t.dim() > 1:
                per = t.detach().abs().movedim(s.dim, 0).flatten(1).amin(1).double()
                best[torch.as_tensor(s.units)] = torch.minimum(
                    best[torch.as_tensor(s.units)], per[torch.as_tensor(s.positions)]
                )
        return best

    try:
        model = torchvision.models.resnet18().eval()
        dense = copy.deepcopy(model)
        result = prune(model, torch.randn(1, 3, 32, 32), PruneConfig(criterion="test_group_min"))
        assert max(seen) > 2  # a residual group: the criterion saw all its slots at once
        expected = score(dense, result.graph, "test_group_min")
        for gid, entry in result.plan.groups.items():
            s = expected[gid]
            assert torch.equal(result.scores[gid], s)
            gone = [u for u in range(len(s)) if u not in entry["keep"]]
            if gone:  # the plan keeps the highest-scoring units of the group
                assert float(s[entry["keep"]].min()) >= float(s[gone].max())
        with pytest.raises(prunekit.errors.ConfigError, match="level"):
            register_criterion("x", level="head")
    finally:
        CRITERIA.remove("test_group_min")


def test_reduction_registry_entry_is_used_by_score_and_config() -> None:
    REDUCTIONS.add("test_min", lambda s: s.min(0).values)
    try:
        model = torchvision.models.resnet18().eval()
        graph = prunekit.trace(model, torch.randn(1, 3, 32, 32))
        lo = score(model, graph, "l2", reduce="test_min")
        hi = score(model, graph, "l2", reduce="max")
        assert all(bool((lo[k] <= hi[k]).all()) for k in lo)
        assert any(bool((lo[k] < hi[k]).any()) for k in lo)
        assert PruneConfig(reduce="test_min").reduce == "test_min"
        with pytest.raises(Exception, match="reduction"):
            PruneConfig(reduce="median")
    finally:
        REDUCTIONS.remove("test_min")
