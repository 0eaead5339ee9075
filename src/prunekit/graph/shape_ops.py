"""Handlers for ops that only move data around: run the op on the label tensor itself.

After pruning, the same code runs on fewer channels. That is only right if every size the code
passes is either inferred (``-1``, ``flatten``) or computed from a shape (``TrackedInt``).
Literal sizes over labelled dims are checked here: a split of a labelled dim into a literal
factor and a computed one (``view(B, groups, C // groups, H, W)``) keeps the same positions in
every group (the units are merged across the literal factor); any other literal freezes the dim.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from prunekit.graph.labels import NOLABEL, TrackedInt, compact, provenance, untrack
from prunekit.graph.ops import _arg, _names
from prunekit.graph.tracer import Tracer, iter_tensors, register_op

# Ops that are exact on compact labels (size-1 dims stand for constant labels).
COMPACT_OK = _names(
    """
    permute transpose transpose_ t T.__get__ mT.__get__ unsqueeze unsqueeze_ squeeze squeeze_
    movedim moveaxis swapaxes swapdims flip fliplr flipud roll contiguous expand expand_as
    repeat tile broadcast_to
    """
)

SELF_ONLY = (
    _names(
        """
    select diagonal index_select gather take_along_dim unfold pixel_shuffle pixel_unshuffle
    channel_shuffle native_channel_shuffle view_as reshape_as flatten ravel repeat_interleave
    """
    )
    + COMPACT_OK
)

LIST_FIRST = ["cat", "concat", "concatenate", "stack", "hstack", "vstack", "dstack", "column_stack"]
#: sizes given as arguments: checked against the literal-size rules (``_reshape``)
RESHAPE = ["view", "reshape", "expand", "repeat", "tile", "unflatten", "broadcast_to"]


def _labels_call(tr: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Call ``func`` with data tensors replaced by their label tensors."""
    name = func.__name__
    if name in LIST_FIRST:
        return func(
            _cat_operands(tr, name, list(args[0]), args, kwargs),
            *untrack(args[1:]),
            **untrack(kwargs),
        )
    rest, kw = tr.concrete(untrack(args[1:])), tr.concrete(untrack(kwargs))
    if name in COMPACT_OK:
        return func(tr.labels(args[0]), *rest, **kw)
    if name == "view":  # label tensors are laid out differently; reshape is the same mapping
        return torch.reshape(tr.full(args[0]), _target_sizes((None, *rest), kw))
    return func(tr.full(args[0]), *rest, **kw)


def _cat_operands(
    tr: Tracer, name: str, ts: list[Any], args: Any, kwargs: Any
) -> list[torch.Tensor]:
    """Labels of cat/stack inputs, expanded only as far as needed to line them up."""
    nd = ts[0].dim() if ts else 0
    if (
        name not in ("cat", "concat", "concatenate", "stack")
        or nd == 0
        or any(t.dim() != nd for t in ts)
    ):
        return [tr.full(t) for t in ts]
    labs = [tr.labels(t) for t in ts]
    sizes = [max(lab.shape[d] for lab in labs) for d in range(nd)]
    dim = int(_arg(args, kwargs, 1, "dim", 0)) % nd
    out = []
    for t, lab in zip(ts, labs):
        shape = list(sizes)
        if name != "stack":
            shape[dim] = t.shape[dim]
        out.append(lab.expand(shape))
    return out


def _assign(tr: Tracer, out: Any, lab: Any) -> None:
    if isinstance(out, torch.Tensor) and isinstance(lab, torch.Tensor):
        tr.set_labels(out, lab)
    elif isinstance(out, (list, tuple)):
        for o, lo in zip(out, lab):
            _assign(tr, o, lo)


#: ops that only change how the same elements are viewed (row-major order kept)
_VIEWS = frozenset(["view", "reshape", "view_as", "reshape_as", "flatten", "unflatten", "ravel"])


