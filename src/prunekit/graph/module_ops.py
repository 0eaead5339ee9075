"""Size attributes: a module attribute that holds a channel count surgery keeps up to date.

Some forwards size a tensor from an attribute set in ``__init__``: torchvision's
``VisionTransformer`` reshapes the patch embedding with ``self.hidden_dim``; timm's MetaFormer
``Scale`` views its parameter as ``self.shape``. Such a size is a literal to the tracer, so the
channels it sizes would be kept whole — unless surgery updates the attribute. :func:`track_sizes`
declares both halves at once: while the module runs under the tracer, the attribute reads as a
size that measures the named tensor dim (so shapes computed from it follow pruning, like
``x.shape``), and after slicing, surgery writes the new size into the attribute.

Example:
    >>> track_sizes(VisionTransformer, SizeAttr("hidden_dim", "conv_proj.weight", 0))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from prunekit.graph.labels import TrackedInt
from prunekit.graph.tracer import Tracer, register_module_op


@dataclass(frozen=True)
class SizeAttr:
    """One size attribute.

    Attributes:
        attr: attribute name; its value is an int, or a tuple holding the size at ``index``.
        tensor: the module's parameter or buffer (dotted path inside the module) it measures.
        dim: the dim of that tensor.
        index: position of the size inside a tuple attribute (None for an int).
    """

    attr: str
    tensor: str
    dim: int = 0
    index: int | None = None


class _AttrSize(TrackedInt):
    """A size read from a :class:`SizeAttr` during tracing.

    Its provenance is looked up when a shape op reads it: the labels of the tensor dim as the
    trace knows them by then (the slot of a layer's weight, or a directly used parameter's own
    labels). Unknown then, it has none, and the shape op treats it as a literal (kept whole).
    """

    _where: tuple[Tracer, str, int]

    def __new__(cls, value: int, tr: Tracer, name: str, dim: int) -> _AttrSize:
        obj = int.__new__(cls, value)
        obj._where = (tr, name, dim)
        return obj

    @property
    def prov(self) -> tuple[np.ndarray, ...]:  # type: ignore[override]
        tr, name, dim = self._where
        if (name, dim) in tr.slots:
            return (tr.slots[(name, dim)],)
        if name in tr.direct:
            base, shape = tr.direct[name]
            ids = np.arange(base, base + int(np.prod(shape)), dtype=np.int64).reshape(shape)
            return (np.moveaxis(ids, dim, 0).reshape(shape[dim], -1)[:, 0].copy(),)
        return ()


def _tensor(mod: nn.Module, path: str) -> torch.Tensor:
    owner, _, attr = path.rpartition(".")
    t = getattr(mod.get_submodule(owner) if owner else mod, attr)
    assert isinstance(t, torch.Tensor), path
    return t


def _with_size(value: Any, attr: SizeAttr, size: int) -> Any:
    if attr.index is None:
        return size
    items = list(value)
    items[attr.index] = size
    return type(value)(items)


def track_sizes(cls: type[nn.Module] | str, *attrs: SizeAttr) -> None:
    """Declare size attributes of module kind ``cls`` (a class or ``"module.QualName"``).

    Registers a tracer hook (the attributes read as tracked sizes while the module runs, and
    are restored afterwards, even if the forward raises) and a surgery handler (the attributes
    get the tensors' new sizes). The module must own a tensor of the plan for the handler to
    run, as every surgery handler.
    """
    from prunekit.surgery import register_module  # surgery imports the graph package

    saved: list[dict[str, Any]] = []

    def enter(tr: Tracer, mod: nn.Module, args: Any, kwargs: Any) -> None:
        saved.append({a.attr: getattr(mod, a.attr) for a in attrs})
        for a in attrs:
            t = _tensor(mod, a.tensor)
            name = tr.name_of(t)
            if name is not None:
                size = _AttrSize(int(t.shape[a.dim]), tr, name, a.dim)
                object.__setattr__(mod, a.attr, _with_size(getattr(mod, a.attr), a, size))

    def exit(tr: Tracer, mod: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        for k, v in saved.pop().items():
            object.__setattr__(mod, k, v)

    def fix(mod: Any, before: dict[str, Any]) -> None:
        for a in attrs:
            size = int(_tensor(mod, a.tensor).shape[a.dim])
            setattr(mod, a.attr, _with_size(getattr(mod, a.attr), a, size))

    register_module_op(cls, enter=enter, exit=exit)
    register_module(cls)(fix)
