"""fold_bn: exact on zoo and torchvision BN models, replayable on a fresh (pruned) base model."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn

from prunekit import apply_plan, make_plan, score, trace
from prunekit.errors import PlanError
from prunekit.fold import apply_fold_record, fold_bn, foldable_pairs
from prunekit.verify import max_rel_diff
from prunekit.zoo import build


def trained_stats(model: nn.Module) -> nn.Module:
    """BatchNorms with non-trivial statistics and affine terms (fresh ones fold trivially)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.5, generator=g)
                m.running_var.uniform_(0.3, 2.0, generator=g)
                if m.weight is not None:
                    m.weight.normal_(1, 0.3, generator=g)
                    m.bias.normal_(0, 0.3, generator=g)
    return model.eval()


CASES = {
    "zoo:vgg11": (lambda: build("vgg11"), (2, 3, 32, 32)),
    "zoo:preresnet20": (lambda: build("preresnet", depth=20), (2, 3, 32, 32)),
    "zoo:digits_cnn": (lambda: build("digits_cnn"), (2, 1, 8, 8)),
    "resnet18": (lambda: torchvision.models.resnet18(), (2, 3, 32, 32)),
    "mobilenet_v2": (lambda: torchvision.models.mobilenet_v2(), (2, 3, 32, 32)),
    "efficientnet_b0": (lambda: torchvision.models.efficientnet_b0(), (2, 3, 32, 32)),
    "vgg11_bn": (lambda: torchvision.models.vgg11_bn(), (2, 3, 32, 32)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_fold_is_exact_and_replays(name):
    make, shape = CASES[name]
    model = trained_stats(make())
    x = torch.randn(*shape)
    ref = copy.deepcopy(model)
    rec = fold_bn(model, x)
    assert rec["pairs"], "nothing folded"
    assert rec["max_rel_diff"] <= 1e-5
    assert max_rel_diff(ref, model, x) <= 1e-5
    for p in rec["pairs"]:
        assert isinstance(model.get_submodule(p["norm"]), nn.Identity)
    fresh = apply_fold_record(make(), rec)
    fresh.load_state_dict(model.state_dict(), strict=True)
    assert max_rel_diff(model, fresh.eval(), x) == 0.0


def test_pre_activation_densenet_has_nothing_to_fold():
    """BN → ReLU → conv everywhere: no BatchNorm follows a layer directly."""
    model = trained_stats(build("densenet", depth=10))
    assert foldable_pairs(model, torch.randn(1, 3, 32, 32)) == []


def test_fold_only_pairs_whose_output_feeds_the_norm_alone():
    class Tap(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
            self.conv2, self.bn2 = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            z = self.bn(y) + y  # y is read twice: folding would change the second read
            return self.bn2(self.conv2(z))

    model = trained_stats(Tap())
    x = torch.randn(1, 3, 8, 8)
    assert foldable_pairs(model, x) == [("conv2", "bn2")]
    ref = copy.deepcopy(model)
    fold_bn(model, x)
    assert isinstance(model.bn, nn.BatchNorm2d) and max_rel_diff(ref, model, x) <= 1e-5


def test_fold_after_pruning_round_trips():
    base = trained_stats(torchvision.models.resnet18())
    x = torch.randn(1, 3, 64, 64)
    graph = trace(base, x)
    plan = make_plan(graph, score(base, graph, "l2"), ratio=0.5)
    model = apply_plan(copy.deepcopy(base), plan)
    ref = copy.deepcopy(model)
    rec = fold_bn(model, x)
    fresh = apply_fold_record(apply_plan(torchvision.models.resnet18(), plan), rec)
    fresh.load_state_dict(model.state_dict(), strict=True)
    assert max_rel_diff(ref, fresh.eval(), x) <= 1e-5


def test_bad_records_are_clear_errors():
    m = torchvision.models.resnet18()
    with pytest.raises(PlanError, match="not a BatchNorm fold record"):
        apply_fold_record(m, {"pairs": []})
    with pytest.raises(PlanError, match="does not have"):
        apply_fold_record(m, {"format": "prunekit.fold_bn/1",
                              "pairs": [{"layer": "nope", "norm": "bn1"}]})  # fmt: skip
    with pytest.raises(PlanError, match="expected a conv/linear"):
        apply_fold_record(m, {"format": "prunekit.fold_bn/1",
                              "pairs": [{"layer": "bn1", "norm": "conv1"}]})  # fmt: skip


def test_pruned_then_folded_model_saves_and_loads(tmp_path):
    """prunekit.save/load rebuild a folded model from its record (plan + fold conversion)."""
    import prunekit
    from prunekit.fold import fold_conversion

    model = trained_stats(torchvision.models.resnet18(num_classes=7))
    x = torch.randn(1, 3, 64, 64)
    graph = trace(model, x)
    plan = make_plan(graph, score(model, graph, "l2"), ratio=0.5)
    apply_plan(model, plan)
    step = fold_conversion(fold_bn(model, x))
    record = prunekit.ModelRecord("torchvision:resnet18", {"num_classes": 7}).then(plan, step)
    out = prunekit.save(model, tmp_path / "folded", record)
    loaded = prunekit.load(out)
    assert prunekit.load_record(out) == record
    assert max_rel_diff(model.eval(), loaded, x) == 0.0
    assert not any(isinstance(m, nn.BatchNorm2d) for m in loaded.modules())