def _view_labels(lab: torch.Tensor, before: Any, after: Any) -> torch.Tensor | None:
    """Compact labels after a reshape from ``before`` to ``after``, without expanding them.

    Exact when every dim along which ``lab`` varies survives as one output dim of the same
    size starting at the same flat offset (e.g. a weight ``[O, I, k, k]`` viewed as
    ``[1, O, I*k*k]``); otherwise None (the labels are expanded and reshaped instead).
    """
    before, after = list(before), list(after)
    if lab.dim() != len(before) or int(np.prod(before)) != int(np.prod(after)):
        return None
    pre_out = np.cumprod([1, *after])
    shape = [1] * len(after)
    for d in range(lab.dim()):
        if lab.shape[d] == 1:
            continue
        pre = int(np.prod(before[:d]))
        hits = [e for e in range(len(after)) if pre_out[e] == pre and after[e] == before[d]]
        if not hits:
            return None
        shape[hits[0]] = before[d]
    if sum(s > 1 for s in shape) != sum(s > 1 for s in lab.shape):
        return None
    return lab.reshape(shape)


@register_op(*[n for n in SELF_ONLY + LIST_FIRST if n not in RESHAPE])
def _rearrange(tr: Tracer, func: Any, args: Any, kwargs: Any, out: Any) -> None:
    name = func.__name__
    if name == "repeat_interleave" and not isinstance(args[0], torch.Tensor):
        return
    if func is F.unfold:
        return _im2col(tr, args, kwargs, out)
    if name in _VIEWS and isinstance(out, torch.Tensor):
        fast = _view_labels(tr.labels(args[0]), args[0].shape, out.shape)
        if fast is not None:
            tr.set_labels(out, fast)
            return
    if name in _POSITIONAL:
        x, lab = args[0], tr.labels(args[0])
        dims = _POSITIONAL[name](args, kwargs)
        hit = [d % x.dim() for d in (range(x.dim()) if dims is None else dims)]
        if any(lab.shape[d] > 1 for d in hit):
            # A literal index, shift or window names positions of the *original* channels;
            # after pruning the same numbers would address other channels.
            tr.freeze(lab, f"{name} at literal positions of a channel dim")
    if name in ("channel_shuffle", "native_channel_shuffle"):
        # shuffle(n, g) == view(g, n/g).transpose.flatten: exact under pruning only when every
        # group keeps the same within-group offsets, so offset k of all g groups is one unit.
        groups = int(_arg(args, kwargs, 1, "groups"))
        if tr.labels(args[0]).shape[1] > 1:
            _uniform(tr, list(tr.full(args[0]).chunk(groups, dim=1)), 1)
    _assign(tr, out, _labels_call(tr, func, args, kwargs))


def _im2col(tr: Tracer, args: Any, kwargs: Any, out: Any) -> None:
    """``F.unfold`` (im2col): output channel ``c * k*k + j`` is input channel ``c`` at kernel
    offset ``j``. Run on the labels shifted by one as float64 (exact below 2**53; im2col has no
    integer kernel), so zero padding comes out as NOLABEL."""
    lab = tr.full(args[0]).double() + 1
    rest, kw = tr.concrete(untrack(args[1:])), tr.concrete(untrack(kwargs))
    res = F.unfold(lab, *rest, **kw).round().long() - 1
    tr.set_labels(out, res)


@register_op("fold")
def _fold(tr: Tracer, func: Any, args: Any, kwargs: Any, out: Any) -> None:
    """``F.fold`` (col2im) sums the ``k*k`` columns of each output channel: they are one unit."""
    x = args[0]
    ch = x.dim() - 2
    lab = tr.full(x)
    c = out.shape[ch]
    blocks = lab.movedim(ch, 0).reshape(c, -1)
    rep = blocks.max(dim=1, keepdim=True).values  # a label of the block (padding is NOLABEL)
    tr.merge(blocks.numpy(), rep.expand_as(blocks).numpy())
    shape = [1] * out.dim()
    shape[ch] = c
    tr.set_labels(out, rep.reshape(shape))


def _dims_arg(pos: int, key: str, default: Any = 0) -> Any:
    def get(args: Any, kwargs: Any) -> list[int] | None:
        d = _arg(args, kwargs, pos, key, default)
        if d is None:
            return None
        return [int(v) for v in d] if isinstance(d, (list, tuple)) else [int(d)]

    return get


#: ops that address positions by literal numbers -> the dims they address (None: all dims)
_POSITIONAL = {
    "select": _dims_arg(1, "dim"),
    "index_select": _dims_arg(1, "dim"),
    "gather": _dims_arg(1, "dim"),
    "take_along_dim": _dims_arg(2, "dim", None),
    "unfold": _dims_arg(1, "dimension"),
    "roll": _dims_arg(2, "dims", None),
    "diagonal": lambda a, k: [
        int(_arg(a, k, 2, "dim1", 0)),
        int(_arg(a, k, 3, "dim2", 1)),
    ],
}


