"""Normalisation over pruned channels (prunekit.graph.norms): each norm kind prunes with its
producer and the pruned model computes what the soft mask computes — which normalises the kept
channels only. A plain zeroing of the same plan (statistics over all channels) must differ, so
every equivalence check here can fail."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prunekit.graph import trace
from prunekit.graph.norms import KeptChannels
from prunekit.pipeline import PruneConfig, prune
from prunekit.plan import PruningPlan, estimate
from prunekit.report import count_params
from prunekit.verify import max_rel_diff, soft_copy


class Seq(nn.Module):
    """fc_in -> norm -> fc_out over (B, N, C) tokens; ``norm`` is any callable module."""

    def __init__(self, norm: nn.Module, c: int = 8) -> None:
        super().__init__()
        self.fc_in, self.norm, self.fc_out = nn.Linear(5, c), norm, nn.Linear(c, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_out(self.norm(self.fc_in(x)))


class Conv(nn.Module):
    """conv_in -> norm -> conv_out over (B, C, H, W) maps."""

    def __init__(self, norm: nn.Module, c: int = 8) -> None:
        super().__init__()
        self.conv_in, self.norm, self.conv_out = nn.Conv2d(3, c, 3), norm, nn.Conv2d(c, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_out(self.norm(self.conv_in(x)))


class LayerNorm2d(nn.LayerNorm):
    """Channels-first LayerNorm as torchvision's ConvNeXt writes it (permute, norm, permute)."""

    def forward(self, x: Tensor) -> Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias)
        return y.permute(0, 3, 1, 2)


class Functional(nn.Module):
    """A custom norm module calling ``fn(x, weight, bias)``."""

    def __init__(self, fn: Callable[..., Tensor], c: int = 8, bias: bool = True) -> None:
        super().__init__()
        self.fn = fn
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x, self.weight, self.bias)


TOKENS, MAPS = (4, 6, 5), (2, 3, 7, 7)
# name -> (model, input shape, prunable channels kept at ratio 0.5)
PRUNABLE: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "LayerNorm": (lambda: Seq(nn.LayerNorm(8)), TOKENS),
    "LayerNorm_no_bias": (lambda: Seq(nn.LayerNorm(8, bias=False)), TOKENS),
    "LayerNorm2d_permuted": (lambda: Conv(LayerNorm2d(8)), MAPS),
    "F.layer_norm_shape_from_x": (
        lambda: Seq(Functional(lambda x, w, b: F.layer_norm(x, x.shape[-1:], w, b))),
        TOKENS,
    ),
    "RMSNorm": (lambda: Seq(nn.RMSNorm(8)), TOKENS),
    "F.rms_norm_shape_from_x": (
        lambda: Seq(Functional(lambda x, w, b: F.rms_norm(x, x.shape[-1:], w), bias=False)),
        TOKENS,
    ),
    "GroupNorm_1_group": (lambda: Conv(nn.GroupNorm(1, 8)), MAPS),
    "F.group_norm_1_group": (
        lambda: Conv(Functional(lambda x, w, b: F.group_norm(x, 1, w, b))),
        MAPS,
    ),
    "GroupNorm_4_groups": (lambda: Conv(nn.GroupNorm(4, 8)), MAPS),
    "GroupNorm_per_channel": (lambda: Conv(nn.GroupNorm(8, 8)), MAPS),
}


#: kinds whose kept statistics never saw a removed channel (per-channel, or whole groups removed)
WHOLE_STATISTICS = {"GroupNorm_4_groups", "GroupNorm_per_channel"}


def _randomize(model: nn.Module) -> None:
    torch.manual_seed(0)
    for p in model.parameters():  # shifts and scales away from 0/1: removed channels matter
        nn.init.normal_(p, 0.3, 0.7)


def _plain_zeroing(model: nn.Module, plan: PruningPlan) -> nn.Module:
    """The plan's removed entries zeroed, nothing else: statistics still see every channel."""
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for name, dims in plan.tensors.items():
            p = ref.get_parameter(name)
            for d, keep in dims.items():
                gone = sorted(set(range(p.shape[d])) - set(keep))
                p.index_fill_(d, torch.tensor(gone), 0.0)
    return ref


