"""Per-handler tests of the dependency graph: who is coupled with whom."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.errors import ConfigError, UnsupportedOpError
from prunekit.graph import trace


def groups_by_tensor(graph):
    """tensor:dim -> group id."""
    out = {}
    for g in graph.groups:
        for s in g.slots:
            out[f"{s.tensor}:{s.dim}"] = g.id
    return out


class ConvBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.c2(torch.relu(self.b1(self.c1(x))))


def test_conv_bn_consumer_coupled():
    g = trace(ConvBN(), torch.randn(1, 3, 8, 8))
    m = groups_by_tensor(g)
    gid = m["c1.weight:0"]
    for k in (
        "c1.bias:0",
        "b1.weight:0",
        "b1.bias:0",
        "b1.running_mean:0",
        "b1.running_var:0",
        "c2.weight:1",
    ):
        assert m[k] == gid
    assert "c2.weight:0" not in m  # model output: frozen
    assert g.group(gid).size == 8


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 6, 1)
        self.b = nn.Conv2d(6, 6, 1)
        self.c = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        y = self.a(x)
        return self.c(y + self.b(y))


def test_residual_add_couples_both_branches():
    m = groups_by_tensor(trace(Residual(), torch.randn(1, 3, 4, 4)))
    assert m["a.weight:0"] == m["b.weight:0"] == m["b.weight:1"] == m["c.weight:1"]


class Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 5, 1)
        self.c = nn.Conv2d(9, 2, 1)

    def forward(self, x):
        return self.c(torch.cat([self.a(x), self.b(x)], 1))


def test_concat_maps_offsets():
    g = trace(Concat(), torch.randn(1, 3, 4, 4))
    ga, gb = g.group("a.weight:0"), g.group("b.weight:0")
    sa = next(s for s in ga.slots if s.tensor == "c.weight")
    sb = next(s for s in gb.slots if s.tensor == "c.weight")
    assert sa.positions.tolist() == [0, 1, 2, 3]
    assert sb.positions.tolist() == [4, 5, 6, 7, 8]


class FlattenLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 2 * 2, 5)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.conv(x), 2), 1))


def test_flatten_into_linear_maps_rows():
    g = trace(FlattenLinear(), torch.randn(1, 1, 6, 6))
    grp = g.group("conv.weight:0")
    s = next(s for s in grp.slots if s.tensor == "fc.weight")
    assert s.positions.tolist() == list(range(12))
    assert s.units.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]


class Shuffle(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(2, 8, 1)
        self.b = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        y = self.a(x)
        n, c, h, w = y.shape
        y = y.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        return self.b(y)


def test_channel_shuffle_is_followed():
    g = trace(Shuffle(), torch.randn(1, 2, 3, 3))
    grp = g.group("a.weight:0")
    # positions p and p+4 of conv a are one unit (same slot in every group of the shuffle)
    assert grp.size == 4
    sb = next(s for s in grp.slots if s.tensor == "b.weight")
    # after the shuffle, consumer column j reads producer channel perm[j]
    assert sb.units.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


class HardcodedView(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 16, 3)

    def forward(self, x):
        return self.fc(self.conv(x).view(-1, 64))


def test_literal_reshape_freezes_channels():
    g = trace(HardcodedView(), torch.randn(1, 1, 4, 4))
    assert "conv.weight:0" not in groups_by_tensor(g)
    assert any("literal" in r for rs in g.frozen.values() for r in rs)


class Grouped(nn.Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.g = nn.Conv2d(8, 8, 3, padding=1, groups=groups)
        self.c = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.c(self.g(self.a(x)))


def test_depthwise_ties_input_and_output():
    m = groups_by_tensor(trace(Grouped(8), torch.randn(1, 3, 5, 5)))
    assert m["a.weight:0"] == m["g.weight:0"] == m["c.weight:1"]


def test_grouped_conv_units_span_groups():
    g = trace(Grouped(2), torch.randn(1, 3, 5, 5))
    grp = g.group("a.weight:0")
    assert grp.size == 4  # 8 channels in 2 groups: position p of each group is one unit
    gout = g.group("g.weight:0")
    assert gout.size == 4


class SE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.fc1, self.fc2 = nn.Conv2d(8, 2, 1), nn.Conv2d(2, 8, 1)
        self.gate = nn.Conv2d(8, 1, 1)
        self.out = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        y = self.conv(x)
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(y.mean((2, 3), keepdim=True)))))
        y = y * s
        y = y * torch.sigmoid(self.gate(y))  # a [B,1,H,W] gate must not tie channels together
        return self.out(y)


def test_se_and_spatial_gate():
    g = trace(SE(), torch.randn(1, 3, 4, 4))
    m = groups_by_tensor(g)
    assert m["conv.weight:0"] == m["fc2.weight:0"] == m["fc1.weight:1"] == m["gate.weight:1"]
    assert g.group(m["conv.weight:0"]).size == 8
    assert g.group(m["fc1.weight:0"]).size == 2


class LN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.ln, self.fc2 = nn.Linear(4, 6), nn.LayerNorm(6), nn.Linear(6, 2)

    def forward(self, x):
        return self.fc2(self.ln(self.fc1(x)))


def test_layernorm_prunes_with_its_producer():
    # statistics are taken over the kept channels (prunekit.graph.norms; exactness in test_norms)
    g = trace(LN(), torch.randn(2, 4))
    m = groups_by_tensor(g)
    assert m["fc1.weight:0"] == m["ln.weight:0"] == m["ln.bias:0"] == m["fc2.weight:1"]


class Unknown(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 1)
        self.conv2 = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.conv2(torch.special.erfcx(self.conv(x)))


def test_unknown_op_error_names_op_and_module():
    with pytest.raises(UnsupportedOpError, match=r"special_erfcx.*barrier"):
        trace(Unknown(), torch.randn(1, 1, 2, 2))


def test_unknown_op_barrier_opt_in():
    g = trace(Unknown(), torch.randn(1, 1, 2, 2), unknown_ops="barrier")
    assert "conv.weight:0" not in groups_by_tensor(g)


def test_ignored_layers_and_bad_name():
    g = trace(ConvBN(), torch.randn(1, 3, 8, 8), ignored_layers=["c1"])
    assert not g.groups
    with pytest.raises(ConfigError, match="not a module"):
        trace(ConvBN(), torch.randn(1, 3, 8, 8), ignored_layers=["nope"])


class DirectParam(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 1)
        self.scale = nn.Parameter(torch.ones(4, 1, 1))
        self.out = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.out(self.conv(x) * self.scale)


def test_direct_parameter_gets_a_slot():
    m = groups_by_tensor(trace(DirectParam(), torch.randn(1, 1, 3, 3)))
    assert m["scale:0"] == m["conv.weight:0"]


class TrainOnly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Conv2d(4, 2, 1)
        self.aux = nn.Conv2d(4, 3, 1)

    def forward(self, x):
        y = self.bn(self.conv(x))
        if self.training:
            return self.head(y), self.aux(y)
        return self.head(y)


def test_training_only_branch_is_traced_without_side_effects():
    model = TrainOnly().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    m = groups_by_tensor(trace(model, torch.randn(1, 1, 3, 3)))
    assert m["aux.weight:1"] == m["conv.weight:0"]
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


class KwargModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 3)

    def forward(self, input_ids, scale=1.0):
        return self.fc2(torch.relu(self.fc1(self.emb(input_ids) * scale)))


def test_keyword_inputs_and_embedding():
    import copy

    from prunekit.importance import score
    from prunekit.plan import make_plan
    from prunekit.surgery import apply_plan
    from prunekit.verify import max_rel_diff

    model = KwargModel().eval()
    inputs = {"input_ids": torch.randint(0, 10, (2, 5)), "scale": 2.0}
    g = trace(model, inputs)
    m = groups_by_tensor(g)
    assert m["emb.weight:1"] == m["fc1.weight:1"]
    assert g.group(m["fc1.weight:0"]).size == 16
    dense = copy.deepcopy(model)
    plan = make_plan(g, score(model, g, "l2"), ratio=0.5)
    apply_plan(model, plan)
    assert model.emb.embedding_dim == 4
    assert max_rel_diff(apply_plan(dense, plan, soft=True), model, inputs) <= 1e-5


def test_inputs_the_model_cannot_take_raise_trace_error() -> None:
    from prunekit.errors import TraceError

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    with pytest.raises(TraceError, match=r"does not run on the example inputs \[\(1, 5, 8, 8\)\]"):
        trace(model, torch.randn(1, 5, 8, 8))
    assert trace(model, torch.randn(1, 3, 8, 8)).groups  # the right shape traces
