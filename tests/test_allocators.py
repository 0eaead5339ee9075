"""Allocators: a contract over the registry, the latency allocators' routing, PruneConfig use."""

from __future__ import annotations

import pytest
import torch
import torchvision

from prunekit.allocators import ALLOCATORS, Allocation, keep_count
from prunekit.errors import ConfigError
from prunekit.graph import trace
from prunekit.importance import score
from prunekit.pipeline import PruneConfig, prune
from prunekit.plan import make_plan, plan_from_keep

# A target value each target allocator accepts (a new target allocator adds its own here).
TARGETS = {"macs": 0.4, "params": 0.4, "latency": 0.6, "latency_ms": 5.0}


@pytest.fixture(scope="module")
def resnet():
    model = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 32, 32)
    graph = trace(model, x)
    return model, x, graph, score(model, graph, "l2")


@pytest.fixture()
def fake_latency(monkeypatch):
    """The latency allocators time the model; here a stand-in keeps 3/4 of every group."""
    from prunekit.latency import allocate as lat

    def fake(graph, scores, model, inputs, *, target, **kw):
        keep = {gid: list(range(keep_count(s.numel(), 0.25))) for gid, s in scores.items()}
        return lat.LatencyTargetResult(plan_from_keep(graph, keep), 1.0, 2.0, 1.05, 1.0)

    monkeypatch.setattr(lat, "latency_target_plan", fake)


@pytest.mark.parametrize("name", ALLOCATORS.names())
def test_every_allocator_keeps_between_floor_and_size(name, resnet, fake_latency):
    model, x, graph, scores = resnet
    spec = ALLOCATORS.get(name)
    target = TARGETS.get(name) if spec.takes_target else None
    alloc = Allocation(ratio=0.5, allocator=name, floor=2, target=target)
    plan = make_plan(graph, scores, alloc, context={"model": model, "example_inputs": x})
    for g in graph.groups:
        kept = len(plan.groups[g.id]["keep"])
        assert min(2, g.size) <= kept <= g.size
    assert plan.removed_units() > 0  # each built-in allocator prunes something here
    assert plan.meta["allocator"] == name


def test_target_allocators_need_a_target_and_others_refuse_one():
    with pytest.raises(ConfigError, match="needs a target"):
        Allocation(allocator="macs")
    with pytest.raises(ConfigError, match="takes no target"):
        Allocation(allocator="local", target=0.3)
    with pytest.raises(ConfigError, match="unknown allocator"):
        Allocation(allocator="nope")


def test_prune_config_latency_target_reaches_the_latency_allocator(resnet, fake_latency):
    _, x, _, _ = resnet
    model = torchvision.models.resnet18().eval()
    result = prune(model, x, PruneConfig(target={"latency": 0.6}))
    assert result.plan.meta["allocator"] == "latency"
    assert result.plan.meta["achieved_ms"] == pytest.approx(1.05)
    with pytest.raises(ConfigError, match="exactly one"):
        PruneConfig(target={"macs": 0.3, "params": 0.3})


def test_latency_allocator_without_a_model_says_how_to_give_it(resnet):
    _, _, graph, scores = resnet
    with pytest.raises(ConfigError, match="context="):
        make_plan(graph, scores, Allocation(allocator="latency", target=0.5))
