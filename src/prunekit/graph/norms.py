"""Normalisation over channels: traced as prunable, computed exactly in soft mode.

LayerNorm, RMSNorm and GroupNorm compute statistics over several channels. Removing a channel
changes those statistics; zeroing it (the soft mode) does not remove it from them. So the two
agree only if the soft mode also leaves removed channels out of the statistics:

* Tracing (``layer_norm``, ``rms_norm``, ``group_norm`` handlers): the norm's weight slot is
  merged with the channels it normalises, like a BatchNorm's, instead of freezing them — when
  the pruned model's own code will normalise the kept channels. That holds for a norm with a
  per-channel weight whose size argument follows pruning: computed from ``x.shape``, or the
  attribute of an ``nn.LayerNorm`` / ``nn.RMSNorm`` / ``nn.GroupNorm`` that surgery updates.
  GroupNorm with ``1 < groups < channels`` prunes whole groups (every group keeps its size,
  ``num_groups`` shrinks); with one group, any channels.
* Soft mode (:func:`mark_kept`): surgery marks every pruned 1-D parameter with its kept
  positions (:class:`KeptChannels`). When such a parameter is the weight of a ``layer_norm`` /
  ``rms_norm`` / ``group_norm`` call, the call normalises the kept channels only and writes 0
  at the removed ones (what their zeroed scale and shift gave before). Any other op on it is an
  ordinary parameter op. This works wherever the call is made (``LayerNorm2d``'s permuted call,
  a functional call in a custom block), because it travels with the weight.

Statistics over several tensor dims (``normalized_shape`` of length > 1), norms without a
weight, and literal sizes that pruning would not update keep their channels whole, with the
reason recorded.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.graph.labels import along, provenance
from prunekit.graph.ops import _arg, _per_channel
from prunekit.graph.tracer import Tracer, register_op

#: module kinds whose size attribute (``normalized_shape`` / ``num_groups``) surgery updates
SIZED_NORMS: tuple[type[nn.Module], ...] = (nn.LayerNorm, nn.RMSNorm, nn.GroupNorm)


def _owner(tr: Tracer, t: Any) -> nn.Module | None:
    """The module owning parameter ``t`` (None for a tensor that is no parameter)."""
    name = tr.name_of(t)
    if name is None:
        return None
    path = name.rpartition(".")[0]
    try:
        return tr.model.get_submodule(path) if path else tr.model
    except AttributeError:
        return None


def _weight_reason(tr: Tracer, x: torch.Tensor, ch: int, w: Any, b: Any) -> str | None:
    """Why the norm's channels cannot be pruned, judged from its affine tensors (None: they can)."""
    if tr.name_of(w) is None or w.dim() != 1 or w.shape[0] != x.shape[ch]:
        return "statistics span the channels and there is no per-channel weight to mark them"
    if isinstance(b, torch.Tensor) and tr.name_of(b) is None:
        return "statistics span the channels and the shift is computed in forward"
    return None


def _norm_reason(tr: Tracer, func: Any, x: torch.Tensor, shape: Any, w: Any, b: Any) -> str | None:
    """For ``layer_norm`` / ``rms_norm``: None if pruning the normalised channels is exact."""
    n = len(shape) if isinstance(shape, (list, tuple, torch.Size)) else 1
    if n != 1:
        return "statistics span several tensor dims"
    why = _weight_reason(tr, x, x.dim() - 1, w, b)
    if why is not None:
        return why
    sizes = list(shape) if isinstance(shape, (list, tuple, torch.Size)) else [shape]
    if provenance(sizes) or isinstance(_owner(tr, w), (nn.LayerNorm, nn.RMSNorm)):
        return None  # the size follows x.shape, or surgery updates normalized_shape
    return "normalized_shape is a literal that pruning would not update"


@register_op("layer_norm", "rms_norm")
def _layer_norm(tr: Tracer, func: Any, args: Any, kwargs: Any, out: Any) -> None:
    x, shape = args[0], _arg(args, kwargs, 1, "normalized_shape")
    w = _arg(args, kwargs, 2, "weight")
    b = _arg(args, kwargs, 3, "bias") if func.__name__ == "layer_norm" else None
    ts = [t for t in (w, b) if isinstance(t, torch.Tensor)]
    why = _norm_reason(tr, func, x, shape, w, b)
    if why is None:
        _per_channel(tr, x, x.dim() - 1, ts, out)
        return
    n = len(shape) if isinstance(shape, (list, tuple, torch.Size)) else 1
    tr.freeze_varying(x, list(range(x.dim() - n, x.dim())), f"{func.__name__}: {why}")
    for t in ts:
        tr.freeze(tr.known_labels(t), f"{func.__name__}: {why}")
    tr.set_labels(out, tr.labels(x))


