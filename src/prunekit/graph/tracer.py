"""Dynamic tracing: run the model once under a ``TorchFunctionMode`` and propagate labels.

Why a torch-function mode (see ``docs/design.md``): it sees every tensor op of the real forward
pass — functional calls, tensor methods, operators, shape reads — with the real arguments, so it
works on any eager model (control flow included), costs one forward pass, and never needs the
model to be symbolically traceable. ``torch.export``/FX fail on data-dependent Python and take
seconds on large models; autograd ``grad_fn`` tracing loses shape ops and anything without a
gradient.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from prunekit.errors import ConfigError, PrunekitError, UnsupportedOpError, first_line
from prunekit.graph.labels import FROZEN, NOLABEL, TrackedInt, compact, varying_dims
from prunekit.registry import for_class

Handler = Callable[["Tracer", Any, tuple[Any, ...], dict[str, Any], Any], Any]

#: op name -> handler. Filled by :mod:`prunekit.graph.ops`; extend with :func:`register_op`.
OP_HANDLERS: dict[str, Handler] = {}


#: op name -> ``rule(tracer, args, kwargs, out) -> bool``: whether the op's output is exactly 0
#: at every pruned channel of the soft-masked model (see :meth:`Tracer.zero_when_pruned`).
ZERO_RULES: dict[str, Callable[[Any, tuple[Any, ...], dict[str, Any], Any], bool]] = {}


def _conv_layout(mod: nn.Module, attr: str) -> tuple[int, int] | None:
    if attr != "weight" or getattr(mod, "groups", 1) != 1:
        return None
    return (1, 0) if getattr(mod, "transposed", False) else (0, 1)


def _linear_layout(mod: nn.Module, attr: str) -> tuple[int, int] | None:
    return (0, 1) if attr == "weight" else None


#: layer kind -> ``fn(module, attr) -> (output dim, input dim)`` of that attribute, or None.
#: Used when a layer's weight is read by generic ops (weight standardisation) instead of only
#: by the layer's own op.
WEIGHT_LAYOUTS: dict[type[nn.Module], Callable[[nn.Module, str], tuple[int, int] | None]] = {
    nn.modules.conv._ConvNd: _conv_layout,
    nn.Linear: _linear_layout,
}


def register_op(*names: str, override: bool = False) -> Callable[[Handler], Handler]:
    """Register a label-propagation handler for torch functions with the given names.

    A handler is called as ``handler(tracer, func, args, kwargs, out)`` after the op ran, and
    must give labels to the tensors in ``out`` (``tracer.set_labels``) and record couplings
    (``tracer.merge`` / ``tracer.freeze`` / ``tracer.slot``). Returning a value other than
    ``None`` replaces the op's result (used for shape reads). A name that already has a handler
    is refused unless ``override=True`` (two handlers for one op would silently disagree).

    Example:
        >>> @register_op("my_custom_op")
        ... def _my_op(tr, func, args, kwargs, out):
        ...     tr.set_labels(out, tr.labels(args[0]))
    """
    taken = [n for n in names if n in OP_HANDLERS]
    if taken and not override:
        raise ConfigError(
            f"op {taken[0]!r} already has a tracer handler; pass override=True to replace it"
        )

    def deco(fn: Handler) -> Handler:
        for name in names:
            OP_HANDLERS[name] = fn
        return fn

    return deco


class ModuleOp:
    """How the tracer treats calls of one module kind (see :func:`register_module_op`).

    Attributes:
        enter: ``enter(tracer, module, args, kwargs)`` before the module's forward.
        exit: ``exit(tracer, module, args, kwargs, output)`` after it (also when it raised).
        opaque: if True, ops inside the forward are not traced; ``exit`` must label the output
            and record the couplings of the module's tensors itself.
    """

    def __init__(
        self, enter: Callable[..., None] | None, exit: Callable[..., None] | None, opaque: bool
    ) -> None:
        self.enter, self.exit, self.opaque = enter, exit, opaque


#: module class, or its ``"module.QualName"`` (optional dependencies stay unimported) -> ModuleOp
MODULE_OPS: dict[type[nn.Module] | str, ModuleOp] = {}


def register_module_op(
    cls: type[nn.Module] | str,
    *,
    enter: Callable[..., None] | None = None,
    exit: Callable[..., None] | None = None,
    opaque: bool = False,
) -> None:
    """Trace calls of a module kind with ``enter``/``exit`` hooks (subclasses inherit).

    Used for modules whose forward cannot be followed op by op but whose meaning is known
    (attention blocks: :mod:`prunekit.graph.attention`) and for size attributes that surgery
    updates (:func:`prunekit.graph.module_ops.track_sizes`).
    """
    MODULE_OPS[cls] = ModuleOp(enter, exit, opaque)


def module_op_for(mod: nn.Module) -> ModuleOp | None:
    """The :class:`ModuleOp` of ``mod``'s class or nearest registered base class."""
    return for_class(MODULE_OPS, mod)