@register_op(*RESHAPE)
def _reshape(tr: Tracer, func: Any, args: Any, kwargs: Any, out: Any) -> None:
    x = args[0]
    if func.__name__ == "view" and len(args) == 2 and isinstance(args[1], torch.dtype):
        tr.set_labels(out, tr.labels(x))
        return
    fast = _view_labels(tr.labels(x), x.shape, out.shape) if func.__name__ in _VIEWS else None
    lab = fast if fast is not None else _labels_call(tr, func, args, kwargs)
    if func.__name__ == "unflatten":
        sizes = list(_arg(args, kwargs, 2, "sizes"))
        dim = int(_arg(args, kwargs, 1, "dim")) % x.dim()
        target: list[Any] = [-1] * dim + sizes + [-1] * (x.dim() - dim - 1)
    else:
        target = _target_sizes(args, kwargs)
    if func.__name__ in ("repeat", "tile"):
        # repeat counts of 1 leave a dim as it is, whatever its size becomes
        target = [-1 if not isinstance(t, TrackedInt) and int(t) == 1 else t for t in target]
    # a broadcast copies a size-1 dim: sizing it by a channel count couples nothing
    spread = _BROADCASTS.get(func.__name__)
    fixed = None if spread is None else spread(x, target)
    lab = _check_sizes(tr, lab, target, func.__name__, fixed)
    tr.set_labels(out, lab)


def _broadcast_dims(x: torch.Tensor, target: list[Any]) -> set[int]:
    """The output dims of ``expand``/``repeat`` that copy a size-1 input dim (leading dims
    an ``expand`` adds count as size 1)."""
    lead = len(target) - x.dim()
    return {d for d in range(len(target)) if d < lead or x.shape[d - lead] == 1}


_BROADCASTS = {name: _broadcast_dims for name in ("expand", "broadcast_to", "repeat", "tile")}


