"""Contract over the elementwise op registry: every name in ``UNARY``, ``CASTS`` and ``BINARY`` keeps the
channels it reads coupled, and the model through it prunes exactly (pruned == soft mask).

A new registry entry fails here until it has an invocation (the default call below, or an entry
in ``SPECIAL``) or a reason in ``NOT_ON_FLOAT_FEATURES``.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prunekit.errors import PruneWarning
from prunekit.graph import register_op
from prunekit.graph.ops import BINARY, CASTS, POOL, REDUCE, UNARY
from prunekit.pipeline import PruneConfig, prune
from prunekit.verify import max_rel_diff, soft_copy

# the deprecated upsample* names are registry entries too, so they are exercised on purpose
pytestmark = pytest.mark.filterwarnings("ignore:`nn.functional.upsample")

Unary = Callable[[Tensor], Tensor]
Binary = Callable[[Tensor, Tensor], Tensor]


def _pos(x: Tensor) -> Tensor:
    return x.abs() + 1  # a domain where log/sqrt/reciprocal/... are finite, also at zeroed channels


def _clone_then(name: str, *args: object) -> Unary:
    return lambda x: getattr(x.clone(), name)(*args)


def _as_float(fn: Unary) -> Unary:
    return lambda x: fn(x).float()


SPECIAL_UNARY: dict[str, Unary] = {
    "threshold": lambda x: F.threshold(x, 0.1, -1.0),
    "threshold_": lambda x: F.threshold(x.clone(), 0.1, -1.0, inplace=True),
    "rrelu": lambda x: F.rrelu(x, training=False),
    "dropout": lambda x: F.dropout(x, 0.5, training=False),
    "dropout_": lambda x: F.dropout(x, 0.5, training=False, inplace=True),
    "dropout1d": lambda x: F.dropout1d(x.flatten(2), 0.5, training=False).reshape(x.shape),
    "dropout2d": lambda x: F.dropout2d(x, 0.5, training=False),
    "dropout3d": lambda x: F.dropout3d(x.unsqueeze(2), 0.5, training=False).squeeze(2),
    "alpha_dropout": lambda x: F.alpha_dropout(x, 0.5, training=False),
    "feature_alpha_dropout": lambda x: F.feature_alpha_dropout(x, 0.5, training=False),
    "float_power": lambda x: torch.float_power(_pos(x), 2).float(),
    "clamp": lambda x: x.clamp(-0.5, 0.5),
    "clamp_": lambda x: x.clone().clamp_(-0.5, 0.5),
    "clip": lambda x: x.clip(-0.5, 0.5),
    "clip_": lambda x: x.clone().clip_(-0.5, 0.5),
    "clamp_min": lambda x: x.clamp_min(0.1),
    "clamp_min_": lambda x: x.clone().clamp_min_(0.1),
    "clamp_max": lambda x: x.clamp_max(0.1),
    "clamp_max_": lambda x: x.clone().clamp_max_(0.1),
    "requires_grad_": lambda x: x.detach().requires_grad_(False),
    "__invert__": lambda x: (~(x > 0)).float(),
    "bitwise_not": lambda x: torch.bitwise_not(x > 0).float(),
    "logical_not": _as_float(lambda x: torch.logical_not(x > 0)),
    "isnan": _as_float(torch.isnan),
    "isinf": _as_float(torch.isinf),
    "isfinite": _as_float(torch.isfinite),
    "fill_": _clone_then("fill_", 0.5),
    "zero_": _clone_then("zero_"),
    "erfinv": lambda x: torch.erfinv(torch.tanh(x) * 0.5),
    "gelu_": lambda x: torch._C._nn.gelu_(x.clone()),
    "_threshold": lambda x: F.threshold(x, 0.1, -1.0),
    "log_sigmoid": F.logsigmoid,
}
for _n in ("log", "log_", "log2", "log10", "log1p", "sqrt", "sqrt_", "rsqrt", "rsqrt_",
           "reciprocal", "reciprocal_"):  # fmt: skip
    SPECIAL_UNARY[_n] = (lambda n: lambda x: getattr(_pos(x), n)())(_n)

#: every CASTS entry, round-tripped back to float32 (integer/bool casts truncate: still
#: elementwise, and 0 at a soft-masked channel stays 0)
CAST_CALLS: dict[str, Unary] = {
    "to": lambda x: x.to(torch.float64).to(torch.float32),
    "type": lambda x: x.type(torch.float64).type(torch.float32),
    "type_as": lambda x: x.type_as(torch.zeros(1)),
    "float": lambda x: x.double().float(),
    "half": lambda x: x.half().float(),
    "bfloat16": lambda x: x.bfloat16().float(),
    "double": lambda x: x.double().float(),
    "long": lambda x: (x * 4).long().float(),
    "int": lambda x: (x * 4).int().float(),
    "short": lambda x: (x * 4).short().float(),
    "char": lambda x: (x * 4).clamp(-100, 100).char().float(),
    "byte": lambda x: (x * 4).clamp(0, 200).byte().float(),
    "bool": lambda x: x.clamp_min(0).bool().float(),
}

SPECIAL_BINARY: dict[str, Binary] = {
    "where": lambda a, b: torch.where(a > 0, a, b),
    "masked_fill": lambda a, b: a.masked_fill(b > 0, 0.5),
    "masked_fill_": lambda a, b: a.clone().masked_fill_(b > 0, 0.5),
    "addcmul": lambda a, b: torch.addcmul(a, a, b, value=0.5),
    "addcmul_": lambda a, b: a.clone().addcmul_(a, b, value=0.5),
    "addcdiv": lambda a, b: torch.addcdiv(a, a, _pos(b), value=0.5),
    "addcdiv_": lambda a, b: a.clone().addcdiv_(a, _pos(b), value=0.5),
    "lerp": lambda a, b: torch.lerp(a, b, 0.3),
    "lerp_": lambda a, b: a.clone().lerp_(b, 0.3),
    "copy_": lambda a, b: a.clone().copy_(b),
    "xlogy": lambda a, b: torch.xlogy(a, _pos(b)),
    "pow": lambda a, b: torch.pow(_pos(a), torch.tanh(b)),
    "pow_": lambda a, b: _pos(a).pow_(torch.tanh(b)),
    "__pow__": lambda a, b: _pos(a) ** torch.tanh(b),
    "__rpow__": lambda a, b: torch.tanh(b).__rpow__(_pos(a)),
    "__ipow__": lambda a, b: _pos(a).__ipow__(torch.tanh(b)),
}
for _n in ("div", "div_", "__truediv__", "__itruediv__", "__div__", "true_divide", "floor_divide",
           "floor_divide_", "__floordiv__", "remainder", "__mod__", "fmod"):  # fmt: skip
    SPECIAL_BINARY[_n] = (lambda n: lambda a, b: getattr(a.clone(), n)(_pos(b)))(_n)
for _n in ("__rtruediv__", "__rdiv__", "__rfloordiv__"):
    SPECIAL_BINARY[_n] = (lambda n: lambda a, b: getattr(_pos(b), n)(a))(_n)
for _n in ("eq", "ne", "gt", "lt", "ge", "le", "__eq__", "__ne__", "__gt__", "__lt__", "__ge__",
           "__le__"):  # fmt: skip
    SPECIAL_BINARY[_n] = (lambda n: lambda a, b: getattr(a, n)(b).float())(_n)
for _n in ("logical_and", "logical_or", "logical_xor", "__and__", "__or__", "__xor__", "__iand__",
           "__ior__", "bitwise_and", "bitwise_or"):  # fmt: skip
    SPECIAL_BINARY[_n] = (lambda n: lambda a, b: getattr(a > 0, n)(b > 0).float())(_n)

#: registry entries whose result does not depend on the input values or is random; they are
#: traced (coupling checked) but not compared numerically.
RANDOM_OR_CONSTANT = {"exponential_", "normal_", "uniform_", "bernoulli", "bernoulli_"}
#: registry entries that cannot run on float CPU features, with the reason.
NOT_ON_FLOAT_FEATURES = {
    "cuda": "needs a CUDA device",
    "pin_memory": "needs a CUDA device",
}


def _default_unary(name: str) -> Unary:
    fn = getattr(torch, name, None)
    if not name.startswith("__") and callable(fn) and not isinstance(fn, torch.dtype):
        return fn  # type: ignore[no-any-return]
    if hasattr(F, name):
        return getattr(F, name)  # type: ignore[no-any-return]
    if name.endswith("_") and not name.startswith("__"):
        if hasattr(Tensor, name):
            return lambda x: getattr(x.clone(), name)()
        return lambda x: getattr(F, name[:-1])(x.clone(), inplace=True)  # F.silu(inplace=True)
    return lambda x: getattr(x, name)()


def _default_binary(name: str) -> Binary:
    if name.startswith("__i") or (name.endswith("_") and not name.startswith("__")):
        return lambda a, b: getattr(a.clone(), name)(b)  # in place: never on a module output
    if name.startswith("__"):
        return lambda a, b: getattr(a, name)(b)
    return getattr(torch, name)  # type: ignore[no-any-return]


class UnaryNet(nn.Module):
    def __init__(self, fn: Unary) -> None:
        super().__init__()
        self.fn = fn
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.fn(self.conv1(x)))


class BinaryNet(nn.Module):
    def __init__(self, fn: Binary) -> None:
        super().__init__()
        self.fn = fn
        self.conv_a = nn.Conv2d(3, 8, 3, padding=1)
        self.conv_b = nn.Conv2d(3, 8, 1)
        self.conv2 = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.fn(self.conv_a(x), self.conv_b(x)))


def _names(table: list[str]) -> list[str]:
    return sorted(n for n in set(table) if n not in NOT_ON_FLOAT_FEATURES)


def _check(model: nn.Module, producers: list[str], numeric: bool) -> None:
    torch.manual_seed(0)
    for p in model.parameters():  # biases away from 0: pruned channels must really differ
        nn.init.normal_(p, 0, 0.5)
    model.eval()
    dense = copy.deepcopy(model)
    x = torch.randn(2, 3, 6, 6)
    cfg = PruneConfig(ratio=0.5, criterion="l2", ignored_layers=["conv2"])
    result = prune(model, x, cfg, verify=numeric)  # random ops cannot match their soft mask
    group = next(g for g in result.graph.groups if g.id == f"{producers[0]}.weight:0")
    tensors = {s.tensor for s in group.slots}
    # the op kept the channels it reads coupled: every producer and the consumer share the group
    assert {f"{p}.weight" for p in producers} | {"conv2.weight"} <= tensors
    assert model.conv2.in_channels == 4
    if numeric:
        assert max_rel_diff(soft_copy(dense, result.plan), model, x) <= 1e-4


@pytest.mark.parametrize("name", _names(UNARY))
def test_unary_op_keeps_channels_coupled_and_prunes_exactly(name: str) -> None:
    fn = SPECIAL_UNARY.get(name) or _default_unary(name)
    _check(UnaryNet(fn), ["conv1"], numeric=name not in RANDOM_OR_CONSTANT)


def test_every_cast_has_an_invocation() -> None:
    assert set(CASTS) == set(CAST_CALLS)


@pytest.mark.parametrize("name", sorted(CASTS))
def test_cast_keeps_channels_coupled_and_prunes_exactly(name: str) -> None:
    _check(UnaryNet(CAST_CALLS[name]), ["conv1"], numeric=True)


class CastIndexNet(nn.Module):
    """Spatial positions built in forward as floats and cast with ``.long()`` before indexing
    (MViTv2's ``rel_pos_h[dist_h.long()]``): the gathered features keep their channels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv1(x)
        rows = (torch.arange(y.shape[2], dtype=torch.float32) * 0.5).long()  # 0, 0, 1, 1, ...
        return self.conv2(y[:, :, rows])


def test_cast_index_keeps_channels_coupled_and_prunes_exactly() -> None:
    _check(CastIndexNet(), ["conv1"], numeric=True)


@pytest.mark.parametrize("name", _names(BINARY))
def test_binary_op_keeps_channels_coupled_and_prunes_exactly(name: str) -> None:
    fn = SPECIAL_BINARY.get(name) or _default_binary(name)
    _check(BinaryNet(fn), ["conv_a", "conv_b"], numeric=True)


def _vals(fn: Callable[[Tensor], object]) -> Unary:
    return lambda x: fn(x).values  # type: ignore[attr-defined]


#: every REDUCE entry, reducing over the last (spatial) dim, keepdim where the op has it
SPATIAL_REDUCE: dict[str, Unary] = {
    "sum": lambda x: x.sum(-1, keepdim=True),
    "mean": lambda x: x.mean(-1, keepdim=True),
    "amax": lambda x: x.amax(-1, keepdim=True),
    "amin": lambda x: x.amin(-1, keepdim=True),
    "max": _vals(lambda x: x.max(-1, keepdim=True)),
    "min": _vals(lambda x: x.min(-1, keepdim=True)),
    "prod": lambda x: torch.tanh(x).add(1).prod(-1, keepdim=True),
    "std": lambda x: x.std(-1, keepdim=True),
    "var": lambda x: x.var(-1, keepdim=True),
    "std_mean": lambda x: sum(torch.std_mean(x, -1, keepdim=True)),  # type: ignore[return-value]
    "var_mean": lambda x: sum(torch.var_mean(x, -1, keepdim=True)),  # type: ignore[return-value]
    "norm": lambda x: x.norm(dim=-1, keepdim=True),
    "logsumexp": lambda x: x.logsumexp(-1, keepdim=True),
    "argmax": lambda x: x.argmax(-1, keepdim=True).float(),
    "argmin": lambda x: x.argmin(-1, keepdim=True).float(),
    "median": _vals(lambda x: x.median(-1, keepdim=True)),
    "nanmedian": _vals(lambda x: x.nanmedian(-1, keepdim=True)),
    "nanmean": lambda x: x.nanmean(-1, keepdim=True),
    "nansum": lambda x: x.nansum(-1, keepdim=True),
    "all": lambda x: (x > 0).all(-1, keepdim=True).float(),
    "any": lambda x: (x > 0).any(-1, keepdim=True).float(),
    "count_nonzero": lambda x: torch.count_nonzero(x > 0, dim=-1).unsqueeze(-1).float(),
    "softmax": lambda x: x.softmax(-1),
    "log_softmax": lambda x: x.log_softmax(-1),
    "_softmax": lambda x: torch._softmax(x, -1, False),
    "cumsum": lambda x: x.cumsum(-1),
    "cumprod": lambda x: torch.tanh(x).cumprod(-1),
    "normalize": lambda x: F.normalize(x, dim=-1),
    "topk": _vals(lambda x: x.topk(2, -1)),
    "sort": _vals(lambda x: x.sort(-1)),
    "argsort": lambda x: x.argsort(-1).float(),
    "kthvalue": _vals(lambda x: x.kthvalue(2, -1, keepdim=True)),
    "mode": _vals(lambda x: x.mode(-1, keepdim=True)),
    "aminmax": lambda x: torch.aminmax(x, dim=-1, keepdim=True).min,
    "linalg_vector_norm": lambda x: torch.linalg.vector_norm(x, dim=-1, keepdim=True),
    # normalises across neighbouring channels: mixes them (checked in the test below)
    "local_response_norm": lambda x: F.local_response_norm(x, 2),
}
#: the same ops along the channel dim, which they mix: the producer must be kept whole
CHANNEL_MIXING: dict[str, Unary] = {
    "softmax": lambda x: x.softmax(1),
    "log_softmax": lambda x: x.log_softmax(1),
    "cumsum": lambda x: x.cumsum(1),
    "normalize": lambda x: F.normalize(torch.sigmoid(x), dim=1),  # sigmoid(0) != 0
    "sort": _vals(lambda x: x.sort(1)),
    "local_response_norm": lambda x: F.local_response_norm(x, 2),
    "mean": lambda x: x * x.mean(1, keepdim=True),
    "sum (of a tensor not 0 at pruned channels)": lambda x: x / x.exp().sum(1, keepdim=True),
}
#: reductions over the channels that zeros do not change, of a tensor that is 0 at pruned
#: channels (a conv output through ReLU and products): the producer prunes, exactly
ZERO_INVARIANT: dict[str, Unary] = {
    "x.pow(2).sum(dim=1)": lambda x: x / (x.pow(2).sum(dim=1, keepdim=True) + 1e-6).sqrt(),
    "norm": lambda x: x / (torch.relu(x).norm(dim=1, keepdim=True) + 1e-6),
    "linalg_vector_norm": lambda x: x * torch.linalg.vector_norm(x * x, dim=1, keepdim=True),
    "normalize": lambda x: F.normalize(torch.relu(x), dim=1),
    "sum": lambda x: x + x.abs().sum(1, keepdim=True),
}


@pytest.mark.parametrize("name", sorted(ZERO_INVARIANT))
def test_zero_invariant_channel_reduction_prunes_exactly(name: str) -> None:
    _check(UnaryNet(ZERO_INVARIANT[name]), ["conv1"], numeric=True)


def test_every_reduce_entry_has_a_case() -> None:
    assert set(REDUCE) == set(SPATIAL_REDUCE)


@pytest.mark.parametrize("name", sorted(set(SPATIAL_REDUCE) - {"local_response_norm"}))
def test_spatial_reduction_keeps_channels_and_prunes_exactly(name: str) -> None:
    _check(UnaryNet(SPATIAL_REDUCE[name]), ["conv1"], numeric=True)


@pytest.mark.parametrize("name", sorted(CHANNEL_MIXING))
def test_reduction_across_channels_keeps_them_whole(name: str) -> None:
    model = UnaryNet(CHANNEL_MIXING[name]).eval()
    result = prune(model, torch.randn(2, 3, 6, 6), PruneConfig(ratio=0.5))
    assert model.conv1.out_channels == 8 and model.conv2.in_channels == 8
    assert "conv1.weight:0" in result.graph.frozen  # with the reason recorded


#: every POOL entry, applied to the (2, 8, 6, 6) features (1-d pools over the flattened map;
#: the reshape back takes its channel count from the tensor, as a literal 8 would tie it)
POOLS: dict[str, Unary] = {
    "max_pool1d": lambda x: F.max_pool1d(x.flatten(2), 2).reshape(*x.shape[:2], 3, 6),
    "max_pool2d": lambda x: F.max_pool2d(x, 2),
    "max_pool3d": lambda x: F.max_pool3d(x.unsqueeze(2), (1, 2, 2)).squeeze(2),
    "avg_pool1d": lambda x: F.avg_pool1d(x.flatten(2), 2).reshape(*x.shape[:2], 3, 6),
    "avg_pool2d": lambda x: F.avg_pool2d(x, 2),
    "avg_pool3d": lambda x: F.avg_pool3d(x.unsqueeze(2), (1, 2, 2)).squeeze(2),
    "adaptive_avg_pool1d": lambda x: F.adaptive_avg_pool1d(x.flatten(2), 9).reshape(
        *x.shape[:2], 3, 3
    ),
    "adaptive_avg_pool2d": lambda x: F.adaptive_avg_pool2d(x, 3),
    "adaptive_avg_pool3d": lambda x: F.adaptive_avg_pool3d(x.unsqueeze(2), (1, 3, 3)).squeeze(2),
    "adaptive_max_pool1d": lambda x: F.adaptive_max_pool1d(x.flatten(2), 9).reshape(
        *x.shape[:2], 3, 3
    ),
    "adaptive_max_pool2d": lambda x: F.adaptive_max_pool2d(x, 3),
    "adaptive_max_pool3d": lambda x: F.adaptive_max_pool3d(x.unsqueeze(2), (1, 3, 3)).squeeze(2),
    "lp_pool1d": lambda x: F.lp_pool1d(x.flatten(2), 2, 2).reshape(*x.shape[:2], 3, 6),
    "lp_pool2d": lambda x: F.lp_pool2d(x, 2, 2),
    "max_pool1d_with_indices": lambda x: F.max_pool1d(x.flatten(2), 2, return_indices=True)[
        0
    ].reshape(*x.shape[:2], 3, 6),
    "max_pool2d_with_indices": lambda x: F.max_pool2d(x, 2, return_indices=True)[0],
    "max_pool3d_with_indices": lambda x: F.max_pool3d(
        x.unsqueeze(2), (1, 2, 2), return_indices=True
    )[0].squeeze(2),
    "adaptive_max_pool1d_with_indices": lambda x: F.adaptive_max_pool1d(
        x.flatten(2), 9, return_indices=True
    )[0].reshape(*x.shape[:2], 3, 3),
    "adaptive_max_pool2d_with_indices": lambda x: F.adaptive_max_pool2d(x, 3, return_indices=True)[
        0
    ],
    "fractional_max_pool2d": lambda x: F.fractional_max_pool2d(
        x, 2, output_size=3, _random_samples=torch.full((x.shape[0], x.shape[1], 2), 0.5)
    ),
    "interpolate": lambda x: F.interpolate(x, scale_factor=2, mode="nearest"),
    "upsample": lambda x: F.upsample(x, scale_factor=2, mode="bilinear"),
    "upsample_nearest": lambda x: F.upsample_nearest(x, scale_factor=2),
    "upsample_bilinear": lambda x: F.upsample_bilinear(x, scale_factor=2),
    "grid_sample": lambda x: F.grid_sample(
        x, torch.zeros(x.shape[0], 3, 3, 2), align_corners=False
    ),
}
#: registered for a tracer-internal hook, not a public op
POOL_INTERNAL = {"channel_shuffle_placeholder"}


def test_every_pool_entry_has_a_case() -> None:
    assert set(POOL) == set(POOLS) | POOL_INTERNAL


@pytest.mark.parametrize("name", sorted(POOLS))
def test_pooling_keeps_channels_and_prunes_exactly(name: str) -> None:
    _check(UnaryNet(POOLS[name]), ["conv1"], numeric=True)


# --------------------------------------------------------------------------- generic mechanisms
# Each case is a failure class met on real architectures (timm), reduced to a toy: after
# pruning at ratio 0.5 the model must compute what its soft mask computes, and the channels
# named in ``kept`` must stay whole with a recorded reason.


class SamePad(nn.Conv2d):
    """timm ``Conv2dSame``: the padding is computed from ``weight.shape[-2:]``."""

    def forward(self, x: Tensor) -> Tensor:
        kh, kw = self.weight.shape[-2:]
        ih, iw = x.size()[-2:]
        ph = max((-(-ih // self.stride[0]) - 1) * self.stride[0] + kh - ih, 0)
        pw = max((-(-iw // self.stride[1]) - 1) * self.stride[1] + kw - iw, 0)
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class SizeReads(nn.Module):
    """``weight.size(-1)`` as a padding, ``weight.shape[0]`` as a view size."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = SamePad(3, 8, 3, 2)
        self.dw = SamePad(8, 8, 3, groups=8)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn(self.dw(self.conv1(x)))
        k = self.conv1.weight.size(-1)
        y = F.avg_pool2d(y, k, stride=1, padding=k // 2)
        b = y.shape[0]
        y = y.view(b, self.conv1.weight.shape[0], -1).view_as(y)
        return self.conv2(y)


class StdConv(nn.Conv2d):
    """Weight standardisation over dims 1.. with a per-channel gain (NF-ResNet style)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.gain = nn.Parameter(torch.ones(self.out_channels, 1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight
        w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / (w.std(dim=(1, 2, 3), keepdim=True) + 1e-5)
        return F.conv2d(x, w * self.gain, self.bias, self.stride, self.padding)


class ScaledStdConv(StdConv):
    """timm ``ScaledStdConv2d``: ``batch_norm`` over ``weight.reshape(1, out_channels, -1)``."""

    def forward(self, x: Tensor) -> Tensor:
        w = F.batch_norm(
            self.weight.reshape(1, self.out_channels, -1), None, None,
            weight=(self.gain * 0.5).view(-1), training=True, momentum=0.0, eps=1e-5,
        ).reshape_as(self.weight)  # fmt: skip
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


class Std(nn.Module):
    def __init__(self, conv: type[nn.Conv2d]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.std = conv(8, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(F.relu(self.std(F.relu(self.conv1(x)))))


class LayerScale(nn.Module):
    """A per-channel ``gamma`` applied to tokens from two producers (a class token concat, as
    in XCiT's class attention; optionally over a transposed layout, as in ResMLP)."""

    def __init__(self, op: str, transposed: bool) -> None:
        super().__init__()
        self.op, self.transposed = op, transposed
        self.conv1, self.conv_cls = nn.Conv2d(3, 8, 1), nn.Conv2d(3, 8, 1)
        self.gamma = nn.Parameter(torch.linspace(0.5, 2.0, 8))
        self.head = nn.Linear(8, 4)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.conv1(x).flatten(2).transpose(1, 2)
        cls = self.conv_cls(x).mean((2, 3)).unsqueeze(1)
        z = torch.cat([cls, tokens], 1)
        gamma = self.gamma
        if self.transposed:
            z, gamma = z.transpose(1, 2), gamma.view(-1, 1)
        z = gamma * z if self.op == "mul" else z + gamma
        return self.head(z.transpose(1, 2) if self.transposed else z)


class BlurPool(nn.Module):
    """An anti-alias filter held in a non-persistent buffer (tresnet), ``groups`` from the
    input (or, in ``literal`` mode, a literal count that cannot follow pruning)."""

    def __init__(self, literal: bool) -> None:
        super().__init__()
        self.literal = literal
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.register_buffer("filt", torch.rand(8, 1, 3, 3), persistent=False)
        self.conv2 = nn.Conv2d(8, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.conv1(x))
        groups = 8 if self.literal else y.shape[1]
        return self.conv2(F.conv2d(y, self.filt, padding=1, groups=groups))


class Im2col(nn.Module):
    """``F.unfold`` into a linear layer and ``F.fold`` back (im2col has no int64 kernel)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 9, 4)
        self.conv2 = nn.Conv2d(8, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.conv1(x))
        cols = F.unfold(y, 3, padding=1)
        back = F.fold(cols, tuple(y.shape[2:]), 3, padding=1)
        return self.fc(cols.transpose(1, 2)).mean(1) + self.conv2(back).mean((2, 3))


#: name -> (model factory, (producer whose group must shrink) or None, channels kept whole)
MECHANISMS: dict[str, tuple[Callable[[], nn.Module], str | None, list[str]]] = {
    "A: parameter shape reads (Conv2dSame, size(-1), shape[0])": (SizeReads, "conv1", []),
    "B: weight standardisation with gain": (lambda: Std(StdConv), "std", ["std.weight:1"]),
    "B: batch_norm over weight.reshape(1, out_channels, -1)": (
        lambda: Std(ScaledStdConv), None, ["std.weight:0", "std.weight:1", "conv1.weight:0"]),
    "D: gamma * tokens of two producers": (lambda: LayerScale("mul", False), "conv1", []),
    "D: tokens + gamma": (lambda: LayerScale("add", False), "conv1", []),
    "D: gamma * transposed tokens": (lambda: LayerScale("mul", True), "conv1", []),
    "D: transposed tokens + gamma": (lambda: LayerScale("add", True), "conv1", []),
    "E: non-persistent buffer as a depthwise filter": (lambda: BlurPool(False), "conv1", []),
    "E: functional conv with a literal groups count": (
        lambda: BlurPool(True), None, ["conv1.weight:0"]),
    "F: F.unfold / F.fold": (Im2col, "conv1", []),
}  # fmt: skip


def _randomized(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for p in model.parameters():
        nn.init.normal_(p, 0, 0.5)
    return model.eval()


@pytest.mark.parametrize("name", sorted(MECHANISMS))
def test_mechanism_prunes_exactly_or_keeps_channels_with_a_reason(name: str) -> None:
    factory, producer, kept = MECHANISMS[name]
    model = _randomized(factory())
    dense = copy.deepcopy(model)
    x = torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PruneWarning)  # the all-kept cases say so
        result = prune(model, x, PruneConfig(ratio=0.5, criterion="l2"), verify=False)
    assert max_rel_diff(soft_copy(dense, result.plan), model, x) <= 1e-4
    for key in kept:
        assert result.graph.frozen[key], key  # a recorded reason
    if producer is not None:
        group = result.graph.group(f"{producer}.weight:0")
        assert len(result.plan.groups[group.id]["keep"]) < group.size
        # every parameter of the producer's layer shrinks with it (never one pruned alone)
        shrunk = {t for t in result.plan.tensors if t.startswith(f"{producer}.")}
        assert {f"{producer}.weight", f"{producer}.bias"} <= shrunk


def test_standardised_weight_gain_is_pruned_with_its_conv() -> None:
    model = _randomized(Std(StdConv))
    result = prune(model, torch.randn(2, 3, 8, 8), PruneConfig(ratio=0.5), verify=False)
    group = result.graph.group("std.weight:0")
    assert {"std.gain", "std.bias", "conv2.weight"} <= set(group.tensors)
    assert model.std.gain.shape[0] == model.std.weight.shape[0] == 4


def test_layer_scale_is_coupled_to_every_producer() -> None:
    model = _randomized(LayerScale("mul", False))
    graph = prune(model, torch.randn(2, 3, 8, 8), PruneConfig(ratio=0.5), verify=False).graph
    group = graph.group("conv1.weight:0")
    assert {"conv_cls.weight", "gamma", "head.weight"} <= set(group.tensors)


def test_a_failing_handler_is_a_clear_error_or_a_barrier() -> None:
    from prunekit.errors import UnsupportedOpError
    from prunekit.graph.tracer import OP_HANDLERS

    def broken(*args: object) -> None:
        raise RuntimeError("boom")

    saved = OP_HANDLERS["erf"]
    try:
        register_op("erf", override=True)(broken)
        model = UnaryNet(torch.erf).eval()
        with pytest.raises(UnsupportedOpError, match=r"handler for op 'erf' failed.*boom"):
            prune(model, torch.randn(2, 3, 6, 6), PruneConfig(ratio=0.5))
        cfg = PruneConfig(ratio=0.5, unknown_ops="barrier")
        result = prune(model, torch.randn(2, 3, 6, 6), cfg)
        assert "conv1.weight:0" in result.graph.frozen and model.conv1.out_channels == 8
    finally:
        OP_HANDLERS["erf"] = saved


def test_register_op_refuses_a_silent_overwrite() -> None:
    from prunekit.errors import ConfigError

    with pytest.raises(ConfigError, match="override=True"):
        register_op("conv2d")(lambda *a: None)
