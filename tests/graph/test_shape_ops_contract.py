"""Contract over the shape-op registry: every channel-preserving view, permutation, split, join
and indexing op keeps the coupling and prunes exactly (pruned == soft mask), including the ops
that move channels around (channel shuffle, flips and rolls over channels, chunk-and-swap).

Each case maps the (2, 8, 6, 6) output of ``conv1`` to what ``conv2`` reads; shapes are taken
from the tensor (``x.shape``), as literal channel counts tie the dim by design.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prunekit.graph.shape_ops import LIST_FIRST, SELF_ONLY
from prunekit.pipeline import PruneConfig, prune
from prunekit.verify import max_rel_diff, soft_copy

Case = tuple[Callable[[Tensor], Tensor], int]  # (fn, channels conv2 reads)


def _idx(x: Tensor, dim: int, picks: list[int]) -> Tensor:
    shape = [1] * x.dim()
    shape[dim] = len(picks)
    return (
        torch.tensor(picks).reshape(shape).expand(*x.shape[:dim], len(picks), *x.shape[dim + 1 :])
    )


def _matrix(x: Tensor) -> Tensor:
    return x.transpose(0, 1).reshape(x.shape[1], -1)  # (channels, rest): 2-d for t / T


def _unmatrix(m: Tensor, x: Tensor) -> Tensor:
    return m.reshape(x.shape[1], x.shape[0], *x.shape[2:]).transpose(0, 1)


CASES: dict[str, Case] = {
    # permutations and views, round trips
    "permute": (lambda x: x.permute(0, 2, 3, 1).permute(0, 3, 1, 2), 8),
    "transpose": (lambda x: x.transpose(1, 3).transpose(1, 3), 8),
    "transpose_": (lambda x: x.clone().transpose_(1, 3).transpose_(1, 3), 8),
    "t": (lambda x: _unmatrix(_matrix(x).t().t(), x), 8),
    "T.__get__": (lambda x: _unmatrix(_matrix(x).T.T, x), 8),
    "mT.__get__": (lambda x: x.mT.mT, 8),
    "unsqueeze": (lambda x: x.unsqueeze(2).squeeze(2), 8),
    "unsqueeze_": (lambda x: x.clone().unsqueeze_(2).squeeze_(2), 8),
    "squeeze": (lambda x: x.unsqueeze(-1).squeeze(-1), 8),
    "squeeze_": (lambda x: x.clone().unsqueeze_(-1).squeeze_(-1), 8),
    "movedim": (lambda x: x.movedim(1, 3).movedim(3, 1), 8),
    "moveaxis": (lambda x: x.moveaxis(1, 3).moveaxis(3, 1), 8),
    "swapaxes": (lambda x: x.swapaxes(1, 2).swapaxes(1, 2), 8),
    "swapdims": (lambda x: x.swapdims(1, 2).swapdims(1, 2), 8),
    "flip": (lambda x: x.flip(1, 3), 8),  # reverses the channels too
    "fliplr": (lambda x: x.fliplr(), 8),  # dim 1: the channels
    "flipud": (lambda x: x.flipud(), 8),
    "roll": (lambda x: x.roll(2, 3), 8),
    "contiguous": (lambda x: x.contiguous(memory_format=torch.channels_last), 8),
    "expand": (lambda x: x.mean(2, keepdim=True).expand(-1, -1, 6, -1), 8),
    "expand_as": (lambda x: x.mean(2, keepdim=True).expand_as(x), 8),
    "broadcast_to": (lambda x: x.mean(2, keepdim=True).broadcast_to(x.shape), 8),
    "repeat": (lambda x: x[:, :, :3].repeat(1, 1, 2, 1), 8),
    "tile": (lambda x: x[:, :, :3].tile((1, 1, 2, 1)), 8),
    "view": (lambda x: x.view(x.shape[0], x.shape[1], -1).view(x.shape), 8),
    "reshape": (lambda x: x.reshape(x.shape[0], x.shape[1], -1).reshape(x.shape), 8),
    "view_as": (lambda x: x.flatten(2).view_as(x), 8),
    "reshape_as": (lambda x: x.flatten(2).reshape_as(x), 8),
    "flatten": (lambda x: x.flatten(2).unflatten(2, (6, 6)), 8),
    "unflatten": (lambda x: x.flatten(2).unflatten(-1, x.shape[2:]), 8),
    "ravel": (lambda x: x.ravel().view_as(x), 8),
    # selection and gathering along spatial dims
    "select": (lambda x: torch.stack([x.select(2, i) for i in range(x.shape[2])], 2), 8),
    "diagonal": (lambda x: x.diagonal(dim1=2, dim2=3).unsqueeze(-1), 8),
    "index_select": (lambda x: x.index_select(3, torch.tensor([0, 2, 4])), 8),
    "gather": (lambda x: x.gather(3, _idx(x, 3, [5, 1, 1])), 8),
    "take_along_dim": (lambda x: torch.take_along_dim(x, _idx(x, 3, [0, 3]), dim=3), 8),
    "unfold": (lambda x: x.unfold(3, 2, 2).flatten(3), 8),
    "repeat_interleave": (lambda x: x.repeat_interleave(2, dim=3)[..., ::2], 8),
    "narrow": (lambda x: x.narrow(3, 1, 4), 8),
    "__getitem__": (lambda x: x[:, :, 1:, ::2], 8),
    "__setitem__": (lambda x: _set_row(x), 8),
    # channels moved between positions or into space and back
    "pixel_shuffle": (lambda x: F.pixel_unshuffle(F.pixel_shuffle(x, 2), 2), 8),
    "pixel_unshuffle": (lambda x: F.pixel_shuffle(F.pixel_unshuffle(x, 2), 2), 8),
    "channel_shuffle": (lambda x: F.channel_shuffle(x, 2), 8),
    "native_channel_shuffle": (lambda x: torch.native_channel_shuffle(x, 2), 8),
    "chunk": (lambda x: torch.cat(x.chunk(2, 1)[::-1], 1), 8),
    "tensor_split": (lambda x: torch.cat(torch.tensor_split(x, 2, dim=1)[::-1], 1), 8),
    "unbind": (lambda x: torch.stack(x.unbind(2), 2), 8),
    "split": (lambda x: torch.cat(x.split(x.shape[1] // 2, dim=1)[::-1], 1), 8),  # computed
    "split_with_sizes": (lambda x: torch.cat(x.split([2, 4], dim=3)[::-1], 3), 8),
    # joins
    "cat": (lambda x: torch.cat([x, x.flip(3)], 1), 16),
    "concat": (lambda x: torch.concat([x, x], 1), 16),
    "concatenate": (lambda x: torch.concatenate([x, x], 1), 16),
    "hstack": (lambda x: torch.hstack([x, x]), 16),  # dim 1 for n-d tensors
    "column_stack": (lambda x: torch.column_stack([x, x]), 16),
    "vstack": (lambda x: torch.vstack([x, x]), 8),  # batch
    "dstack": (lambda x: torch.dstack([x, x]), 8),  # height
    "stack": (lambda x: torch.stack([x, x.flip(2)], 2).mean(2), 8),
    # gates: halves of the channel dim multiplied together
    "glu": (lambda x: F.glu(x, 1), 4),
    "GLU": (lambda x: nn.GLU(dim=1)(x), 4),
}


#: ops addressing channels by literal numbers: after pruning the same numbers would name other
#: channels, so the producer must be kept whole (never a silently wrong model)
LITERAL_CHANNEL_CASES: dict[str, Case] = {
    "roll": (lambda x: x.roll(3, 1), 8),
    "roll (flattened)": (lambda x: x.roll(5), 8),
    "select": (lambda x: x.select(1, 2).unsqueeze(1), 1),
    "index_select": (lambda x: x.index_select(1, torch.tensor([0, 3, 5, 6])), 4),
    "gather": (lambda x: x.gather(1, _idx(x, 1, [1, 0, 3, 2, 5, 4, 7, 6])), 8),
    "take_along_dim": (lambda x: torch.take_along_dim(x, _idx(x, 1, [7, 0, 1]), dim=1), 3),
    "diagonal": (lambda x: x.diagonal(dim1=1, dim2=2).unsqueeze(1), 1),
    "unfold": (lambda x: x.unfold(1, 2, 2).flatten(-2), 4),
    "split": (lambda x: torch.cat(x.split(4, dim=1)[::-1], 1), 8),
    "split_with_sizes": (lambda x: torch.cat(x.split([2, 6], dim=1)[::-1], 1), 8),
    "__getitem__ (list)": (lambda x: x[:, [1, 5]], 2),
    "view (literal)": (lambda x: x.view(2, 2, 4, 6, 6).transpose(1, 2).reshape(2, 8, 6, 6), 8),
}


#: literal windows of the channel dim: the positions before the window's end are kept whole,
#: the ones after it prune (they are not read), and the result is exact
LITERAL_WINDOWS: dict[str, tuple[Callable[[Tensor], Tensor], int, int]] = {
    # (fn, channels conv2 reads, conv1's channels after pruning)
    "x[:, 2:6]": (lambda x: x[:, 2:6], 4, 7),
    "x[:, :5]": (lambda x: x[:, :5], 5, 7),
    "x.narrow(1, 2, 4)": (lambda x: x.narrow(1, 2, 4), 4, 7),
    "x[:, 3:]": (lambda x: x[:, 3:], 5, 6),  # the first 3 stay, the 5 read ones prune
    "x[:, :8] (the identity)": (lambda x: x[:, :8], 8, 4),
    "x[:, :100] (the identity)": (lambda x: x[:, :100], 8, 4),
}


def _set_row(x: Tensor) -> Tensor:
    y = x.clone()
    y[:, :, 0] = 0.5
    return y


class Net(nn.Module):
    def __init__(self, fn: Callable[[Tensor], Tensor], width: int) -> None:
        super().__init__()
        self.fn = fn
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 4, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.fn(self.conv1(x)))


def test_every_registry_entry_has_a_case() -> None:
    registered = set(SELF_ONLY) | set(LIST_FIRST)
    assert registered <= set(CASES), sorted(registered - set(CASES))


def _pruned(fn: Callable[[Tensor], Tensor], width: int) -> tuple[Net, Net, Tensor, object]:
    torch.manual_seed(0)
    model = Net(fn, width)
    for p in model.parameters():
        nn.init.normal_(p, 0, 0.5)
    model.eval()
    dense = copy.deepcopy(model)
    x = torch.randn(2, 3, 6, 6)
    result = prune(model, x, PruneConfig(ratio=0.5, criterion="l2", ignored_layers=["conv2"]))
    return dense, model, x, result


@pytest.mark.parametrize("name", sorted(LITERAL_CHANNEL_CASES))
def test_literal_channel_positions_keep_the_producer_whole(name: str) -> None:
    fn, width = LITERAL_CHANNEL_CASES[name]
    dense, model, x, result = _pruned(fn, width)
    assert model.conv1.out_channels == 8 and model.conv2.in_channels == width
    assert "conv1.weight:0" in result.graph.frozen  # type: ignore[attr-defined]
    assert max_rel_diff(dense, model, x) == 0.0


@pytest.mark.parametrize("name", sorted(CASES))
def test_shape_op_keeps_channels_coupled_and_prunes_exactly(name: str) -> None:
    fn, width = CASES[name]
    dense, model, x, result = _pruned(fn, width)
    group = next(g for g in result.graph.groups if g.id == "conv1.weight:0")
    assert {s.tensor for s in group.slots} >= {"conv1.weight", "conv2.weight"}
    assert model.conv1.out_channels == 4 and model.conv2.in_channels == width // 2
    assert max_rel_diff(soft_copy(dense, result.plan), model, x) <= 1e-4


@pytest.mark.parametrize("name", sorted(LITERAL_WINDOWS))
def test_literal_channel_window_keeps_its_prefix_and_prunes_the_rest(name: str) -> None:
    fn, width, left = LITERAL_WINDOWS[name]
    dense, model, x, result = _pruned(fn, width)
    assert model.conv1.out_channels == left
    if left > 4:
        assert "conv1.weight:0" in result.graph.frozen  # type: ignore[attr-defined]
    assert max_rel_diff(soft_copy(dense, result.plan), model, x) <= 1e-4  # type: ignore[arg-type]


class Ghost(nn.Module):
    """GhostNet's module: a primary conv, a cheap depthwise conv of it, concatenated, then
    ``out[:, :out_chs]`` (the identity when ``out_chs`` is the concat's width)."""

    def __init__(self, out_chs: int) -> None:
        super().__init__()
        self.out_chs = out_chs
        self.primary = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.ReLU())
        self.cheap = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.BatchNorm2d(4))
        self.conv2 = nn.Conv2d(out_chs, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.primary(x)
        out = torch.cat([x1, self.cheap(x1)], dim=1)
        return self.conv2(out[:, : self.out_chs])


class SelectiveKernel(nn.Module):
    """SKNet's fusion: paths stacked on a new dim, a softmax over the paths, a sum over them."""

    def __init__(self) -> None:
        super().__init__()
        self.paths = nn.ModuleList([nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 8, 1)])
        self.fc_select = nn.Conv2d(8, 16, 1)
        self.conv2 = nn.Conv2d(8, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        xs = torch.stack([torch.relu(p(x)) for p in self.paths], 1)  # [B, 2, 8, H, W]
        a = self.fc_select(xs.sum(1).mean((2, 3), keepdim=True))
        b, c, h, w = a.shape
        a = a.view(b, 2, c // 2, h, w).softmax(dim=1)
        return self.conv2((xs * a).sum(1))


@pytest.mark.parametrize("out_chs,left", [(8, 2), (7, 4)])
def test_ghost_module_prunes_what_its_literal_slice_allows(out_chs: int, left: int) -> None:
    model = Ghost(out_chs)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight)
            nn.init.normal_(m.bias)
    model.eval()
    dense, x = copy.deepcopy(model), torch.randn(2, 3, 6, 6)
    result = prune(model, x, PruneConfig(ratio=0.5))
    assert model.primary[0].out_channels == left  # 7 of 8 read: the first 7 stay whole
    assert max_rel_diff(soft_copy(dense, result.plan), model, x) <= 1e-4


def test_reduction_over_a_stacked_dim_couples_the_paths() -> None:
    torch.manual_seed(0)
    model = SelectiveKernel().eval()
    dense, x = copy.deepcopy(model), torch.randn(2, 3, 6, 6)
    result = prune(model, x, PruneConfig(ratio=0.5))
    group = result.graph.group("paths.0.weight:0")
    assert {"paths.1.weight", "fc_select.weight", "conv2.weight"} <= set(group.tensors)
    assert model.paths[0].out_channels == model.paths[1].out_channels == 4
    assert model.fc_select.out_channels == 8  # both paths' selectors of each kept channel
    assert max_rel_diff(soft_copy(dense, result.plan), model, x) <= 1e-4


class CountFromOther(nn.Module):
    """EdgeNeXt's cross-covariance attention: the attention output (kept whole) is reshaped
    with the block input's channel count ``C``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.fc_v = nn.Linear(8, 8)
        self.proj = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc1(x)
        b, n, c = h.shape
        v = self.fc_v(h).transpose(1, 2)  # [B, 8, N]
        a = torch.softmax(v @ v.transpose(1, 2), -1) @ v  # mixes: kept whole
        return self.proj(a.transpose(1, 2).reshape(b, n, c))


def test_a_channel_count_sizing_a_fixed_dim_keeps_its_channels() -> None:
    torch.manual_seed(0)
    model = CountFromOther().eval()
    dense, x = copy.deepcopy(model), torch.randn(2, 5, 4)
    result = prune(model, x, PruneConfig(ratio=0.5))
    assert model.fc1.out_features == 8  # C sizes the attention output, which cannot shrink
    assert "fc1.weight:0" in result.graph.frozen
    assert max_rel_diff(dense, model, x) <= 1e-6


#: reads of a ``[3, 8]`` per-channel table at literal row positions; each returns the
#: ``[8]`` (or scalar) it adds to the features
TABLE_READS: dict[str, Callable[[Tensor], Tensor]] = {
    "whole": lambda t: t.sum(0),
    "row": lambda t: t[1],
    "rows_from": lambda t: t[1:].sum(0),
    "index_tensor": lambda t: t[torch.tensor([0, 2])].sum(0),
    "cast_index": lambda t: t[(torch.arange(2, dtype=torch.float32) * 2).long()].sum(0),
}


class TableBias(nn.Module):
    """A parameter read at literal positions along one dim (a position-embedding slice, a
    relative-position table row): its other dim follows the channels it is added to."""

    def __init__(self, read: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.read = read
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.table = nn.Parameter(torch.randn(3, 8))
        self.conv2 = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        bias = self.read(self.table)
        y = self.conv1(x)
        return self.conv2(y + bias[None, :, None, None] if bias.dim() else y * bias)


def _prune_table(read: Callable[[Tensor], Tensor]) -> tuple[TableBias, float, object]:
    torch.manual_seed(0)
    model = TableBias(read).eval()
    dense, x = copy.deepcopy(model), torch.randn(2, 3, 6, 6)
    result = prune(model, x, PruneConfig(ratio=0.5, ignored_layers=["conv2"]))
    return model, max_rel_diff(soft_copy(dense, result.plan), model, x), result


@pytest.mark.parametrize("read", sorted(TABLE_READS))
def test_table_read_at_literal_rows_prunes_its_columns_exactly(read: str) -> None:
    model, diff, _ = _prune_table(TABLE_READS[read])
    assert model.conv1.out_channels == 4
    assert model.table.shape == (3, 4)  # rows stay where the literal positions expect them
    assert diff <= 1e-4


def test_table_read_at_literal_positions_on_every_dim_is_kept_whole() -> None:
    model, diff, result = _prune_table(lambda t: t[1, 2] + t[:, 0].sum())
    assert model.table.shape == (3, 8)
    assert "table:0" in result.graph.frozen  # type: ignore[attr-defined]
    assert model.conv1.out_channels == 4  # the scalar gate ties no channels
    assert diff <= 1e-4
