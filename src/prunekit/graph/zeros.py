"""Which tensors are exactly 0 at their pruned channels in the soft-masked model.

Soft mode zeros a unit's parameter entries. A conv, linear or norm output is then 0 at that
unit's channels (its weight rows, bias and shift are zeroed), and so is anything zero-preserving
made of it: ReLU/GELU/SiLU, products, sums of such tensors, views, pooling. A reduction over the
channels that zeros leave unchanged — ``x.pow(2).sum(1)``, a norm — then computes the same
with the channels removed, so it needs no coupling (see ``_reduce`` in :mod:`ops`) instead of
keeping its producer whole. Each rule says, from an op's inputs, whether its output has this
property; ops without a rule never have it (the safe default).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from prunekit.graph.ops import POOL, _arg
from prunekit.graph.shape_ops import LIST_FIRST, RESHAPE, SELF_ONLY
from prunekit.graph.tracer import ZERO_RULES, Tracer, iter_tensors

Rule = Callable[[Tracer, tuple[Any, ...], dict[str, Any], Any], bool]


def _names(text: str) -> list[str]:
    return text.split()


#: f(0) == 0, elementwise
ZERO_PRESERVING = _names(
    """
    relu relu_ relu6 gelu gelu_ silu silu_ tanh tanh_ hardswish hardswish_ hardtanh hardtanh_
    leaky_relu leaky_relu_ elu elu_ selu selu_ celu celu_ mish mish_ softsign tanhshrink
    hardshrink softshrink rrelu dropout dropout_ dropout1d dropout2d dropout3d clone contiguous
    detach detach_ float half bfloat16 double to type type_as cpu cuda abs abs_ neg neg_ __neg__
    __pos__ positive sqrt sqrt_ square sign sgn erf erfinv sin tan floor ceil round trunc frac
    nan_to_num requires_grad_ expm1 log1p glu
    """
)
#: reductions and scans whose result over zeros is zero
ZERO_REDUCE = _names(
    "sum mean amax amin max min prod std var norm nanmean nansum median nanmedian cumsum cumprod "
    "normalize linalg_vector_norm"
)
SPLITS = _names("split chunk tensor_split unbind split_with_sizes narrow __getitem__")


def _first(tr: Tracer, args: Any, kwargs: Any, out: Any) -> bool:
    return tr.zero_when_pruned(next(iter_tensors(args), None))


def _all(tr: Tracer, args: Any, kwargs: Any, out: Any) -> bool:
    ts = list(iter_tensors(args))
    return bool(ts) and all(tr.zero_when_pruned(t) for t in ts)


def _shared(tr: Tracer, t: torch.Tensor) -> bool:
    """A single-label operand (a gate broadcast over all channels): coupled to nothing."""
    return tr.labels(t).numel() == 1


def _sum(tr: Tracer, args: Any, kwargs: Any, out: Any) -> bool:
    """``a + b``: 0 where both are, if their channels were coupled (no shared gate)."""
    ts = [t for t in iter_tensors(args) if t.dim() > 0 or t.numel() > 1]
    scalars = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
    shared = [_shared(tr, t) for t in ts]
    return (
        bool(ts)
        and all(tr.zero_when_pruned(t) for t in ts)
        and all(float(a) == 0.0 for a in scalars)
        and (all(shared) or not any(shared))
    )


def _product(tr: Tracer, args: Any, kwargs: Any, out: Any) -> bool:
    """``a * b``: 0 where a zero operand carries the output's channels."""
    ts = [t for t in iter_tensors(args) if t.dim() > 0 or t.numel() > 1]
    shared = [_shared(tr, t) for t in ts]
    return any(tr.zero_when_pruned(t) and (not s or all(shared)) for t, s in zip(ts, shared))


def _quotient(tr: Tracer, args: Any, kwargs: Any, out: Any) -> bool:
    """``a / b``: 0 where ``a`` is, unless ``b`` may be 0 there too (0/0)."""
    num, den = args[0], args[1] if len(args) > 1 else None
    if not isinstance(num, torch.Tensor) or _shared(tr, num):
        return False
    if isinstance(den, torch.Tensor):
        return tr.zero_when_pruned(num) and not tr.zero_when_pruned(den)
    return tr.zero_when_pruned(num) and isinstance(den, (int, float)) and float(den) != 0.0


def _power(tr: Tracer, args: Any, kwargs: Any, out: Any) -> bool:
    exp = _arg(args, kwargs, 1, "exponent")
    ok = isinstance(exp, (int, float)) and not isinstance(exp, bool) and float(exp) > 0
    return ok and isinstance(args[0], torch.Tensor) and tr.zero_when_pruned(args[0])


def _pad(tr: Tracer, args: Any, kwargs: Any, out: Any) -> bool:
    value = _arg(args, kwargs, 3, "value")
    return _first(tr, args, kwargs, out) and (value is None or float(value) == 0.0)


def _named(tr: Tracer, t: Any) -> bool:
    return t is None or (tr.name_of(t) is not None and not tr.stored(t))


def _layer(weight: int, bias: int) -> Rule:
    """A layer whose named weight (and bias) are zeroed at a pruned output channel."""

    def rule(tr: Tracer, args: Any, kwargs: Any, out: Any) -> bool:
        w = _arg(args, kwargs, weight, "weight")
        b = _arg(args, kwargs, bias, "bias") if bias >= 0 else None
        return w is not None and _named(tr, w) and _named(tr, b)

    return rule


def _register(names: list[str], rule: Rule) -> None:
    for name in names:
        ZERO_RULES[name] = rule


_register(ZERO_PRESERVING + ZERO_REDUCE + SPLITS + POOL, _first)
_register([n for n in SELF_ONLY + RESHAPE if n not in LIST_FIRST], _first)
_register([*LIST_FIRST, "max", "min"], _all)  # max(a, b): both
_register(_names("add add_ __add__ __radd__ __iadd__ sub sub_ __sub__ __rsub__ __isub__"), _sum)
_register(_names("mul mul_ __mul__ __rmul__ __imul__"), _product)
_register(_names("div div_ __truediv__ __itruediv__ true_divide __div__"), _quotient)
_register(_names("pow pow_ __pow__"), _power)
_register(["pad"], _pad)
_register(
    _names("conv1d conv2d conv3d conv_transpose1d conv_transpose2d conv_transpose3d"), _layer(1, 2)
)
_register(["linear"], _layer(1, 2))
_register(_names("batch_norm instance_norm"), _layer(3, 4))
_register(_names("layer_norm group_norm"), _layer(2, 3))
_register(["rms_norm"], _layer(2, -1))
