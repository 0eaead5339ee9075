"""Surgery: attributes, dtype/mode/memory format preserved, soft mode, mismatched plans."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from prunekit.errors import PlanError
from prunekit.graph import trace
from prunekit.importance import score
from prunekit.plan import make_plan
from prunekit.surgery import MODULE_FIXES, apply_plan
from prunekit.verify import max_rel_diff


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 16, 3, padding=1, groups=8)  # depthwise with multiplier 2
        self.gn = nn.GroupNorm(16, 16)
        self.pw = nn.Conv2d(16, 8, 1, groups=2)
        self.prelu = nn.PReLU(8)
        self.up = nn.ConvTranspose2d(8, 6, 2, stride=2)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        x = self.prelu(self.pw(self.gn(self.dw(x))))
        x = self.up(x).mean((2, 3))
        return self.fc(x)


def _pruned(ratio=0.5, **kw):
    torch.manual_seed(0)
    model = Net().eval()
    x = torch.randn(2, 3, 6, 6)
    graph = trace(model, x)
    plan = make_plan(graph, score(model, graph, "l1"), ratio=ratio, **kw)
    return model, x, plan


def test_attributes_updated_and_forward_equal():
    model, x, plan = _pruned()
    dense = copy.deepcopy(model)
    apply_plan(model, plan)
    assert model.conv.out_channels == 4 and model.bn.num_features == 4
    assert model.dw.in_channels == 4 and model.dw.groups == 4 and model.dw.out_channels == 8
    assert model.gn.num_channels == 8 and model.gn.num_groups == 8
    assert model.pw.groups == 2 and model.pw.in_channels == 8
    assert model.prelu.num_parameters == model.pw.out_channels
    assert model.up.in_channels == model.pw.out_channels
    assert model.fc.in_features == model.up.out_channels
    soft = apply_plan(copy.deepcopy(dense), plan, soft=True)
    assert max_rel_diff(soft, model, x) <= 1e-5
    assert [p.shape for p in soft.parameters()] == [p.shape for p in dense.parameters()]


def test_preserves_dtype_requires_grad_mode_and_memory_format():
    model, x, plan = _pruned()
    model = model.double().to(memory_format=torch.channels_last).train()
    model.conv.weight.requires_grad_(False)
    apply_plan(model, plan)
    assert model.training
    assert model.conv.weight.dtype == torch.float64
    assert not model.conv.weight.requires_grad and model.bn.weight.requires_grad
    assert model.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert isinstance(model.conv.weight, nn.Parameter)
    model(x.double())  # still runs in training mode


def test_plan_for_another_model_is_refused():
    model, _, plan = _pruned()
    apply_plan(model, plan)
    with pytest.raises(PlanError, match="made for another model"):
        apply_plan(model, plan)


def test_surgery_attaches_nothing_to_the_model():
    model, _, plan = _pruned()
    before = set(vars(model))
    apply_plan(model, plan)
    assert set(vars(model)) == before  # the plan travels in the caller's hands, not on the model


def _kind(cls):
    return cls if isinstance(cls, str) else cls.__name__


#: handlers registered by prunekit.attention (transformer blocks) and the test that prunes them
EXERCISED_ELSEWHERE = {
    "VisionTransformer": "tests/graph/test_attention.py (vit)",
    "timm.models.metaformer.Scale": "tests/graph/test_norms.py (poolformer)",
    "MultiheadAttention": "tests/graph/test_attention.py",
    "ShiftedWindowAttention": "tests/graph/test_attention.py",
    "ShiftedWindowAttentionV2": "tests/graph/test_attention.py",
    "timm.layers.attention.Attention": "tests/graph/test_attention.py",
    "timm.layers.attention.AttentionRope": "tests/graph/test_attention.py",
    # registered when prunekit.versatile is imported (the CLI imports it), so its presence here
    # depends on what ran first; pruned ≡ soft mask on versatile VGG/ResNet there
    "VersatileConv2d": "tests/versatile/test_versatile_graph.py",
}


@pytest.mark.parametrize("cls", sorted(MODULE_FIXES, key=_kind), ids=_kind)
def test_every_module_handler_is_exercised(cls):
    """Contract over the registry: each handler's layer kind is pruned somewhere in Net or a
    small stand-in, and its attributes agree with its new weights."""
    if _kind(cls) in EXERCISED_ELSEWHERE:
        return
    makers = {
        "_ConvNd": lambda: nn.Conv2d(4, 6, 1),
        "Linear": lambda: nn.Linear(4, 6),
        "_NormBase": lambda: nn.BatchNorm1d(6),
        "GroupNorm": lambda: nn.GroupNorm(6, 6),
        "LayerNorm": lambda: nn.LayerNorm(6),
        "RMSNorm": lambda: nn.RMSNorm(6),
        "PReLU": lambda: nn.PReLU(6),
        "Embedding": lambda: nn.Embedding(5, 6),
    }
    layer = makers[_kind(cls)]()
    head = nn.Linear(6, 2)
    is_conv = isinstance(layer, nn.Conv2d)
    pre = nn.Linear(4, 6) if not isinstance(layer, (nn.Linear, nn.Conv2d, nn.Embedding)) else None

    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pre, self.layer, self.head = pre, layer, head

        def forward(self, x):
            if isinstance(self.layer, nn.Embedding):
                return self.head(self.layer(x))
            if is_conv:
                return self.head(self.layer(x[:, :, None, None]).flatten(1))
            return self.head(self.layer(self.pre(x) if self.pre is not None else x))

    model = M().eval()
    x = torch.randint(0, 5, (3,)) if isinstance(layer, nn.Embedding) else torch.randn(3, 4)
    graph = trace(model, x)
    plan = make_plan(graph, score(model, graph, "l2"), ratio=0.5)
    dense = copy.deepcopy(model)
    apply_plan(model, plan)
    assert max_rel_diff(apply_plan(dense, plan, soft=True), model, x) <= 1e-5
    w = model.layer.weight
    if isinstance(layer, nn.Linear):
        assert model.layer.out_features == w.shape[0] == 3
    elif is_conv:
        assert model.layer.out_channels == w.shape[0] == 3
    elif isinstance(layer, nn.Embedding):
        assert model.layer.embedding_dim == w.shape[1] == 3
    elif isinstance(layer, nn.GroupNorm):
        assert model.layer.num_channels == w.shape[0] == 3
    elif isinstance(layer, (nn.LayerNorm, nn.RMSNorm)):
        assert model.layer.normalized_shape == tuple(w.shape) == (3,)
    elif isinstance(layer, nn.PReLU):
        assert model.layer.num_parameters == 3
    else:
        assert model.layer.num_features == 3


@pytest.mark.parametrize(
    "make,shape",
    [
        (lambda: nn.Conv1d(4, 8, 3, padding=1), (2, 4, 9)),
        (lambda: nn.Conv3d(4, 8, 3, padding=1), (2, 4, 5, 5, 5)),
        (lambda: nn.Conv2d(4, 8, 3, padding=1, groups=2), (2, 4, 6, 6)),
        (lambda: nn.ConvTranspose2d(4, 8, 2, stride=2), (2, 4, 3, 3)),
        (lambda: nn.ConvTranspose2d(4, 8, 2, stride=2, groups=2), (2, 4, 3, 3)),
        (lambda: nn.ConvTranspose1d(4, 4, 3, groups=4), (2, 4, 7)),
    ],
    ids=["conv1d", "conv3d", "grouped2d", "convT2d", "groupedT2d", "depthwiseT1d"],
)
def test_conv_variants_equal_soft_mask(make, shape):
    torch.manual_seed(0)
    nd = len(shape) - 2
    conv_cls = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[nd]
    bn_cls = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[nd]

    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pre = conv_cls(shape[1], shape[1], 1)
            self.layer = make()
            c = self.layer.out_channels
            self.bn = bn_cls(c)
            self.post = conv_cls(c, 3, 1)

        def forward(self, x):
            return self.post(torch.relu(self.bn(self.layer(self.pre(x)))))

    model = M().eval()
    x = torch.randn(*shape)
    graph = trace(model, x)
    plan = make_plan(graph, score(model, graph, "l2"), ratio=0.5)
    assert plan.removed_units() > 0
    dense = copy.deepcopy(model)
    apply_plan(model, plan)
    assert max_rel_diff(apply_plan(dense, plan, soft=True), model, x) <= 1e-5
    assert model.layer.weight.numel() < dense.layer.weight.numel()


def test_a_second_handler_for_a_layer_kind_is_refused():
    from prunekit.errors import ConfigError
    from prunekit.surgery import register_module

    with pytest.raises(ConfigError, match="already has a surgery handler"):
        register_module(nn.Linear)(lambda mod, before: None)
    assert MODULE_FIXES[nn.Linear].__name__ != "<lambda>"