def op_name(func: Any) -> str:
    """A stable name for a torch function (``conv2d``, ``add``, ``shape.__get__``...)."""
    name = getattr(func, "__name__", None) or repr(func)
    if name == "__get__":
        owner = getattr(func, "__self__", None)
        return f"{getattr(owner, '__name__', '?')}.__get__"
    return name


def iter_tensors(obj: Any) -> Iterator[torch.Tensor]:
    """Tensors inside nested tuples/lists/dicts."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from iter_tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from iter_tensors(o)


# Shape-preserving ops whose meta kernels are slow Python decompositions (BatchNorm's costs
# ~10 ms a call): on meta inputs the result is just an empty tensor like the input.
_SAME_SHAPE = frozenset(
    """batch_norm instance_norm layer_norm group_norm relu gelu silu sigmoid tanh hardswish
    hardsigmoid relu6 hardtanh leaky_relu elu dropout clone""".split()  # noqa: SIM905
)


def _meta_fast_path(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x = args[0] if args else None
    if name not in _SAME_SHAPE or not isinstance(x, torch.Tensor) or not x.is_meta:
        return None
    if kwargs.get("inplace"):
        return x
    return torch.empty_like(x)


class NeedsRealValues(Exception):
    """Raised inside a meta-tensor trace when an op needs real tensor values."""


class Tracer(TorchFunctionMode):
    """Records label propagation for one model. Use :func:`prunekit.graph.trace`."""

    def __init__(
        self, model: nn.Module, *, unknown_ops: str = "error", barrier_modules: Iterable[str] = ()
    ) -> None:
        super().__init__()
        self.model = model
        self.unknown_ops = unknown_ops
        self.names: dict[int, str] = {}
        for name, t in list(model.named_buffers()) + list(model.named_parameters()):
            self.names.setdefault(id(t), name)
        self.real_names = dict(self.names)
        self._store: dict[int, tuple[weakref.ref[torch.Tensor], torch.Tensor]] = {}
        self.next_id = 1
        self.pairs: list[np.ndarray] = []
        self.slots: dict[tuple[str, int], np.ndarray] = {}
        self.direct: dict[str, tuple[int, tuple[int, ...]]] = {}
        self.ties: list[tuple[list[np.ndarray], np.ndarray]] = []
        self.freeze_events: list[tuple[np.ndarray, str]] = []
        self.macs_per_weight: dict[str, float] = {}
        self.stack: list[str] = []
        self.called: set[str] = set()
        self.opaque_depth = 0
        self.barrier_modules = set(barrier_modules)
        self.real_of: dict[int, torch.Tensor] = {}
        self._frozen = torch.zeros(1, dtype=torch.bool)  # ids frozen directly so far
        self._keep: list[torch.Tensor] = []
        #: (tensor, dim) -> labels standing for that dim in shape reads (``weight.shape``):
        #: resolved after the trace to the dim's slot, or frozen if the dim is never pruned.
        self.shape_refs: dict[tuple[str, int], np.ndarray] = {}
        #: named tensors consumed whole by an op that mixes them -> why (all slots frozen).
        self.whole: dict[str, str] = {}
        self.slot_owner: dict[int, str] = {}  # first label of a slot -> its tensor
        self._zeros: dict[int, weakref.ref[torch.Tensor]] = {}

    def concrete(self, obj: Any) -> Any:
        """``obj`` with meta tensors replaced by the real buffers they stand for.

        Label ops that index with a tensor (``table[index]``) need its values; a meta tensor
        computed inside forward has none, so the trace is redone on real tensors.
        """
        if isinstance(obj, torch.Tensor) and obj.is_meta:
            real = self.real_of.get(id(obj))
            if real is None:
                raise NeedsRealValues(op_name(obj))
            return real
        if isinstance(obj, (list, tuple)):
            return type(obj)(self.concrete(o) for o in obj)
        if isinstance(obj, dict):
            return {k: self.concrete(v) for k, v in obj.items()}
        return obj

    # ----------------------------------------------------------------- label store
    def new_ids(self, n: int) -> np.ndarray:
        """Allocate ``n`` fresh labels."""
        ids = np.arange(self.next_id, self.next_id + n, dtype=np.int64)
        self.next_id += n
        return ids

    def labels(self, t: Any) -> torch.Tensor:
        """Compact label tensor of ``t`` (FROZEN for tensors of unknown origin)."""
        if not isinstance(t, torch.Tensor):
            return torch.full((), FROZEN, dtype=torch.int64)
        entry = self._store.get(id(t))
        if entry is not None and entry[0]() is t:
            return entry[1]
        name = self.names.get(id(t))
        if name is not None:
            return self._param_labels(t, name)
        return torch.full((1,) * t.dim(), FROZEN, dtype=torch.int64)

    def zero_when_pruned(self, t: Any) -> bool:
        """Whether ``t`` is exactly 0 at its pruned channels in the soft-masked model.

        True for a conv/linear/norm output whose weight (and bias) are zeroed there, and what
        zero-preserving ops make of it (ReLU, products, sums of such, views). A reduction of
        such a tensor that zeros do not change (``x.pow(2).sum(1)``) then gives the same
        result with the channels removed: it needs no coupling.
        """
        ref = self._zeros.get(id(t)) if isinstance(t, torch.Tensor) else None
        return ref is not None and ref() is t

    def mark_zero(self, out: Any) -> None:
        """Record that the tensors in ``out`` are 0 at pruned channels (see above)."""
        zeros = self._zeros
        for t in iter_tensors(out):

            def _drop(_: Any, key: int = id(t)) -> None:
                zeros.pop(key, None)

            zeros[id(t)] = weakref.ref(t, _drop)

    def stored(self, t: Any) -> bool:
        """Whether ``t`` already carries labels (a tensor seen in this trace)."""
        entry = self._store.get(id(t)) if isinstance(t, torch.Tensor) else None
        return entry is not None and entry[0]() is t

    def known_labels(self, t: Any) -> torch.Tensor:
        """Like :meth:`labels`, but never creates per-element labels for a parameter.

        Used where an operand is only frozen: a parameter consumed whole by an opaque op
        belongs to no group anyway, and labelling millions of weight elements is costly.
        """
        if isinstance(t, torch.Tensor):
            entry = self._store.get(id(t))
            if entry is not None and entry[0]() is t:
                return entry[1]
            if self.name_of(t) is not None:
                return torch.full((1,) * t.dim(), FROZEN, dtype=torch.int64)
        return self.labels(t)

    def _param_labels(self, t: torch.Tensor, name: str) -> torch.Tensor:
        """Labels of a parameter/buffer used by generic ops (not by its layer's own op).

        A 1-d tensor (layer scale, gain, per-channel bias) is its dim-0 slot. The weight of a
        known layer kind (:data:`WEIGHT_LAYOUTS`) used in a computation (weight
        standardisation, a mask) is labelled by its output slot; its input channels are kept
        whole, since such computations (statistics over the fan-in) may mix them. Anything else
        gets one label per element (see :meth:`_direct_labels`).
        """
        if t.dim() == 1 and t.shape[0] > 1:
            lab = torch.from_numpy(self.slot(name, 0, t.shape[0]).copy())
            self.set_labels(t, lab)
            return lab
        layout = self._weight_layout(name, t)
        if layout is None:
            return self._direct_labels(t, name)
        out_dim, in_dim = layout
        shape = [1] * t.dim()
        shape[out_dim] = t.shape[out_dim]
        lab = torch.from_numpy(self.slot(name, out_dim, t.shape[out_dim]).copy()).reshape(shape)
        if t.shape[in_dim] > 1:
            self.freeze(
                self.slot(name, in_dim, t.shape[in_dim]),
                f"weight {name!r} is used in a computation in forward (e.g. standardised): its "
                "input channels are kept whole",
            )
        self.set_labels(t, lab)
        return lab

    def owner(self, name: str) -> nn.Module | None:
        """The module holding state tensor ``name``."""
        path = name.rpartition(".")[0]
        try:
            return self.model.get_submodule(path) if path else self.model
        except AttributeError:
            return None

    def _weight_layout(self, name: str, t: torch.Tensor) -> tuple[int, int] | None:
        mod, attr = self.owner(name), name.rpartition(".")[2]
        if mod is None:
            return None
        for cls in type(mod).__mro__:
            layout = WEIGHT_LAYOUTS.get(cls)
            if layout is not None:
                dims = layout(mod, attr)
                return dims if dims is not None and t.dim() > max(dims) else None
        return None

    def _direct_labels(self, t: torch.Tensor, name: str) -> torch.Tensor:
        # A parameter used directly by generic ops (class token, layer scale, position
        # embedding): every element gets its own label; which dim is prunable is decided
        # after all merges are known (see graph._direct_slots).
        if name not in self.direct:
            base = int(self.new_ids(t.numel())[0]) if t.numel() else self.next_id
            self.direct[name] = (base, tuple(t.shape))
        base, shape = self.direct[name]
        lab = torch.arange(base, base + t.numel(), dtype=torch.int64).reshape(shape)
        self.set_labels(t, lab)
        return lab

    def set_labels(self, out: Any, lab: torch.Tensor) -> None:
        """Attach ``lab`` (broadcastable to ``out``) to tensor ``out``."""
        if not isinstance(out, torch.Tensor):
            return
        if lab.dim() < out.dim():
            lab = lab.reshape((1,) * (out.dim() - lab.dim()) + tuple(lab.shape))
        lab = compact(lab)
        if self._frozen.numel() > 1 and lab.numel() > 1:
            # Labels already frozen are written as FROZEN: label tensors then stay compact
            # (e.g. a ViT's [1, 197, 768] residual collapses once LayerNorm froze it).
            idx = lab.clamp(0, self._frozen.numel() - 1)
            hit = self._frozen[idx] & (lab < self._frozen.numel())
            if bool(hit.any()):
                lab = compact(torch.where(hit, FROZEN, lab))
        key = id(out)
        store = self._store

        def _drop(_: Any, key: int = key) -> None:
            store.pop(key, None)

        store[key] = (weakref.ref(out, _drop), lab)

    def full(self, t: torch.Tensor) -> torch.Tensor:
        """Labels of ``t`` expanded to ``t``'s full shape (a view; clone before writing)."""
        return self.labels(t).expand(t.shape)

    # ----------------------------------------------------------------- couplings
    def merge(self, a: Any, b: Any) -> None:
        """Couple labels elementwise (arrays/tensors of the same shape)."""
        a = np.asarray(a, dtype=np.int64).reshape(-1)
        b = np.asarray(b, dtype=np.int64).reshape(-1)
        keep = (a >= 0) & (b >= 0) & (a != b)
        if not keep.any():
            return
        a, b = a[keep], b[keep]
        if a.size > 4096:
            # Broadcasts repeat pairs many times: dedupe large inputs via one int64 key per
            # pair (cheaper than unique(axis=0)). Small ones go as they are; the
            # connected-components pass does not mind duplicates.
            key = np.unique((a << 32) | b)
            a, b = key >> 32, key & 0xFFFFFFFF
        self.pairs.append(np.stack([a, b], axis=1))

    def merge_rows(self, rows: torch.Tensor, ids: np.ndarray) -> None:
        """Merge every label of ``rows[i]`` (a ``(n, rest)`` matrix) with ``ids[i]``."""
        r = rows.numpy()
        self.merge(r, np.broadcast_to(ids.reshape(-1, 1), r.shape))

    def freeze(self, lab: Any, reason: str) -> None:
        """Forbid pruning every label in ``lab``, recording why."""
        arr = np.unique(np.asarray(lab, dtype=np.int64).reshape(-1))
        arr = arr[arr > FROZEN]
        if arr.size:
            if int(arr[-1]) >= self._frozen.numel():
                grow = torch.zeros(
                    max(int(arr[-1]) + 1, 2 * self._frozen.numel()), dtype=torch.bool
                )
                grow[: self._frozen.numel()] = self._frozen
                self._frozen = grow
            self._frozen[torch.from_numpy(arr)] = True
            self.pairs.append(np.stack([arr, np.zeros_like(arr)], axis=1))
            self.freeze_events.append((arr, f"{reason} (at {self.where()})"))

    def freeze_tensor(self, t: Any, reason: str) -> None:
        """Forbid pruning any channel of ``t`` (a parameter consumed whole: all its slots)."""
        if isinstance(t, torch.Tensor) and not self.stored(t):
            name = self.name_of(t)
            if name is not None:
                self.whole.setdefault(name, f"{reason} (at {self.where()})")
                return
        self.freeze(self.known_labels(t), reason)

    def shape_ref(self, t: torch.Tensor, dim: int) -> np.ndarray | None:
        """Labels for ``t.shape[dim]`` when ``t`` is a parameter/buffer not labelled yet.

        Reading a parameter's shape (``weight.shape[-2:]`` in a same-padding conv) is shape
        provenance like ``x.shape``: it must neither label the parameter nor freeze it. The
        labels are tied to the dim's slot after the trace (:func:`prunekit.graph.graph.trace`).
        """
        name = self.name_of(t)
        if name is None or self.stored(t) or t.shape[dim] <= 1:
            return None
        key = (name, dim)
        if key not in self.shape_refs:
            self.shape_refs[key] = self.new_ids(t.shape[dim])
        return self.shape_refs[key]

    def freeze_varying(self, t: torch.Tensor, dims: Iterable[int], reason: str) -> bool:
        """Freeze ``t``'s labels if they vary along any of ``dims``; True if they did."""
        lab = self.labels(t)
        if any(lab.shape[d] > 1 for d in dims):
            self.freeze(lab, reason)
            return True
        return False

    def slot(self, name: str, dim: int, size: int) -> np.ndarray:
        """Labels standing for positions ``0..size-1`` along ``dim`` of tensor ``name``."""
        key = (name, dim)
        if key not in self.slots:
            self.slots[key] = self.new_ids(size)
            if size:
                self.slot_owner[int(self.slots[key][0])] = name
        return self.slots[key]

    def name_of(self, t: Any) -> str | None:
        """State-dict name of a parameter/buffer of the model, or None."""
        return self.names.get(id(t)) if isinstance(t, torch.Tensor) else None

    def weight_name(self, w: Any) -> str | None:
        """The parameter a layer weight is (or was computed from, along its output slot)."""
        name = self.name_of(w)
        if name is not None or not isinstance(w, torch.Tensor):
            return name
        lab = self.labels(w).reshape(-1)
        return self.slot_owner.get(int(lab[0])) if lab.numel() else None

    def tie(self, prov: list[np.ndarray], target: torch.Tensor) -> None:
        """Record that a shape computed from labels ``prov`` sizes a dim labelled ``target``."""
        self.ties.append((prov, target.reshape(-1).numpy().copy()))

    def where(self) -> str:
        """Module path currently executing (for messages)."""
        return self.stack[-1] if self.stack and self.stack[-1] else "<model>"

    # ----------------------------------------------------------------- mode hook
    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        name = op_name(func)
        out = _meta_fast_path(name, args, kwargs)
        if out is None:
            out = func(*args, **kwargs)
        if isinstance(out, torch.Tensor) and out.is_meta and not out.is_floating_point():
            self._shadow(func, args, kwargs, out)
        if self.opaque_depth:
            return out
        handler = OP_HANDLERS.get(name)
        if handler is None:
            if next(iter_tensors(out), None) is None:
                return out  # metadata queries, asserts, flags: nothing to label
            return self._unknown(name, args, kwargs, out)
        try:
            result = handler(self, func, args, kwargs, out)
        except (NeedsRealValues, PrunekitError):
            raise
        except Exception as exc:  # a handler bug must not read as "the model does not run"
            return self._failed(name, args, kwargs, out, exc)
        rule = ZERO_RULES.get(name)
        if rule is not None and rule(self, args, kwargs, out):
            self.mark_zero(out)
        return out if result is None else result

    def _failed(self, name: str, args: Any, kwargs: Any, out: Any, exc: Exception) -> Any:
        """A handler that raised: a barrier with ``unknown_ops='barrier'``, else a clear error."""
        if self.unknown_ops == "barrier":
            for t in iter_tensors((args, kwargs)):
                self.freeze_tensor(t, f"op {name!r} treated as a barrier (its handler failed)")
            return out
        raise UnsupportedOpError(
            f"prunekit's handler for op {name!r} failed in module {self.where()!r} "
            f"({type(exc).__name__}: {first_line(exc)}); pass unknown_ops='barrier' to trace() "
            f"to keep the channels through it whole, or replace the handler with "
            f"prunekit.graph.register_op({name!r}, override=True)"
        ) from exc

    def _shadow(self, func: Any, args: Any, kwargs: Any, out: torch.Tensor) -> None:
        """Compute integer tensors (indices built in forward) for real, next to the meta run.

        Index tensors are small, and label ops such as ``table[index]`` need their values.
        In-place ops are never replayed: they would mutate the real model (a BatchNorm's
        ``num_batches_tracked``) during a trace that must leave it untouched.
        """
        name = op_name(func)
        if (name.endswith("_") and not name.endswith("__")) or name.startswith("__i"):
            return
        try:
            real = func(*self.concrete(args), **self.concrete(kwargs))
        except Exception:  # values are optional: ops needing them retrace on real tensors
            return
        if isinstance(real, torch.Tensor) and not real.is_meta:
            self.real_of[id(out)] = real
            self._keep.append(out)  # keep the meta tensor alive so its id stays unique

    def _unknown(self, name: str, args: Any, kwargs: Any, out: Any) -> Any:
        if self.unknown_ops != "barrier":
            raise UnsupportedOpError(
                f"prunekit cannot trace op {name!r} (in module {self.where()!r}). Register a "
                f"handler with prunekit.graph.register_op({name!r}), or pass "
                "unknown_ops='barrier' to trace() to keep the channels through it unpruned."
            )
        for t in iter_tensors((args, kwargs)):
            self.freeze_tensor(t, f"unknown op {name!r} treated as a barrier")
        return out

    # ----------------------------------------------------------------- module hooks
    def hook_modules(self) -> list[Any]:
        """Install hooks that keep the module path stack and handle barrier modules."""
        handles = []
        for path, mod in self.model.named_modules():
            barrier = path in self.barrier_modules or type(mod).__name__ in self.barrier_modules
            handles.append(mod.register_forward_pre_hook(self._pre(path, barrier)))
            handles.append(mod.register_forward_hook(self._post(barrier)))
            op = None if barrier else module_op_for(mod)
            if op is not None:
                pre, post = self._op_hooks(path, op)
                handles.append(mod.register_forward_pre_hook(pre, with_kwargs=True))
                handles.append(
                    mod.register_forward_hook(
                        post, with_kwargs=True, always_call=True, prepend=True
                    )
                )
        return handles

    def _op_hooks(self, path: str, op: ModuleOp) -> tuple[Callable[..., None], Callable[..., None]]:
        active: list[bool] = []  # per call: whether enter ran (not inside an opaque module)

        def pre(mod: nn.Module, args: Any, kwargs: Any) -> None:
            active.append(not self.opaque_depth)
            if not active[-1]:
                return
            if op.opaque:
                self.called.update(
                    ".".join(filter(None, (path, p))) for p, _ in mod.named_modules()
                )
            if op.enter is not None:
                self._quietly(op.enter, mod, args, kwargs)
            if op.opaque:
                self.opaque_depth += 1

        def post(mod: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
            if not active.pop():
                return
            if op.opaque:
                self.opaque_depth -= 1
            if op.exit is not None:
                self._quietly(op.exit, mod, args, kwargs, output)

        return pre, post

    def _quietly(self, fn: Callable[..., None], *args: Any) -> None:
        """Run a module op's hook: tensor ops it makes itself (shape reads) are not traced."""
        self.opaque_depth += 1
        try:
            fn(self, *args)
        finally:
            self.opaque_depth -= 1

    def _pre(self, path: str, barrier: bool) -> Callable[..., None]:
        def hook(mod: nn.Module, inputs: Any) -> None:
            self.stack.append(path)
            self.called.add(path)
            if barrier and not self.opaque_depth:
                for t in iter_tensors(inputs):
                    self.freeze_tensor(t, f"barrier module {path!r}")
            if barrier:
                self.opaque_depth += 1

        return hook

    def _post(self, barrier: bool) -> Callable[..., None]:
        def hook(mod: nn.Module, inputs: Any, output: Any) -> None:
            if barrier:
                self.opaque_depth -= 1
            self.stack.pop()

        return hook

    def track_shape(self, t: torch.Tensor, dims: Iterable[int], sizes: Iterable[int]) -> list[Any]:
        """Shape entries as :class:`TrackedInt` where ``t``'s labels vary along that dim."""
        if self.name_of(t) is not None and not self.stored(t):
            refs = [self.shape_ref(t, d) for d in dims]
            return [int(s) if r is None else TrackedInt(int(s), (r,)) for r, s in zip(refs, sizes)]
        lab = self.labels(t)
        out: list[Any] = []
        for d, s in zip(dims, sizes):
            if lab.shape[d] > 1:
                row = lab.movedim(d, 0).reshape(lab.shape[d], -1)[:, 0].numpy().copy()
                out.append(TrackedInt(int(s), (row,)))
            else:
                out.append(int(s))
        return out


__all__ = [
    "FROZEN",
    "MODULE_OPS",
    "NOLABEL",
    "OP_HANDLERS",
    "ModuleOp",
    "Tracer",
    "op_name",
    "register_module_op",
    "register_op",
    "varying_dims",
]
