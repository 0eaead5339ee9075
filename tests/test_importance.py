"""Every criterion in the registry scores every group it can, and means what it says."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from prunekit.errors import ConfigError
from prunekit.graph import trace
from prunekit.importance import CRITERIA, needs_data, score
from prunekit.zoo import build


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = build("digits_cnn").eval()
    x = torch.randn(16, 1, 8, 8)
    y = torch.randint(0, 10, (16,))
    return model, trace(model, x[:1]), [(x, y)] * 2


@pytest.mark.parametrize("name", CRITERIA.names())
def test_every_criterion_scores_groups(setup, name):
    model, graph, batches = setup
    s = score(
        model, graph, name, batches=batches if needs_data(name) else None, loss_fn=F.cross_entropy
    )
    assert s, name
    for gid, v in s.items():
        assert v.shape == (graph.group(gid).size,)
        assert torch.isfinite(v).all()
        assert (v >= 0).all()


def test_l1_is_sum_of_abs_over_slots(setup):
    model, graph, _ = setup
    g = graph.group("stem.0.weight:0")
    s = score(model, graph, "l1", reduce="sum")[g.id]
    w = model.stem[0].weight.detach()
    bn = model.stem[1].weight.detach()
    # consumers of the stem channels (input columns) are part of the group too
    expect = w.abs().sum((1, 2, 3)) + bn.abs()
    for slot in g.slots:
        if slot.tensor.endswith("weight") and slot.tensor not in ("stem.0.weight", "stem.1.weight"):
            t = dict(model.named_parameters())[slot.tensor].detach()
            expect = expect + t.abs().movedim(slot.dim, 0).reshape(t.shape[slot.dim], -1).sum(1)
    assert torch.allclose(s.float(), expect, rtol=1e-5)


def test_bn_scale_only_scores_groups_with_norms(setup):
    model, graph, _ = setup
    s = score(model, graph, "bn_scale")
    assert "fc1.weight:0" not in s  # a linear hidden layer has no BatchNorm
    g = graph.group("stem.0.weight:0")
    assert torch.allclose(s[g.id].float(), model.stem[1].weight.detach().abs())


def test_data_criteria_need_batches(setup):
    model, graph, _ = setup
    with pytest.raises(ConfigError, match="calibration batches"):
        score(model, graph, "taylor")


def test_unknown_criterion(setup):
    model, graph, _ = setup
    with pytest.raises(ConfigError, match="unknown criterion 'l3'"):
        score(model, graph, "l3")


def test_random_is_seeded(setup):
    model, graph, _ = setup
    a, b = score(model, graph, "random", seed=1), score(model, graph, "random", seed=1)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_apoz_is_the_positive_share_after_the_following_bn(setup):
    """Network trimming's APoZ (Hu et al. 2016) as a ReLU after conv → BN sees it."""
    from prunekit.importance import following_norms

    model, graph, batches = setup
    norms = following_norms(model, batches[0][0])
    assert norms["stem.0.weight"] == "stem.1" and "fc2.weight" not in norms
    s = score(model, graph, "apoz", batches=batches[:1])
    gid = next(
        g.id
        for g in graph.groups
        if any(sl.tensor == "branch_a.0.weight" and sl.dim == 0 for sl in g.slots)
    )
    seen: list[torch.Tensor] = []
    h = model.branch_a[1].register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        model(batches[0][0])
    h.remove()
    expected = (seen[0] > 0).float().mean(dim=(0, 2, 3))
    assert torch.allclose(s[gid].float(), expected)


def test_slots_rank_a_group_by_one_tensor(setup):
    model, graph, _ = setup
    group = next(g for g in graph.groups if len({s.tensor for s in g.slots}) > 2)
    anchor = next(s for s in group.slots if s.dim == 0 and s.tensor.endswith("weight"))
    own = score(model, graph, "l1", slots={group.id: (anchor.tensor, 0)})[group.id]
    w = dict(model.named_parameters())[anchor.tensor].detach()
    expected = torch.zeros(group.size, dtype=torch.float64)
    expected[torch.as_tensor(anchor.units)] = w.abs().flatten(1).sum(1).double()[anchor.positions]
    assert torch.allclose(own, expected)
    with pytest.raises(ConfigError, match="has no slot"):
        score(model, graph, "l1", slots={group.id: ("nope.weight", 0)})
