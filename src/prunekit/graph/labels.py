"""Channel labels: the bookkeeping under the dependency graph.

Every tensor seen during tracing carries an int64 *label tensor*, broadcastable to the data
tensor, whose entries name the feature ("channel") each element belongs to. Ops propagate
labels (often by running the very same op on the label tensor) and record *merges*: two labels
that must be pruned together. After the trace, connected components of the merge graph are the
pruning units.

Two reserved labels:

* ``FROZEN`` (0): a feature that must not be pruned (model inputs/outputs, constants, operands
  of ops that mix channels). Merging a label with ``FROZEN`` freezes its whole unit.
* ``NOLABEL`` (-1): no feature at all (e.g. ``zeros_like``): never merged with anything.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

FROZEN = 0
NOLABEL = -1


def compact(labels: torch.Tensor) -> torch.Tensor:
    """Shrink every dim along which ``labels`` is constant to size 1 (keeps ndim)."""
    out = labels
    for d in range(out.dim()):
        if out.shape[d] > 1:
            first = out.narrow(d, 0, 1)
            if torch.equal(out, first.expand_as(out)):
                out = first
    return out.contiguous()


def varying_dims(labels: torch.Tensor) -> list[int]:
    """Dims along which a compact label tensor varies."""
    return [d for d in range(labels.dim()) if labels.shape[d] > 1]


def along(labels: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """Labels as a ``(size, rest)`` matrix: row ``i`` holds every label found at index ``i``."""
    lab = labels
    if lab.shape[dim] == 1 and size > 1:
        lab = lab.expand(*lab.shape[:dim], size, *lab.shape[dim + 1 :])
    return lab.movedim(dim, 0).reshape(size, -1)


class TrackedInt(int):
    """An ``int`` read from a tensor's shape along a labelled dim, remembering those labels.

    Code such as ``C = x.shape[1]; x.view(B, 2, C // 2, H, W)`` computes new shapes from channel
    counts. After pruning, such a shape follows the new count automatically, whereas a literal
    ``x.view(B, 2, 58, H, W)`` does not. Tracking provenance through integer arithmetic lets the
    tracer tell the two apart.
    """

    prov: tuple[np.ndarray, ...]

    def __new__(cls, value: int, prov: tuple[np.ndarray, ...]) -> TrackedInt:
        obj = int.__new__(cls, value)
        obj.prov = prov
        return obj

    def _wrap(self, value: Any, other: Any) -> Any:
        if value is NotImplemented:
            return value
        prov = self.prov + (other.prov if isinstance(other, (TrackedInt, TrackedFloat)) else ())
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return TrackedInt(value, prov)
        if isinstance(value, float):
            return TrackedFloat(value, prov)
        return value

    def __add__(self, o: Any) -> Any:
        return self._wrap(int.__add__(self, o), o)

    def __radd__(self, o: Any) -> Any:
        return self._wrap(int.__radd__(self, o), o)

    def __sub__(self, o: Any) -> Any:
        return self._wrap(int.__sub__(self, o), o)

    def __rsub__(self, o: Any) -> Any:
        return self._wrap(int.__rsub__(self, o), o)

    def __mul__(self, o: Any) -> Any:
        return self._wrap(int.__mul__(self, o), o)

    def __rmul__(self, o: Any) -> Any:
        return self._wrap(int.__rmul__(self, o), o)

    def __floordiv__(self, o: Any) -> Any:
        return self._wrap(int.__floordiv__(self, o), o)

    def __rfloordiv__(self, o: Any) -> Any:
        return self._wrap(int.__rfloordiv__(self, o), o)

    def __truediv__(self, o: Any) -> Any:
        return self._wrap(int.__truediv__(self, o), o)

    def __rtruediv__(self, o: Any) -> Any:
        return self._wrap(int.__rtruediv__(self, o), o)

    def __mod__(self, o: Any) -> Any:
        return self._wrap(int.__mod__(self, o), o)

    def __pow__(self, o: Any, mod: Any = None) -> Any:
        return self._wrap(int.__pow__(self, o, mod), o)

    def __neg__(self) -> Any:
        return self._wrap(int.__neg__(self), None)

    def __hash__(self) -> int:
        return int.__hash__(self)


class TrackedFloat(float):
    """A ``float`` computed from a :class:`TrackedInt` (e.g. ``head_dim ** -0.5``)."""

    prov: tuple[np.ndarray, ...]

    def __new__(cls, value: float, prov: tuple[np.ndarray, ...]) -> TrackedFloat:
        obj = float.__new__(cls, value)
        obj.prov = prov
        return obj

    def _wrap(self, value: Any, other: Any) -> Any:
        if isinstance(value, float) and not isinstance(value, bool):
            prov = self.prov + (other.prov if isinstance(other, (TrackedInt, TrackedFloat)) else ())
            return TrackedFloat(value, prov)
        return value

    def __mul__(self, o: Any) -> Any:
        return self._wrap(float.__mul__(self, o), o)

    def __rmul__(self, o: Any) -> Any:
        return self._wrap(float.__rmul__(self, o), o)

    def __truediv__(self, o: Any) -> Any:
        return self._wrap(float.__truediv__(self, o), o)

    def __rtruediv__(self, o: Any) -> Any:
        return self._wrap(float.__rtruediv__(self, o), o)

    def __pow__(self, o: Any, mod: Any = None) -> Any:
        return self._wrap(float.__pow__(self, o, mod), o)

    def __hash__(self) -> int:
        return float.__hash__(self)


def provenance(values: Iterable[Any]) -> list[np.ndarray]:
    """All label arrays carried by tracked numbers among ``values`` (nested lists allowed)."""
    out: list[np.ndarray] = []
    for v in values:
        if isinstance(v, (TrackedInt, TrackedFloat)):
            out.extend(v.prov)
        elif isinstance(v, (list, tuple)):
            out.extend(provenance(v))
    return out


def untrack(value: Any) -> Any:
    """Replace tracked numbers by plain ones (for calling ops on label tensors)."""
    if isinstance(value, TrackedInt):
        return int(value)
    if isinstance(value, TrackedFloat):
        return float(value)
    if isinstance(value, torch.Size):
        return torch.Size([int(v) for v in value])
    if isinstance(value, tuple):
        return tuple(untrack(v) for v in value)
    if isinstance(value, list):
        return [untrack(v) for v in value]
    if isinstance(value, dict):
        return {k: untrack(v) for k, v in value.items()}
    return value
