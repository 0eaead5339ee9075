"""Network Slimming thresholds on every zoo model: exact surgery, reference rule, floor."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from slimutil import TINY_VGG
from torch import nn

import prunekit
from prunekit.errors import ConfigError, PlanError
from prunekit.methods import (
    NetworkSlimming,
    SlimmingConfig,
    global_slim_plan,
    reference_threshold_plan,
    slim_plan,
)
from prunekit.methods.bn_threshold import bn_modules
from prunekit.models import build_model
from prunekit.verify import max_rel_diff, soft_copy

ZOO = [
    ("zoo:vgg11", {}, (3, 32, 32)),
    ("zoo:vgg19", {}, (3, 32, 32)),
    ("zoo:preresnet", {"depth": 20}, (3, 32, 32)),
    ("zoo:densenet", {"depth": 10}, (3, 32, 32)),
    ("zoo:lenet5", {}, (1, 28, 28)),
    ("zoo:lenet_300_100", {}, (1, 28, 28)),
    ("zoo:digits_cnn", {}, (1, 8, 8)),
]


def _sparse_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm spread-out |γ| (many near zero) and non-trivial statistics, as after
    sparse training, so thresholds and surgery are exercised on distinct values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in bn_modules(model).values():
            n = m.weight.numel()
            m.weight.copy_(torch.randn(n, generator=g) * torch.rand(n, generator=g) ** 3)
            m.bias.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return model.eval()


@pytest.mark.parametrize("method", ["prunekit", "reference"])
@pytest.mark.parametrize(("spec", "kwargs", "shape"), ZOO, ids=[z[0][4:] for z in ZOO])
def test_slim_prune_matches_soft_mask(spec: str, kwargs: dict, shape: tuple, method: str) -> None:
    dense = _sparse_like(build_model(spec, **kwargs))
    x = torch.randn(4, *shape)
    graph = prunekit.trace(dense, x[:1])
    plan, report = slim_plan(dense, graph, 0.6, method=method)
    pruned = prunekit.apply_plan(copy.deepcopy(dense), plan)
    assert max_rel_diff(soft_copy(dense, plan), pruned, x) <= 1e-4
    n_bn_channels = sum(m.weight.numel() for m in bn_modules(dense).values())
    if n_bn_channels == 0:  # LeNets have no BatchNorm: nothing to slim
        assert plan.removed_units() == 0 and report.bns == []
        return
    assert plan.removed_units() == report.removed > 0
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in dense.parameters())
    kept = {r["bn"]: r["kept"] for r in report.bns}
    for name, m in bn_modules(pruned).items():
        assert m.weight.numel() == kept[name] >= 1


def test_reference_threshold_is_the_reference_rule_on_vgg() -> None:
    # vggprune.py: thr = sorted(|γ| of all BN)[int(total * percent)], keep |γ| > thr, per BN.
    model = _sparse_like(build_model("zoo:vgg11"), seed=3)
    graph = prunekit.trace(model, torch.zeros(1, 3, 32, 32))
    bns = bn_modules(model)
    allv = torch.cat([m.weight.detach().abs() for m in bns.values()])
    thr = torch.sort(allv).values[int(allv.numel() * 0.7)]
    plan, report = reference_threshold_plan(model, graph, 0.7)
    assert report.threshold == pytest.approx(float(thr))
    assert report.ranked == allv.numel() and not report.collapsed
    for name, m in bns.items():
        want = torch.nonzero(m.weight.detach().abs() > thr).flatten().tolist()
        assert plan.tensors[f"{name}.weight"][0] == want
    removed = sum(int((m.weight.detach().abs() <= thr).sum()) for m in bns.values())
    assert plan.removed_units() == removed == int(allv.numel() * 0.7) + 1


def test_reference_residual_stream_keeps_the_union_of_its_batchnorms() -> None:
    model = _sparse_like(build_model("zoo:preresnet", depth=20), seed=1)
    graph = prunekit.trace(model, torch.zeros(1, 3, 32, 32))
    plan, report = reference_threshold_plan(model, graph, 0.5)
    stream = graph.group("layer1.0.conv3.weight:0")  # stage-1 stream: two blocks' bn1 read it
    readers = ["layer1.1.bn1", "layer2.0.bn1"]
    assert next(g["bns"] for g in report.groups if g["group"] == stream.id) == readers
    gammas = torch.stack([model.get_submodule(r).weight.detach().abs() for r in readers])
    union = torch.nonzero((gammas > report.threshold).any(0)).flatten().tolist()
    assert plan.groups[stream.id]["keep"] == union
    assert 0 < len(union) < stream.size


def test_prunekit_threshold_ranks_globally_with_floor() -> None:
    model = _sparse_like(build_model("zoo:vgg11"), seed=2)
    with torch.no_grad():  # one layer entirely below everything else: the floor must hold it
        model.feature[5].weight.mul_(1e-6)
    graph = prunekit.trace(model, torch.zeros(1, 3, 32, 32))
    plan, report = global_slim_plan(model, graph, 0.6, floor=3, round_to=None)
    kept = {r["bn"]: r["kept"] for r in report.bns}
    assert kept["feature.5"] == 3 and "feature.5" in report.collapsed_layers
    total = sum(g.size for g in graph.groups)
    assert plan.removed_units() <= int(0.6 * total)
    assert plan.removed_units() >= int(0.6 * total) - 3 * len(graph.groups)
    # every removed channel scores at or below the threshold
    for g in graph.groups:  # group "feature.N.weight:0" is conv N, its BatchNorm is N + 1
        bn = f"feature.{int(g.id.split('.')[1]) + 1}"
        gamma = model.get_submodule(bn).weight.detach().abs()
        gone = sorted(set(range(g.size)) - set(plan.groups[g.id]["keep"]))
        assert all(float(gamma[i]) <= report.threshold + 1e-12 for i in gone)


def test_round_to_and_errors() -> None:
    model = _sparse_like(build_model("zoo:vgg11"), seed=4)
    graph = prunekit.trace(model, torch.zeros(1, 3, 32, 32))
    plan, _ = global_slim_plan(model, graph, 0.5, round_to=8)
    assert all(len(g["keep"]) % 8 == 0 for g in plan.groups.values())
    with pytest.raises(ConfigError, match="percent"):
        global_slim_plan(model, graph, 1.0)
    with pytest.raises(ConfigError, match="threshold must be one of"):
        slim_plan(model, graph, 0.5, method="median")
    with torch.no_grad():
        model.feature[1].weight.zero_()
    with pytest.raises(PlanError, match="removes every channel"):
        reference_threshold_plan(model, graph, 0.5, on_collapse="error")
    with pytest.raises(ConfigError, match="unknown slimming setting"):
        SlimmingConfig.from_dict({"percnt": 0.5})
    with pytest.raises(ConfigError, match="floor"):
        SlimmingConfig(floor=0)
    with pytest.raises(ConfigError, match="'label_smoothing'"):
        SlimmingConfig(label_smoothing=2.0)


def test_sparse_trained_60_percent_floor_holds_reference_collapses(tmp_path: Path) -> None:
    from prunekit.data import load_dataset

    cfg = SlimmingConfig(
        model="zoo:vgg",
        model_kwargs=TINY_VGG,
        sparsity=1e-3,
        percent=0.6,
        epochs=4,
        lr=0.1,
        progress=False,
        device="cpu",
    )
    slim = NetworkSlimming(
        cfg, train_data=load_dataset("digits", "train"), test_data=load_dataset("digits", "test")
    )
    sparse = slim.train_sparse(tmp_path / "sparse")
    assert sparse.summary["acc"] > 0.9  # real data: the sparse model still classifies digits
    assert (tmp_path / "sparse" / "bn_gamma_hist.png").stat().st_size > 1000
    x = torch.randn(8, 1, 8, 8)
    ref = slim.prune(copy.deepcopy(sparse.model).cpu(), method="reference")
    assert ref.report.collapsed and len(ref.report.collapsed_layers) >= 1
    assert set(ref.report.collapsed_groups) >= {
        g["group"] for g in ref.report.groups if set(g["bns"]) <= set(ref.report.collapsed_layers)
    }
    ours = slim.prune(copy.deepcopy(sparse.model).cpu(), method="prunekit")
    assert all(r["kept"] >= 1 for r in ours.report.bns)
    assert ours.report.removed >= 0.55 * sum(g.size for g in ours.graph.groups)
    dense = sparse.model.cpu().eval()
    assert max_rel_diff(soft_copy(dense, ours.plan), ours.model, x) <= 1e-4
    assert max_rel_diff(soft_copy(dense, ref.plan), ref.model, x) <= 1e-4


@pytest.mark.parametrize("count", ["bn", "units"])
def test_percent_counts_batchnorm_channels_or_units_on_densenet(count: str) -> None:
    model = _sparse_like(build_model("zoo:densenet", depth=10), seed=5)
    graph = prunekit.trace(model, torch.zeros(1, 3, 32, 32))
    plan, report = global_slim_plan(model, graph, 0.4, count=count)
    bn_total = sum(r["size"] for r in report.bns)
    bn_removed = bn_total - sum(r["kept"] for r in report.bns)
    units = sum(
        g.size for g in graph.groups if g.id in {r["group"] for r in report.groups if r["bns"]}
    )
    if count == "bn":  # the paper's accounting: each BatchNorm channel counts
        assert report.ranked == bn_total
        assert abs(bn_removed - 0.4 * bn_total) <= 0.02 * bn_total
    else:  # each coupled channel once: a feature map read by 3 layers weighs 1, not 3
        assert report.ranked == units
        assert abs(plan.removed_units() - 0.4 * units) <= 0.02 * units
    assert bn_total > units  # DenseNet channels are read by several BatchNorms