@pytest.mark.parametrize("name", sorted(PRUNABLE))
def test_norm_prunes_exactly_with_kept_channel_statistics(name: str) -> None:
    make, shape = PRUNABLE[name]
    model = make().eval()
    _randomize(model)
    dense = copy.deepcopy(model)
    x = torch.randn(*shape)
    out_layer = "fc_out" if hasattr(model, "fc_out") else "conv_out"
    result = prune(model, x, PruneConfig(ratio=0.5, ignored_layers=[out_layer]))
    groups = {s.tensor for g in result.graph.groups for s in g.slots}
    assert "norm.weight" in groups, result.graph.summary()
    w = model.norm.weight
    assert w.shape == (4,)
    assert max_rel_diff(soft_copy(dense, result.plan), model, x) <= 1e-4
    if name not in WHOLE_STATISTICS:
        assert max_rel_diff(_plain_zeroing(dense, result.plan), model, x) > 1e-3
    assert count_params(model) == estimate(result.graph, result.plan)["params"]
    producer = model.fc_in if hasattr(model, "fc_in") else model.conv_in
    assert producer.weight.shape[0] == 4 and count_params(model) < count_params(dense)


def test_group_norm_prunes_whole_groups_and_updates_num_groups() -> None:
    model = Conv(nn.GroupNorm(4, 8)).eval()
    _randomize(model)
    graph = trace(model, torch.randn(*MAPS))
    group = next(g for g in graph.groups if "norm.weight" in g.tensors)
    assert group.size == 4  # four groups of two channels
    prune(model, torch.randn(*MAPS), PruneConfig(ratio=0.5, ignored_layers=["conv_out"]))
    assert (model.norm.num_groups, model.norm.num_channels) == (2, 4)


FROZEN: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], str]] = {
    "no_weight": (lambda: Seq(nn.LayerNorm(8, elementwise_affine=False)), TOKENS, "weight"),
    "literal_shape_in_custom_module": (
        lambda: Seq(Functional(lambda x, w, b: F.layer_norm(x, (8,), w, b))),
        TOKENS,
        "literal",
    ),
    "two_dims": (lambda: Conv(nn.LayerNorm([8, 5, 5])), MAPS, "several tensor dims"),
    "literal_groups_in_custom_module": (
        lambda: Conv(Functional(lambda x, w, b: F.group_norm(x, 4, w, b))),
        MAPS,
        "literal",
    ),
}


@pytest.mark.parametrize("name", sorted(FROZEN))
def test_norm_that_would_not_follow_keeps_channels_with_reason(name: str) -> None:
    make, shape, why = FROZEN[name]
    graph = trace(make().eval(), torch.randn(*shape))
    out = "fc_in" if name != "two_dims" and "groups" not in name else "conv_in"
    reasons = graph.frozen[f"{out}.weight:0"]
    assert any(why in r for r in reasons), reasons


def test_kept_channels_survive_deepcopy_and_keep_identity() -> None:
    model = Seq(nn.LayerNorm(8)).eval()
    _randomize(model)
    dense = copy.deepcopy(model)
    x = torch.randn(*TOKENS)
    weight = dense.norm.weight
    plan = prune(model, x, PruneConfig(ratio=0.5, ignored_layers=["fc_out"])).plan
    from prunekit.surgery import apply_plan

    apply_plan(dense, plan, soft=True)
    assert dense.norm.weight is weight  # optimizers built before stay valid
    again = copy.deepcopy(dense)
    assert isinstance(again.norm.weight, KeptChannels)
    assert max_rel_diff(again, model, x) <= 1e-4
    # the soft model trains: gradients reach the kept entries only
    again.train()
    again(x).sum().backward()
    grad = again.norm.weight.grad
    assert grad is not None and bool((grad[again.norm.weight.kept] != 0).any())


def _fill_zero_params(model: nn.Module) -> None:
    """Redraw constant near-zero parameters (zero biases, 1e-6 layer scales): with them the
    residual branches hardly reach the output and the equivalence check would be blind."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            first = p.flatten()[0]
            if first.abs() < 1e-3 and bool((p == first).all()):
                p.normal_(0.0, 0.02, generator=g)


def _check_model(model: nn.Module, x: Tensor, min_cut: float) -> None:
    _fill_zero_params(model)
    dense = copy.deepcopy(model)
    result = prune(model, x, PruneConfig(ratio=0.5))
    assert max_rel_diff(soft_copy(dense, result.plan), model, x) <= 1e-4
    assert max_rel_diff(_plain_zeroing(dense, result.plan), model, x) > 1e-3
    assert 1 - count_params(model) / count_params(dense) >= min_cut
    assert model(x).shape == dense(x).shape


def test_convnext_tiny_residual_stream_prunes_exactly() -> None:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.convnext_tiny(weights=None).eval()
    _check_model(model, torch.randn(1, 3, 64, 64), min_cut=0.7)


def test_poolformer_s12_group_norm_residual_prunes_exactly() -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = timm.create_model("poolformer_s12", pretrained=False).eval()
    _check_model(model, torch.randn(1, 3, 64, 64), min_cut=0.7)
    assert model.stages[0].blocks[0].layer_scale1.shape == (32, 1, 1)  # Scale.shape followed