def _target_sizes(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
    rest = list(args[1:]) or [kwargs.get("shape", kwargs.get("size", ()))]
    if len(rest) == 1 and isinstance(rest[0], (list, tuple, torch.Size)):
        return list(rest[0])
    return rest


def _check_sizes(
    tr: Tracer, lab: torch.Tensor, target: list[Any], what: str, copies: set[int] | None = None
) -> torch.Tensor:
    """Apply the literal-size rules (module docstring) to output labels ``lab``; ``copies``:
    dims that broadcast a size-1 input dim (their size ties no channels)."""
    lab = compact(lab)
    if len(target) != lab.dim():
        return lab
    vary = [d for d in range(lab.dim()) if lab.shape[d] > 1]
    free = [d for d in vary if not _literal(target[d])]
    for d, t in enumerate(target):
        if isinstance(t, TrackedInt) and d not in vary and int(t) > 1 and d not in (copies or ()):
            _tie_fixed(tr, t, lab)
    for d in vary:
        t = target[d]
        if isinstance(t, TrackedInt):
            tr.tie(list(t.prov), lab.movedim(d, 0).reshape(lab.shape[d], -1))
        elif _literal(t) and free:
            # A literal factor next to a computed one: keep the same positions in each slice.
            first = lab.narrow(d, 0, 1)
            tr.merge(lab.numpy(), first.expand_as(lab).numpy())
            lab = compact(first.expand_as(lab))
        elif _literal(t):
            tr.freeze(lab, f"{what} with a literal size {int(t)} over a channel dim")
    return lab


def _tie_fixed(tr: Tracer, size: TrackedInt, lab: torch.Tensor) -> None:
    """A channel count sizing a dim whose labels do not vary (a frozen or mixed dim, e.g. the
    channels of an attention output reshaped with the input's ``C``): that dim keeps its size,
    so the count must too. A dim of no feature (``NOLABEL``: built from a shape) follows."""
    labels = torch.unique(lab)
    labels = labels[labels != NOLABEL]
    if labels.numel():
        tr.tie(list(size.prov), labels)


def _literal(t: Any) -> bool:
    return isinstance(t, int) and not isinstance(t, TrackedInt) and int(t) != -1


@register_op("split", "chunk", "tensor_split", "unbind", "split_with_sizes", "narrow")
def _split(tr: Tracer, func: Any, args: Any, kwargs: Any, out: Any) -> None:
    x = args[0]
    name = func.__name__
    dim_pos = {"narrow": 1, "unbind": 1}.get(name, 2)
    dim = int(_arg(args, kwargs, dim_pos, "dim", 0)) % x.dim()
    lab = tr.labels(x)
    labs = _labels_call(tr, func, args, kwargs)
    if lab.shape[dim] > 1:
        spec = _arg(args, kwargs, 1, "split_size_or_sections", None)
        sections = name == "tensor_split" and isinstance(spec, int)  # a count, like chunk
        if name == "chunk" or sections or (name == "split" and isinstance(spec, TrackedInt)):
            _uniform(tr, labs, dim)
        elif name == "narrow" and provenance(args[2:4]):
            pass  # bounds computed from the shape follow the new count
        elif name == "narrow" and int(_arg(args, kwargs, 2, "start")) >= 0:
            start = int(_arg(args, kwargs, 2, "start"))
            window = (start, start + int(_arg(args, kwargs, 3, "length")))
            _keep_prefix(tr, lab, dim, window, "narrow of a channel dim")
        else:
            tr.freeze(lab, f"{name} of a channel dim at literal positions")
    _assign(tr, out, labs)


def _uniform(tr: Tracer, labs: Any, dim: int) -> None:
    """Equal chunks of a labelled dim: position p of every chunk forms one unit."""
    parts = [p for p in labs if isinstance(p, torch.Tensor)]
    if len({p.shape[dim] for p in parts}) != 1:
        for p in parts:
            tr.freeze(p, "unequal chunks of a channel dim")
        return
    for p in parts[1:]:
        tr.merge(parts[0].numpy(), p.numpy())


@register_op("glu")
def _glu(tr: Tracer, func: Any, args: Any, kwargs: Any, out: Any) -> None:
    """``glu(x, dim) = a * sigmoid(b)`` with ``a, b = x.chunk(2, dim)``: channel p of ``a`` and
    channel p of ``b`` form one unit, and the output carries ``a``'s labels. Zeroing the unit in
    both halves zeroes the output channel, so soft mode stays exact."""
    x = args[0]
    dim = int(_arg(args, kwargs, 1, "dim", -1)) % x.dim()
    halves = list(tr.full(x).chunk(2, dim=dim))
    if tr.labels(x).shape[dim] > 1:
        _uniform(tr, halves, dim)
    tr.set_labels(out, halves[0])


@register_op("__getitem__")
def _getitem(tr: Tracer, func: Any, args: Any, kwargs: Any, out: Any) -> None:
    x, idx = args[0], args[1]
    _check_index(tr, x, idx)
    small = _compact_index(tr.labels(x), _expand_ellipsis(x, untrack(idx)))
    if small is not None:  # basic indexing: index the compact labels, no expansion
        _assign(tr, out, tr.labels(x)[small])
        return
    lab = tr.full(x)[tr.concrete(untrack(idx))]
    _assign(tr, out, lab)


def _expand_ellipsis(x: torch.Tensor, idx: Any) -> tuple[Any, ...]:
    items = idx if isinstance(idx, tuple) else (idx,)
    if any(i is Ellipsis for i in items):
        e = next(k for k, i in enumerate(items) if i is Ellipsis)
        used = sum(1 for i in items if i is not None and i is not Ellipsis)
        items = items[:e] + (slice(None),) * (x.dim() - used) + items[e + 1 :]
    return items


def _compact_index(lab: torch.Tensor, items: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """The same basic index applied to compact labels (size-1 dims stay size 1)."""
    out: list[Any] = []
    d = 0
    for it in items:
        if it is None:
            out.append(None)
            continue
        if isinstance(it, bool) or not isinstance(it, (int, slice)) or d >= lab.dim():
            return None
        out.append((0 if isinstance(it, int) else slice(None)) if lab.shape[d] == 1 else it)
        d += 1
    return tuple(out)


def _check_index(tr: Tracer, x: torch.Tensor, idx: Any) -> None:
    """Freeze labelled dims that are indexed at literal positions."""
    items = _expand_ellipsis(x, idx)
    lab = tr.labels(x)
    d = 0
    for it in items:
        if it is None:
            continue
        if d >= x.dim():
            break
        if lab.shape[d] == 1 and x.shape[d] > 1 and isinstance(it, slice):
            for b in (it.start, it.stop):  # a channel count slicing a fixed-size dim
                if isinstance(b, TrackedInt):
                    _tie_fixed(tr, b, lab)
        if lab.shape[d] > 1 and not _follows(it):
            window = _literal_bounds(it, x.shape[d])
            if _is_direct(tr, x):
                _pin_direct_dim(tr, lab, d)
            elif window is None:
                tr.freeze(lab, f"indexing a channel dim with {it!r}")
            else:
                _keep_prefix(tr, lab, d, window, f"slice {it!r} of a channel dim")
        d += 1


def _is_direct(tr: Tracer, x: torch.Tensor) -> bool:
    """Whether ``x`` is a parameter labelled per element (see ``Tracer._direct_labels``)."""
    name = tr.name_of(x)
    return name is not None and name in tr.direct and x.dim() > 1


def _pin_direct_dim(tr: Tracer, lab: torch.Tensor, dim: int) -> None:
    """A per-element-labelled parameter indexed at literal positions along ``dim``
    (``table[1]``, ``pos_embed[:, 1:]``, ``rel_pos[idx]``): ``dim`` cannot be the one pruning
    removes positions from, or the literal positions would address other entries. Each fiber
    along ``dim`` becomes one unit, so the prunable dim is another one (the graph freezes the
    parameter if no dim is left, see ``graph._direct_violations``); the index keeps addressing
    the same positions after pruning."""
    m = lab.movedim(dim, -1).reshape(-1, lab.shape[dim])
    tr.merge(m[:, :1].expand_as(m).numpy(), m.numpy())


def _literal_bounds(it: Any, size: int) -> tuple[int, int] | None:
    """``(start, stop)`` of a step-1 slice with literal non-negative bounds, else None."""
    if not isinstance(it, slice) or it.step not in (None, 1):
        return None
    start, stop = it.start or 0, size if it.stop is None else it.stop
    if isinstance(start, TrackedInt) or isinstance(stop, TrackedInt):
        return None
    if not (isinstance(start, int) and isinstance(stop, int)) or start < 0 or stop < 0:
        return None
    return start, min(stop, size)


def _keep_prefix(
    tr: Tracer, lab: torch.Tensor, dim: int, window: tuple[int, int], what: str
) -> None:
    """A literal window ``[start:stop)`` of a channel dim (GhostNet's ``out[:, :out_chs]``).

    After pruning the same numbers address the same channels if every position before the
    window's end stays: those are kept whole, the rest prune freely (a window reaching the end
    leaves only the positions before its start). ``[:n]`` with ``n >= size`` is the identity,
    before and after pruning.
    """
    start, stop = window
    size = lab.shape[dim]
    end = stop if stop < size else start
    if end > 0:
        tr.freeze(lab.narrow(dim, 0, end), f"{what} at literal positions (kept: the first {end})")


def _follows(it: Any) -> bool:
    if isinstance(it, slice):
        bounds = [it.start, it.stop]
        plain = all(b is None or isinstance(b, TrackedInt) for b in bounds)
        return plain and (it.step in (None, 1))
    return False


@register_op("__setitem__")
def _setitem(tr: Tracer, func: Any, args: Any, kwargs: Any, out: Any) -> None:
    x, idx, value = args[0], args[1], args[2]
    _check_index(tr, x, idx)
    full = tr.full(x).clone()
    if isinstance(value, torch.Tensor):
        full[tr.concrete(untrack(idx))] = tr.full(value)
    tr.set_labels(x, full)


@register_op(
    "index_put_",
    "index_put",
    "scatter",
    "scatter_",
    "scatter_add",
    "scatter_add_",
    "masked_scatter",
    "index_add",
    "index_add_",
    "index_copy",
    "index_copy_",
)
def _scatter(tr: Tracer, func: Any, args: Any, kwargs: Any, out: Any) -> None:
    for t in iter_tensors(args):
        tr.freeze_tensor(t, f"{func.__name__} writes at data-dependent positions")
