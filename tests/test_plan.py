"""Plans: allocation rules, JSON round trip, targets, clear errors."""

from __future__ import annotations

import pytest
import torch
import torchvision

from prunekit.errors import ConfigError, PlanError
from prunekit.graph import trace
from prunekit.importance import score
from prunekit.plan import (
    Allocation,
    PruningPlan,
    estimate,
    make_plan,
    plan_for_target,
    plan_from_keep,
)


@pytest.fixture(scope="module")
def resnet():
    model = torchvision.models.resnet18().eval()
    graph = trace(model, torch.randn(1, 3, 32, 32))
    return model, graph, score(model, graph, "l2")


def test_local_ratio_keeps_half_of_every_group(resnet):
    _, graph, scores = resnet
    plan = make_plan(graph, scores, ratio=0.5)
    for g in graph.groups:
        assert len(plan.groups[g.id]["keep"]) == g.size - g.size // 2


def test_keeps_highest_scores(resnet):
    _, graph, scores = resnet
    plan = make_plan(graph, scores, ratio=0.25)
    g = graph.groups[0]
    kept = set(plan.groups[g.id]["keep"])
    worst = torch.argsort(scores[g.id])[: g.size // 4].tolist()
    assert kept.isdisjoint(worst)


def test_round_to(resnet):
    _, graph, scores = resnet
    plan = make_plan(graph, scores, ratio=0.3, round_to=8)
    for g in graph.groups:
        n = len(plan.groups[g.id]["keep"])
        assert n % 8 == 0 or n == g.size


def test_global_floor_never_empties_a_group(resnet):
    _, graph, scores = resnet
    # one group looks useless: global ranking would take all of it without the floor
    gid = graph.groups[0].id
    skewed = dict(scores)
    skewed[gid] = torch.zeros_like(scores[gid])
    plan = make_plan(graph, skewed, ratio=0.6, global_ranking=True, normalize=None, floor=2)
    assert len(plan.groups[gid]["keep"]) == 2
    total = sum(g.size for g in graph.groups)
    removed = plan.removed_units()
    assert abs(removed / total - 0.6) < 0.05


def test_overrides_by_module_glob(resnet):
    _, graph, scores = resnet
    plan = make_plan(graph, scores, ratio=0.5, overrides={"layer4.*": 0.0})
    for g in graph.groups:
        if all(t.startswith("layer4.") for t in g.tensors):
            assert len(plan.groups[g.id]["keep"]) == g.size


def test_json_round_trip(resnet):
    _, graph, scores = resnet
    plan = make_plan(graph, scores, ratio=0.5)
    again = PruningPlan.from_json(plan.to_json())
    assert again.groups == plan.groups
    assert again.tensors == plan.tensors
    assert again.shapes == plan.shapes


@pytest.mark.parametrize("target", ["macs", "params"])
def test_target_reduction(resnet, target):
    _, graph, scores = resnet
    plan = plan_for_target(graph, scores, target=target, reduction=0.4)
    got = 1 - estimate(graph, plan)[target] / estimate(graph)[target]
    assert abs(got - 0.4) < 0.03
    assert plan.meta["achieved"] == pytest.approx(got)


def test_estimate_matches_real_params(resnet):
    model, graph, scores = resnet
    import copy

    from prunekit.report import count_params
    from prunekit.surgery import apply_plan

    plan = make_plan(graph, scores, ratio=0.5)
    pruned = apply_plan(copy.deepcopy(model), plan)
    assert estimate(graph, plan)["params"] == count_params(pruned)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"ratio": 1.0}, "ratio must be in"),
        ({"ratio": -0.1}, "ratio must be in"),
        ({"floor": 0}, "floor must be"),
        ({"round_to": 0}, "round_to"),
        ({"overrides": {"x": 2.0}}, "override ratio"),
        ({"normalize": "median"}, "normalize"),
    ],
)
def test_bad_allocation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Allocation(**kwargs)


def test_plan_from_keep_errors(resnet):
    _, graph, _ = resnet
    g = graph.groups[0]
    with pytest.raises(PlanError, match="lose all"):
        plan_from_keep(graph, {g.id: []})
    with pytest.raises(PlanError, match="out of range"):
        plan_from_keep(graph, {g.id: [g.size]})


@pytest.mark.parametrize(
    "text,match",
    [
        ("{", "not valid JSON"),
        ('{"format": "other"}', "not a prunekit plan"),
        ('{"format": "prunekit.plan/1", "tensors": 3, "shapes": {}, "groups": {}}', "malformed"),
    ],
)
def test_malformed_plan_json(text, match):
    with pytest.raises(PlanError, match=match):
        PruningPlan.from_json(text)


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda d: d["groups"][next(iter(d["groups"]))]["keep"].append(999), "out of range"),
        (lambda d: d["groups"][next(iter(d["groups"]))]["keep"].insert(0, -5), "out of range"),
        (lambda d: d["groups"][next(iter(d["groups"]))].update(keep=[]), "keeps no unit"),
        (lambda d: d["groups"][next(iter(d["groups"]))].update(keep=[1, 0]), "sorted and unique"),
        (lambda d: next(iter(d["tensors"].values()))["0"].append(10**6), "out of range"),
        (lambda d: next(iter(d["tensors"].values())).update({"7": [0]}), "has no dim 7"),
    ],
)
def test_plan_read_from_disk_is_validated(resnet, mutate, match):
    _, graph, scores = resnet
    data = make_plan(graph, scores, ratio=0.5).to_dict()
    mutate(data)
    with pytest.raises(PlanError, match=match):
        PruningPlan.from_dict(data)


def test_global_ties_remove_exactly_the_ratio_spread_over_groups():
    """Tied scores (an untrained network's BN scales are all 1) must not remove everything."""
    model = torchvision.models.resnet18().eval()
    graph = trace(model, torch.randn(1, 3, 32, 32))
    scores = score(model, graph, "bn_scale")
    total = sum(s.numel() for s in scores.values())
    plan = make_plan(graph, scores, ratio=0.5, global_ranking=True, normalize=None)
    removed = sum(s.numel() - len(plan.groups[g]["keep"]) for g, s in scores.items())
    assert removed == total // 2
    for g, s in scores.items():  # each tied group loses about half, none is emptied
        kept = len(plan.groups[g]["keep"])
        assert abs(kept - s.numel() / 2) <= 1, (g, kept, s.numel())


def test_registered_allocator_is_used_by_make_plan(resnet):
    from prunekit.allocators import ALLOCATORS, register_allocator

    @register_allocator("test-only-big")
    def only_big(req):
        return {g.id: g.size // 2 if g.size >= 256 else g.size for g in req.groups}

    try:
        _, graph, scores = resnet
        plan = make_plan(graph, scores, Allocation(allocator="test-only-big"))
        for g in graph.groups:
            kept = len(plan.groups[g.id]["keep"])
            assert kept == (g.size // 2 if g.size >= 256 else g.size)
        assert plan.meta["allocator"] == "test-only-big"
    finally:
        ALLOCATORS.remove("test-only-big")
