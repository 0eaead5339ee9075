"""The dependency graph prunes versatile layers by primary filter; pruned ≡ soft mask."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from prunekit.graph import trace
from prunekit.methods.bn_threshold import slim_plan
from prunekit.models import build_model
from prunekit.pipeline import PruneConfig, prune
from prunekit.surgery import apply_plan
from prunekit.verify import max_rel_diff, soft_copy
from prunekit.versatile import VersatileConfig, VersatileConv2d, versatilize
from prunekit.versatile.graph import CHANNEL_INPUTS_KEPT

X = torch.randn(2, 3, 32, 32)


def _vgg(mode: str = "spatial", delta: int = 0, depth: str = "vgg11") -> nn.Module:
    model = build_model(f"zoo:{depth}", num_classes=10)
    versatilize(model, VersatileConfig(mode=mode, delta=delta))
    with torch.no_grad():  # distinct BN scales/shifts so every channel matters
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.2, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1)
    return model.eval()


def test_a_unit_is_one_primary_filter_with_its_outputs_bn_and_consumer_inputs():
    model = _vgg()
    graph = trace(model, X)
    g = graph.group("feature.0.weight:0")
    assert g.size == 32  # 64 outputs, s = 2
    slots = {(s.tensor, s.dim): s for s in g.slots}
    bn = slots[("feature.1.weight", 0)]
    assert np.array_equal(bn.positions, np.arange(64))
    assert np.array_equal(bn.units, np.arange(64) // 2)  # outputs 2q, 2q+1 are primary q
    consumer = slots[("feature.4.weight", 1)]  # next versatile conv's input column
    assert np.array_equal(consumer.units, np.arange(64) // 2)


@pytest.mark.parametrize("model_fn", [_vgg, lambda: _vgg(depth="vgg16")])
def test_pruned_equals_soft_mask(model_fn):
    model = model_fn()
    ref = copy.deepcopy(model)
    result = prune(model, X, PruneConfig(ratio=0.5, criterion="l1"))
    soft = soft_copy(ref, result.plan)
    assert max_rel_diff(soft, model, X) <= 1e-4
    conv = model.feature[0]
    assert isinstance(conv, VersatileConv2d)
    assert (conv.weight.shape[0], conv.out_channels) == (16, 32)
    assert model.feature[1].num_features == 32
    second = [m for m in model.feature if isinstance(m, VersatileConv2d)][1]
    assert second.in_channels == 32 == second.weight.shape[1]


def test_resnet_residual_stream_prunes_exactly():
    model = torchvision.models.resnet18(num_classes=10)
    versatilize(model, "spatial")
    model.eval()
    ref = copy.deepcopy(model)
    result = prune(model, X, PruneConfig(ratio=0.3, criterion="l2"))
    assert result.plan.groups  # something was pruned
    assert max_rel_diff(soft_copy(ref, result.plan), model, X) <= 1e-4


def test_channel_variant_inputs_kept_whole_with_reason():
    model = _vgg("spatial+channel", delta=16)
    graph = trace(model, X)
    # every conv but the last feeds a channel-variant conv: their primaries stay
    assert [g.id for g in graph.groups if g.id.startswith("feature")] == ["feature.25.weight:0"]
    assert any(CHANNEL_INPUTS_KEPT in why for why in graph.frozen["feature.0.weight:0"])
    ref = copy.deepcopy(model)
    result = prune(model, X, PruneConfig(ratio=0.5))
    assert model.feature[25].out_channels == 256
    assert max_rel_diff(soft_copy(ref, result.plan), model, X) <= 1e-4


def test_mixed_spatial_then_channel_layer_prunes_outputs_of_channel_layer():
    # channel-variant conv's own primary filters are prunable; only its inputs are kept
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        VersatileConv2d(8, 16, 3, padding=1, delta=4, g=4), nn.BatchNorm2d(16), nn.ReLU(),
        VersatileConv2d(16, 8, 3, padding=1), nn.Flatten(), nn.LazyLinear(5),
    ).eval()  # fmt: skip
    model(X)
    ref = copy.deepcopy(model)
    graph = trace(model, X)
    assert "0.weight:0" not in {g.id for g in graph.groups}
    result = prune(model, X, PruneConfig(ratio=0.5))
    assert model[2].out_channels == 8 and model[2].weight.shape == (2, 4, 3, 3)
    assert model[5].in_channels == 8 and model[5].weight.shape[1] == 8
    assert max_rel_diff(soft_copy(ref, result.plan), model, X) <= 1e-4


def test_network_slimming_on_versatile_vgg():
    model = _vgg(depth="vgg16")
    with torch.no_grad():  # a sparse-trained look: many small |γ|
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.mul_((torch.rand_like(m.weight) > 0.6).float() + 0.01)
    graph = trace(model, X)
    plan, _ = slim_plan(model, graph, 0.5)
    ref = copy.deepcopy(model)
    apply_plan(model, plan)
    assert max_rel_diff(soft_copy(ref, plan), model, X) <= 1e-4
    before = sum(m.num_features for m in ref.modules() if isinstance(m, nn.BatchNorm2d))
    after = sum(m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    # units weigh s·n = 2 BatchNorm channels each; half of the channels go
    assert after == pytest.approx(before * 0.5, abs=2 * len(graph.groups))
    for m in model.modules():
        if isinstance(m, VersatileConv2d):
            assert m.out_channels == m.weight.shape[0] * m.s * m.n


@pytest.mark.parametrize(("mode", "delta"), [("spatial", 0), ("spatial+channel", 16)])
def test_graph_mac_estimate_is_the_executed_macs(mode, delta):
    from prunekit.plan import estimate
    from prunekit.report import count_macs

    model = _vgg(mode, delta)
    x = torch.randn(1, 3, 32, 32)
    graph = trace(model, x)
    assert estimate(graph)["macs"] == pytest.approx(count_macs(model, x), rel=1e-9)
    result = prune(model, x, PruneConfig(ratio=0.5))
    assert estimate(graph, result.plan)["macs"] == pytest.approx(count_macs(model, x), rel=1e-9)
