"""Label-propagation handlers for torch ops, grouped by kind.

Rules of thumb (each one keeps "zeroing a unit" and "removing a unit" the same computation):

* Elementwise ops couple the operands' labels position by position, except along dims where an
  operand is broadcast (a ``[B,1,H,W]`` gate does not tie the channels it multiplies).
* Rearranging ops (view, permute, cat, split, indexing...) run on the label tensor itself, so
  any channel shuffle or flatten is followed exactly.
* Ops that mix channels without parameters (softmax or reductions over channels, attention
  products) freeze those channels: removing them would change the result. Norm statistics are
  handled in :mod:`prunekit.graph.norms` (exact in soft mode).
* Shapes written as literals over a labelled dim freeze it (the code would not follow the new
  count); shapes computed from ``x.shape`` follow it (see :class:`~prunekit.graph.labels.TrackedInt`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from prunekit.graph.labels import (
    FROZEN,
    NOLABEL,
    TrackedFloat,
    TrackedInt,
    along,
    provenance,
)
from prunekit.graph.tracer import Handler, Tracer, iter_tensors, register_op

# --------------------------------------------------------------------------- helpers


def _names(text: str) -> list[str]:
    """Op names from a whitespace-separated block."""
    return text.split()


def _arg(
    args: tuple[Any, ...], kwargs: dict[str, Any], i: int, name: str, default: Any = None
) -> Any:
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def _pad_to(lab: torch.Tensor, ndim: int) -> torch.Tensor:
    return lab.reshape((1,) * (ndim - lab.dim()) + tuple(lab.shape)) if lab.dim() < ndim else lab


def _freeze_tracked(tr: Tracer, values: Any, why: str) -> None:
    for arr in provenance(values if isinstance(values, (list, tuple)) else [values]):
        tr.freeze(arr, why)


# --------------------------------------------------------------------------- metadata


@register_op("size")
def _size(tr: Tracer, func: Any, args: Any, kwargs: Any, out: Any) -> Any:
    t = args[0]
    if isinstance(out, int):
        d = _arg(args, kwargs, 1, "dim")
        d = d % t.dim()
        return tr.track_shape(t, [d], [out])[0]
    return torch.Size(tr.track_shape(t, range(t.dim()), out))


@register_op("shape.__get__")
def _shape(tr: Tracer, func: Any, args: Any, kwargs: Any, out: Any) -> Any:
    t = args[0]
    return torch.Size(tr.track_shape(t, range(t.dim()), out))


@register_op("numel")
def _numel(tr: Tracer, func: Any, args: Any, kwargs: Any, out: Any) -> Any:
    lab = tr.labels(args[0])
    prov = tuple(np.unique(lab.numpy()) for _ in [0]) if lab.numel() > 1 else ()
    return TrackedInt(int(out), prov) if prov else out


# --------------------------------------------------------------------------- elementwise

UNARY = _names(
    """
    relu relu_ relu6 gelu gelu_ silu silu_ sigmoid sigmoid_ tanh tanh_ hardswish hardswish_
    hardsigmoid hardsigmoid_ hardtanh hardtanh_ leaky_relu leaky_relu_ elu elu_ selu selu_ celu
    celu_ softplus mish mish_ logsigmoid log_sigmoid softsign tanhshrink hardshrink softshrink
    threshold _threshold threshold_ rrelu dropout dropout_ dropout1d dropout2d dropout3d alpha_dropout
    feature_alpha_dropout clone detach detach_ cpu cuda abs abs_ neg neg_ __neg__ __pos__ exp exp_ log log_ log2 log10 log1p expm1
    positive sqrt sqrt_ rsqrt rsqrt_ square sign sgn erf erfc erfinv sin cos tan reciprocal reciprocal_
    floor ceil round trunc frac clamp clamp_ clip clip_ clamp_min clamp_min_ clamp_max
    clamp_max_ nan_to_num requires_grad_ __invert__ logical_not isnan isinf isfinite bitwise_not
    sigmoid_ exponential_ fill_ zero_ normal_ uniform_ bernoulli bernoulli_ pin_memory
    float_power
    """
)

# dtype/device casts copy every element to the same place, so they keep its labels (an
# index built in forward and cast with ``.long()`` still indexes the same channels).
CASTS = _names(
    """
    float half bfloat16 double long int short char byte bool to type type_as
    """
)

BINARY = _names(
    """
    add add_ __add__ __radd__ __iadd__ sub sub_ __sub__ __rsub__ __isub__ rsub mul mul_ __mul__
    __rmul__ __imul__ div div_ __truediv__ __rtruediv__ __itruediv__ __div__ __rdiv__ true_divide
    floor_divide floor_divide_ __floordiv__ __rfloordiv__ pow pow_ __pow__ __rpow__ __ipow__
    remainder __mod__ fmod maximum minimum fmax fmin where addcmul addcmul_ addcdiv addcdiv_
    lerp lerp_ eq ne gt lt ge le __eq__ __ne__ __gt__ __lt__ __ge__ __le__ logical_and
    logical_or logical_xor __and__ __or__ __xor__ __iand__ __ior__ bitwise_and bitwise_or
    masked_fill masked_fill_ copy_ atan2 hypot xlogy
    """
)


@register_op(*UNARY, *CASTS, *BINARY)
def _elementwise(tr: Tracer, func: Any, args: Any, kwargs: Any, out: Any) -> None:
    if not isinstance(out, torch.Tensor):
        return
    scalars = [a for a in list(args[1:]) + list(kwargs.values()) if isinstance(a, TrackedFloat)]
    _freeze_tracked(tr, scalars, "a constant computed from a channel count")
    operands = [t for t in iter_tensors(args) if t.dim() > 0 or t.numel() > 1]
    if not operands:
        tr.set_labels(out, torch.full((1,) * out.dim(), FROZEN, dtype=torch.int64))
        return
    tr.set_labels(out, _couple(tr, operands, tuple(out.shape)))


def _couple(tr: Tracer, operands: list[torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
    """Couple broadcast operands and return the output labels (see module docstring)."""
    nd = len(shape)
    info = []
    for t in operands:
        data = (1,) * (nd - t.dim()) + tuple(t.shape)
        lab = _pad_to(tr.labels(t), nd)
        real = {d for d in range(nd) if data[d] == shape[d] and shape[d] > 1}
        info.append((lab, real))
    whole = True  # every pair merged position by position over the same dims
    for i in range(len(info)):
        for j in range(i + 1, len(info)):
            whole = _pair(tr, info[i], info[j], shape) and whole
    if whole and len({frozenset(r) for _, r in info}) == 1:
        # The operands' labels are now interchangeable: keep the most compact (x + pos_embed
        # keeps x's per-channel labels, so a token index later is no channel index).
        return min(info, key=lambda x: sum(s > 1 for s in x[0].shape))[0]
    # The output takes the labels of the operand that varies along the most dims.
    best = max(info, key=lambda x: (sum(s > 1 for s in x[0].shape), len(x[1])))[0]
    return best


def _pair(
    tr: Tracer,
    a: tuple[torch.Tensor, set[int]],
    b: tuple[torch.Tensor, set[int]],
    shape: tuple[int, ...],
) -> bool:
    """Couple two operands of an elementwise op; True if merged position by position
    everywhere (over the same dims).

    Where one side is broadcast along a dim the other one labels (a per-channel ``gamma``
    times tokens from several producers, after a concat or a transpose), every entry of the
    broadcast side meets every labelled entry of the other, so they are all coupled: gamma's
    channel ``c`` belongs to each producer's channel ``c``. Only a side that is one single
    label (a ``[B, 1, H, W]`` gate shared by all channels) ties nothing.
    """
    (la, ra), (lb, rb) = a, b
    if not ra or not rb:
        return False  # scalar-like operand: broadcast everywhere, ties nothing
    only_one = ra ^ rb
    if any(la.shape[d] > 1 or lb.shape[d] > 1 for d in only_one):
        if la.numel() == 1 or lb.numel() == 1:
            return False  # a single shared label (spatial gate): the channels stay independent
        common = torch.broadcast_shapes(la.shape, lb.shape)
        tr.merge(la.expand(common).numpy(), lb.expand(common).numpy())
        return False
    la = _narrow_all(la, only_one)
    lb = _narrow_all(lb, only_one)
    common = torch.broadcast_shapes(la.shape, lb.shape)
    tr.merge(la.expand(common).numpy(), lb.expand(common).numpy())
    return not only_one


def _narrow_all(lab: torch.Tensor, dims: set[int]) -> torch.Tensor:
    for d in dims:
        lab = lab.narrow(d, 0, 1)
    return lab


# --------------------------------------------------------------------------- parametric layers


def _conv_handler(in_dim: int, out_dim: int) -> Handler:
    """The handler of a convolution whose weight has its input channels at ``in_dim`` and its
    output channels at ``out_dim`` (``F.conv*``: 1, 0; ``F.conv_transpose*``: 0, 1). Both take
    ``groups`` at position 6."""

    def handler(tr: Tracer, func: Any, args: Any, kwargs: Any, out: Any) -> None:
        x, w = args[0], _arg(args, kwargs, 1, "weight")
        b = _arg(args, kwargs, 2, "bias")
        groups = _arg(args, kwargs, 6, "groups", 1)
        ch = 1 if x.dim() == w.dim() else 0
        _grouped_layer(tr, x, w, b, out, ch=ch, groups=groups, in_dim=in_dim, out_dim=out_dim)

    return handler


register_op("conv1d", "conv2d", "conv3d")(_conv_handler(in_dim=1, out_dim=0))
register_op("conv_transpose1d", "conv_transpose2d", "conv_transpose3d")(
    _conv_handler(in_dim=0, out_dim=1)
)


def _grouped_layer(
    tr: Tracer,
    x: torch.Tensor,
    w: torch.Tensor,
    b: Any,
    out: torch.Tensor,
    *,
    ch: int,
    groups: Any,
    in_dim: int,
    out_dim: int,
) -> None:
    wname, cin, cout = tr.name_of(w), x.shape[ch], out.shape[ch]
    rows = along(tr.labels(x), ch, cin)
    k, m = cin // int(groups), cout // int(groups)
    if not _groups_follow(tr, wname, groups):
        tr.freeze(rows, f"functional convolution with a literal groups={int(groups)}")
        out_ids = np.zeros(cout, dtype=np.int64)
    elif wname is None:
        simple = groups == 1 and out_dim == 0
        out_ids = _computed_weight(tr, w, rows, cout, "convolution", simple)
    elif out_dim == 0:
        out_ids = _conv_slots(tr, wname, w, rows, groups, k, m)
    else:
        out_ids = _conv_t_slots(tr, wname, w, rows, groups, k, m)
    _bias(tr, b, out_ids)
    shape = [1] * out.dim()
    shape[ch] = cout
    tr.set_labels(out, torch.from_numpy(out_ids.copy()).reshape(shape))
    owner = tr.weight_name(w)
    if owner is not None:
        tr.macs_per_weight[owner] = out.numel() / max(1, out.shape[0] if ch == 1 else 1) / cout


def _groups_follow(tr: Tracer, wname: str | None, groups: Any) -> bool:
    """Whether a grouped convolution's ``groups`` follows pruning: a conv module's attribute
    (surgery updates it), a count computed from a shape, or no grouping at all."""
    if int(groups) == 1 or isinstance(groups, TrackedInt):
        return True
    owner = tr.owner(wname) if wname is not None else None
    return isinstance(owner, torch.nn.modules.conv._ConvNd)


def _computed_weight(
    tr: Tracer, w: torch.Tensor, rows: torch.Tensor, cout: int, what: str, simple: bool
) -> np.ndarray:
    """Output labels of a layer whose weight was computed in forward (dim 0 = outputs).

    A weight derived from a parameter (standardised, masked, scaled by a gain) keeps that
    parameter's output slot along dim 0 (see ``Tracer._param_labels``), so its output channels
    stay prunable together with the parameter, the gain and the bias. The input channels are
    kept whole: how the weight was computed may mix them (statistics over the fan-in).
    """
    tr.freeze(rows, f"{what} weight computed in forward (its input channels are kept whole)")
    lab = tr.labels(w)
    if not simple or any(lab.shape[d] > 1 for d in range(1, lab.dim())):
        tr.freeze(lab, f"{what} weight computed in forward mixes channels")
        return np.zeros(cout, dtype=np.int64)
    ids = along(lab, 0, cout)[:, 0].numpy().copy()
    ids[ids < 0] = FROZEN  # a weight built from no feature: its outputs are not prunable
    return ids


def _conv_slots(
    tr: Tracer, wname: str, w: torch.Tensor, rows: torch.Tensor, groups: int, k: int, m: int
) -> np.ndarray:
    """Weight ``[cout, cin/groups, ...]``; returns the output labels."""
    out_ids = tr.slot(wname, 0, w.shape[0])
    if groups == 1:
        tr.merge_rows(rows, tr.slot(wname, 1, w.shape[1]))
    elif k == 1:
        # Depthwise-like: input channel g feeds outputs g*m..g*m+m-1; they live and die together.
        tr.merge_rows(rows, out_ids.reshape(groups, m)[:, 0])
        tr.merge(out_ids, np.repeat(out_ids.reshape(groups, m)[:, :1], m, axis=1))
    else:
        # Grouped: every group keeps the same count, so position p is one unit across groups.
        tr.merge_rows(rows, np.tile(tr.slot(wname, 1, k), groups))
        tr.merge(out_ids, np.tile(out_ids.reshape(groups, m)[0], groups))
    return out_ids


def _conv_t_slots(
    tr: Tracer, wname: str, w: torch.Tensor, rows: torch.Tensor, groups: int, k: int, m: int
) -> np.ndarray:
    """Transposed weight ``[cin, cout/groups, ...]``; returns the output labels."""
    in_ids = tr.slot(wname, 0, w.shape[0])
    tr.merge_rows(rows, in_ids)
    if groups == 1:
        return tr.slot(wname, 1, w.shape[1])
    if k == 1:
        # Depthwise-like: input channel g and its m outputs are one unit.
        return np.repeat(in_ids, m)
    tr.merge(in_ids, np.tile(in_ids.reshape(groups, k)[0], groups))
    return np.tile(tr.slot(wname, 1, m), groups)


def _bias(tr: Tracer, b: Any, out_ids: np.ndarray) -> None:
    """Couple a layer's bias to its outputs: a bias computed in forward entry by entry (it
    only ever touches its own output channel), one of unknown shape freezes them."""
    bname = tr.name_of(b)
    if bname is not None and not tr.stored(b):
        tr.merge(tr.slot(bname, 0, out_ids.size), out_ids)
    elif isinstance(b, torch.Tensor) and b.numel() == out_ids.size:
        ids = tr.full(b).reshape(-1).numpy()
        if (ids == FROZEN).any():
            tr.freeze(
                out_ids[ids == FROZEN],
                "bias computed in forward from constants or channels kept whole",
            )
        tr.merge(ids, out_ids)
    elif isinstance(b, torch.Tensor):
        tr.freeze(out_ids, "bias computed in forward")


@register_op("linear")
def _linear(tr: Tracer, func: Any, args: Any, kwargs: Any, out: Any) -> None:
    x, w = args[0], _arg(args, kwargs, 1, "weight")
    b = _arg(args, kwargs, 2, "bias")
    wname = tr.name_of(w)
    rows = along(tr.labels(x), x.dim() - 1, x.shape[-1])
    if wname is None:
        out_ids = _computed_weight(tr, w, rows, w.shape[0], "linear", w.dim() == 2)
    else:
        tr.merge_rows(rows, tr.slot(wname, 1, w.shape[1]))
        out_ids = tr.slot(wname, 0, w.shape[0])
    _bias(tr, b, out_ids)
    tr.set_labels(out, torch.from_numpy(out_ids.copy()).reshape((1,) * (out.dim() - 1) + (-1,)))
    owner = tr.weight_name(w)
    if owner is not None:
        tr.macs_per_weight[owner] = (
            out.numel() / (out.shape[0] if out.dim() > 1 else 1) / w.shape[0]
        )


def _per_channel(tr: Tracer, x: torch.Tensor, ch: int, tensors: list[Any], out: Any) -> None:
    """Norm-like op with one entry per channel in each of ``tensors`` (weight, stats...).

    A per-channel tensor computed in forward (``gain * scale``) is coupled entry by entry to
    the channels: zeroing a unit zeroes what it was computed from, and entry ``c`` only ever
    touches channel ``c``. Entries of unknown origin (literal constants) freeze their channel.
    """
    n = x.shape[ch]
    rows = along(tr.labels(x), ch, n)
    for t in tensors:
        if not isinstance(t, torch.Tensor):
            continue
        name = tr.name_of(t)
        if name is not None and not tr.stored(t) and t.dim() == 1 and t.shape[0] == n:
            tr.merge_rows(rows, tr.slot(name, 0, n))
        elif t.numel() == n:
            ids = tr.full(t).reshape(-1).numpy()
            const = ids == FROZEN
            if const.any():
                tr.freeze(
                    rows[torch.from_numpy(const)],
                    "per-channel tensor computed from constants or channels kept whole",
                )
            tr.merge_rows(rows, ids)
        else:
            tr.freeze(rows, "per-channel tensor computed in forward")
    tr.set_labels(out, tr.labels(x))


def _norm_tensors(args: Any, kwargs: Any) -> list[Any]:
    """The per-channel tensors given to ``F.batch_norm`` / ``F.instance_norm``: running mean
    and variance, weight and bias, at positions 1-4 in both."""
    names = ((1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias"))
    return [t for t in (_arg(args, kwargs, i, n) for i, n in names) if t is not None]


@register_op("batch_norm")
def _batch_norm(tr: Tracer, func: Any, args: Any, kwargs: Any, out: Any) -> None:
    x = args[0]
    _per_channel(tr, x, 1 if x.dim() > 1 else 0, _norm_tensors(args, kwargs), out)


@register_op("instance_norm")
def _instance_norm(tr: Tracer, func: Any, args: Any, kwargs: Any, out: Any) -> None:
    _per_channel(tr, args[0], 1, _norm_tensors(args, kwargs), out)


@register_op("prelu")
def _prelu(tr: Tracer, func: Any, args: Any, kwargs: Any, out: Any) -> None:
    x, w = args[0], _arg(args, kwargs, 1, "weight")
    if w.numel() == 1:
        tr.set_labels(out, tr.labels(x))
    else:
        _per_channel(tr, x, 1 if x.dim() > 1 else 0, [w], out)


@register_op("embedding")
def _embedding(tr: Tracer, func: Any, args: Any, kwargs: Any, out: Any) -> None:
    w = _arg(args, kwargs, 1, "weight")
    name = tr.name_of(w)
    if name is None:
        return
    ids = tr.slot(name, 1, w.shape[1])
    tr.set_labels(out, torch.from_numpy(ids.copy()).reshape((1,) * (out.dim() - 1) + (-1,)))


# --------------------------------------------------------------------------- mixing ops


@register_op(
    "matmul",
    "__matmul__",
    "__rmatmul__",
    "mm",
    "bmm",
    "baddbmm",
    "addmm",
    "addbmm",
    "einsum",
    "bilinear",
    "scaled_dot_product_attention",
    "multi_head_attention_forward",
    "tensordot",
    "cdist",
    "outer",
    "dot",
    "inner",
    "kron",
    "cross",
)
def _mixing(tr: Tracer, func: Any, args: Any, kwargs: Any, out: Any) -> None:
    # Products over feature dims (attention scores, einsum) tie channel counts to scales,
    # head splits and the other operand's layout; prunekit keeps them whole (recorded reason).
    for t in iter_tensors((args, kwargs)):
        tr.freeze_tensor(t, f"{func.__name__} mixes feature dims (kept whole)")


REDUCE = _names(
    """
    sum mean amax amin max min prod std var std_mean var_mean norm logsumexp argmax argmin
    median nanmean nansum all any count_nonzero softmax log_softmax _softmax cumsum cumprod
    normalize topk sort argsort kthvalue mode aminmax nanmedian local_response_norm
    linalg_vector_norm
    """
)


@register_op(*REDUCE)
def _reduce(tr: Tracer, func: Any, args: Any, kwargs: Any, out: Any) -> None:
    x = args[0]
    if func.__name__ in ("max", "min") and (len(args) > 1 and isinstance(args[1], torch.Tensor)):
        return _elementwise(tr, func, args, kwargs, out)
    dims = _reduced_dims(func.__name__, x, args, kwargs)
    lab = _reduced_labels(tr, func.__name__, x, dims, args, kwargs)
    outs = [o for o in iter_tensors(out)]
    for o in outs:
        if tuple(o.shape) == tuple(x.shape) and o.dtype == x.dtype:
            tr.set_labels(o, lab)  # softmax, cumsum, normalize: each position keeps its label
            continue
        red = lab
        for d in dims:
            red = red.narrow(d, 0, 1)
        if o.dim() < red.dim():
            red = red.reshape(
                [s for i, s in enumerate(red.shape) if i not in dims][: o.dim()] if o.dim() else []
            )
        tr.set_labels(o, red if o.dim() == red.dim() else torch.full((1,) * o.dim(), FROZEN))
    return None


def _reduced_labels(
    tr: Tracer, name: str, x: torch.Tensor, dims: list[int], args: Any, kwargs: Any
) -> torch.Tensor:
    """Labels of ``x`` as the reduction over ``dims`` sees them (couplings recorded).

    * Labels varying along the reduced dims *and* along others: side-by-side producers of the
      same channels (``torch.stack(paths, 1).sum(1)``, a softmax over paths): everything
      reduced together at one position is one unit, so they are coupled across those dims.
    * Varying along the reduced dims only, a reduction that zeros leave unchanged (a sum, a
      norm) of a tensor that is 0 at pruned channels (``x.pow(2).sum(1)``): removing channels
      does not change it, so no coupling; the result belongs to no channel.
    * Otherwise the reduction mixes channels: they are kept whole.
    """
    lab = tr.labels(x)
    red = [d for d in dims if lab.shape[d] > 1]
    if not red:
        return lab
    if any(lab.shape[d] > 1 for d in range(lab.dim()) if d not in dims):
        first = _narrow_all(lab, set(red))
        tr.merge(lab.numpy(), first.expand_as(lab).numpy())
        return first.expand_as(lab)
    if _zero_invariant(name, args, kwargs) and tr.zero_when_pruned(x):
        if name == "normalize":  # x / ||x||: each channel keeps its own label
            return lab
        return torch.full((1,) * lab.dim(), FROZEN, dtype=torch.int64)
    tr.freeze(lab, f"{name} over a channel dim")
    return lab


def _zero_invariant(name: str, args: Any, kwargs: Any) -> bool:
    """Whether zeros among the reduced values never change the result."""
    if name in ("sum", "nansum", "count_nonzero"):
        return True
    if name in ("norm", "linalg_vector_norm", "normalize"):
        p = _arg(args, kwargs, 1, "ord" if name == "linalg_vector_norm" else "p", 2)
        return p is None or isinstance(p, str) or float(p) >= 0
    return False


def _reduced_dims(name: str, x: torch.Tensor, args: Any, kwargs: Any) -> list[int]:
    default = 1 if name == "normalize" else None
    second = ("normalize", "norm", "topk", "kthvalue", "local_response_norm", "linalg_vector_norm")
    pos = 2 if name in second else 1
    d = kwargs.get(
        "dim", args[pos] if len(args) > pos and not isinstance(args[pos], bool) else default
    )
    if name == "local_response_norm":
        return [1]
    if d is None or (isinstance(d, (list, tuple)) and len(d) == 0):
        return list(range(x.dim()))
    if isinstance(d, (list, tuple)):
        return [int(i) % x.dim() for i in d]
    if isinstance(d, str):
        return list(range(x.dim()))
    return [int(d) % max(1, x.dim())]


POOL = _names(
    """
    max_pool1d max_pool2d max_pool3d avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d
    adaptive_avg_pool2d adaptive_avg_pool3d adaptive_max_pool1d adaptive_max_pool2d
    adaptive_max_pool3d lp_pool1d lp_pool2d max_pool1d_with_indices max_pool2d_with_indices
    max_pool3d_with_indices adaptive_max_pool1d_with_indices adaptive_max_pool2d_with_indices
    fractional_max_pool2d interpolate upsample upsample_nearest upsample_bilinear grid_sample
    channel_shuffle_placeholder
    """
)


@register_op(*POOL)
def _pool(tr: Tracer, func: Any, args: Any, kwargs: Any, out: Any) -> None:
    x = args[0]
    ch = 1 if x.dim() >= 3 else 0
    spatial = list(range(ch + 1, x.dim()))
    tr.freeze_varying(x, spatial, f"{func.__name__} over labelled spatial positions")
    lab = tr.labels(x)
    for d in spatial:
        lab = lab.narrow(d, 0, 1)
    for o in iter_tensors(out):
        if o.dtype == torch.int64:
            continue  # pooling indices
        tr.set_labels(o, lab)


@register_op("pad")
def _pad(tr: Tracer, func: Any, args: Any, kwargs: Any, out: Any) -> None:
    x, pad = args[0], _arg(args, kwargs, 1, "pad")
    touched = [x.dim() - 1 - i // 2 for i, p in enumerate(pad) if int(p) != 0]
    tr.freeze_varying(x, touched, "padding along a channel dim")
    lab = tr.labels(x)
    if any(lab.shape[d] > 1 for d in touched):
        tr.set_labels(out, torch.full((1,) * out.dim(), FROZEN, dtype=torch.int64))
    else:
        tr.set_labels(out, lab)


# --------------------------------------------------------------------------- creation

CREATE = _names(
    """
    zeros ones empty full rand randn randint arange linspace new_zeros new_ones new_empty
    new_full new_tensor tensor as_tensor scalar_tensor zeros_like ones_like empty_like full_like
    rand_like randn_like randint_like eye meshgrid tril_indices triu_indices one_hot
    """
)


@register_op(*CREATE)
def _create(tr: Tracer, func: Any, args: Any, kwargs: Any, out: Any) -> None:
    # Created tensors hold no features. Their shape follows a channel count only if it was
    # computed from one (TrackedInt) or copied from a tensor (*_like): then they carry no
    # label at all; literal shapes are FROZEN so anything combined with them stays whole.
    fill = NOLABEL if func.__name__.endswith("_like") or provenance(args) else FROZEN
    for o in iter_tensors(out):
        tr.set_labels(o, torch.full((1,) * o.dim(), fill, dtype=torch.int64))