@register_op("group_norm")
def _group_norm(tr: Tracer, func: Any, args: Any, kwargs: Any, out: Any) -> None:
    x, groups = args[0], int(_arg(args, kwargs, 1, "num_groups"))
    w, b = _arg(args, kwargs, 2, "weight"), _arg(args, kwargs, 3, "bias")
    ts = [t for t in (w, b) if isinstance(t, torch.Tensor)]
    channels = x.shape[1]
    why = None if groups == channels else _weight_reason(tr, x, 1, w, b)
    if why is None and 1 < groups < channels and not isinstance(_owner(tr, w), nn.GroupNorm):
        why = "num_groups is a literal that pruning would not update"
    if why is not None:
        tr.freeze_varying(x, [1], f"group_norm: {why}")
    elif 1 < groups < channels:
        # Whole groups go or stay: each kept group keeps its channels and its statistics.
        rows = along(tr.labels(x), 1, channels).reshape(groups, -1)
        tr.merge(rows.numpy(), rows[:, :1].expand_as(rows).numpy())
    _per_channel(tr, x, 1, ts, out)


# --------------------------------------------------------------------------- soft mode


class KeptChannels(nn.Parameter):
    """A 1-D parameter of a soft-pruned model that knows which of its positions are kept.

    As the weight of a ``layer_norm``, ``rms_norm`` or ``group_norm`` call it makes the call
    normalise the kept channels only (see the module docstring); elsewhere it is an ordinary
    parameter. Made by :func:`mark_kept`; survives ``copy.deepcopy``.

    Attributes:
        kept: kept positions (sorted int64).
    """

    kept: torch.Tensor

    def __deepcopy__(self, memo: dict[int, Any]) -> KeptChannels:
        if id(self) in memo:
            return memo[id(self)]  # type: ignore[no-any-return]
        out = KeptChannels(self.data.clone(memory_format=torch.preserve_format), self.requires_grad)
        out.kept = copy.deepcopy(self.kept, memo)
        memo[id(self)] = out
        return out

    @classmethod
    def __torch_function__(
        cls, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        soft = SOFT_NORMS.get(getattr(func, "__name__", ""))
        if soft is not None and isinstance(_arg(args, kwargs, 2, "weight"), KeptChannels):
            return soft(args, kwargs)
        return torch._C._disabled_torch_function_impl(func, types, args, kwargs)


def mark_kept(p: nn.Parameter, kept: list[int]) -> None:
    """Mark 1-D parameter ``p`` (in place, same object) as keeping positions ``kept``.

    Called by the soft mode of :func:`prunekit.surgery.apply_plan`; optimizers holding ``p``
    stay valid.
    """
    p.__class__ = KeptChannels
    p.kept = torch.tensor(kept, dtype=torch.long, device=p.device)  # type: ignore[attr-defined]


def _scatter(x: torch.Tensor, dim: int, keep: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x``-shaped zeros with ``y`` written at positions ``keep`` of ``dim``."""
    return torch.zeros_like(x).index_copy(dim, keep, y)


def _pick(t: Any, keep: torch.Tensor) -> Any:
    return t.index_select(0, keep) if isinstance(t, torch.Tensor) else t


def _soft_layer_norm(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    x, w = args[0], _arg(args, kwargs, 2, "weight")
    b, eps = _arg(args, kwargs, 3, "bias"), _arg(args, kwargs, 4, "eps", 1e-5)
    keep = w.kept.to(x.device)
    y = F.layer_norm(x.index_select(-1, keep), (keep.numel(),), _pick(w, keep), _pick(b, keep), eps)
    return _scatter(x, x.dim() - 1, keep, y)


def _soft_rms_norm(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    x, w, eps = args[0], _arg(args, kwargs, 2, "weight"), _arg(args, kwargs, 3, "eps")
    keep = w.kept.to(x.device)
    y = F.rms_norm(x.index_select(-1, keep), (keep.numel(),), _pick(w, keep), eps)
    return _scatter(x, x.dim() - 1, keep, y)


def _soft_group_norm(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    x, groups = args[0], int(_arg(args, kwargs, 1, "num_groups"))
    w, b = _arg(args, kwargs, 2, "weight"), _arg(args, kwargs, 3, "bias")
    eps = _arg(args, kwargs, 4, "eps", 1e-5)
    keep = w.kept.to(x.device)
    # the pruned model's group count: one group stays one; otherwise whole groups were removed
    kept_groups = 1 if groups == 1 else keep.numel() // (x.shape[1] // groups)
    y = F.group_norm(x.index_select(1, keep), kept_groups, _pick(w, keep), _pick(b, keep), eps)
    return _scatter(x, 1, keep, y)


#: norm function name -> its soft-mode computation over the kept channels
SOFT_NORMS: dict[str, Callable[[tuple[Any, ...], dict[str, Any]], torch.Tensor]] = {
    "layer_norm": _soft_layer_norm,
    "rms_norm": _soft_rms_norm,
    "group_norm": _soft_group_norm,
}
