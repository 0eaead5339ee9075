"""The dependency graph: groups of channel units that must be pruned together.

A *unit* is one connected component of the label-merge graph (one "channel" in the coupled
sense: e.g. output channel 7 of a conv, entry 7 of its BatchNorm, input column 7 of every
consumer, and the matching channel of every tensor it is added to). A *group* is the set of
units touching exactly the same tensors; it is what criteria score and plans prune.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from torch import nn

from prunekit._gc import with_gc_paused
from prunekit.errors import ConfigError, PrunekitError, TraceError, first_line
from prunekit.graph import norms as _norms  # noqa: F401
from prunekit.graph import ops as _ops  # noqa: F401  (registers handlers)
from prunekit.graph import shape_ops as _shape_ops  # noqa: F401
from prunekit.graph import zeros as _zeros  # noqa: F401
from prunekit.graph.labels import FROZEN
from prunekit.graph.tracer import Tracer, iter_tensors


@dataclass
class Slot:
    """Positions of one tensor dim belonging to a group.

    Attributes:
        tensor: state-dict name (``"layer1.0.conv1.weight"``).
        dim: the dim of that tensor.
        units: for each position along ``dim`` that belongs to the group, its unit index
            (0..group.size-1); ``positions`` holds those positions.
        positions: positions along ``dim``.
    """

    tensor: str
    dim: int
    positions: np.ndarray
    units: np.ndarray


@dataclass
class Group:
    """Channel units that touch the same tensors and are pruned as one layer.

    Attributes:
        id: stable name, ``"<tensor>:<dim>"`` of its anchor slot (a producing layer if any).
        size: number of units.
        slots: where each unit lives in each tensor.
    """

    id: str
    size: int
    slots: list[Slot]

    @property
    def tensors(self) -> list[str]:
        """Names of the tensors this group slices."""
        return sorted({s.tensor for s in self.slots})


@dataclass
class DependencyGraph:
    """Result of :func:`trace`: prunable groups plus what could not be pruned and why.

    Attributes:
        groups: prunable groups, in forward order of their anchor.
        frozen: tensor dims that hold channels which must stay, mapped to the reasons.
        macs_per_weight: for each conv/linear weight, the multiply-adds each of its elements
            does per forward pass — the output positions it is applied at (so MACs = sum over
            weights of numel × macs_per_weight). Not :attr:`Slot.positions` (channel indices).
        tensor_shapes: shape of every state tensor at trace time.
    """

    groups: list[Group]
    frozen: dict[str, list[str]] = field(default_factory=dict)
    macs_per_weight: dict[str, float] = field(default_factory=dict)
    tensor_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    params: set[str] = field(default_factory=set)

    def group(self, gid: str) -> Group:
        """The group called ``gid`` (error listing known ids if absent)."""
        for g in self.groups:
            if g.id == gid:
                return g
        raise ConfigError(
            f"no prunable group {gid!r}; known: {[g.id for g in self.groups][:10]}..."
        )

    def kept_reasons(self, top: int = 5) -> list[tuple[str, list[str]]]:
        """The most common reasons tensor dims were kept whole, with the dims they kept.

        Returns:
            ``(reason, ["tensor:dim", ...])`` pairs, most tensor dims first; a reason names the
            op and the module where it froze the channels.
        """
        by: dict[str, list[str]] = defaultdict(list)
        for key, reasons in self.frozen.items():
            by[reasons[0] if reasons else "coupled to a frozen channel"].append(key)
        ranked = sorted(
            by.items(), key=lambda kv: (kv[0] == "coupled to a frozen channel", -len(kv[1]))
        )
        return ranked[:top]

    def summary(self) -> str:
        """Human-readable table of groups."""
        lines = [f"{len(self.groups)} prunable groups, {sum(g.size for g in self.groups)} units"]
        for g in self.groups:
            lines.append(f"  {g.id:<48} {g.size:>6} units  {len(g.slots):>3} tensor dims")
        if self.frozen:
            lines.append(f"{len(self.frozen)} tensor dims kept whole:")
            for k, why in list(self.frozen.items())[:50]:
                lines.append(f"  {k:<48} {why[0]}")
        return "\n".join(lines)


@with_gc_paused
def trace(
    model: nn.Module,
    example_inputs: Any,
    *,
    ignored_layers: Iterable[str] = (),
    unknown_ops: str = "error",
    barrier_modules: Iterable[str] = (),
    training_pass: str = "auto",
) -> DependencyGraph:
    """Trace ``model`` on ``example_inputs`` and build its dependency graph.

    Args:
        model: any ``nn.Module``; it is run in eval mode and left unchanged.
        example_inputs: a tensor, a tuple of positional inputs, or a dict of keyword inputs
            (``model(**inputs)``, e.g. a tokenizer's output).
        ignored_layers: module paths whose output channels must not be pruned.
        unknown_ops: ``"error"`` (default) or ``"barrier"``: keep channels through ops
            prunekit has no handler for whole instead of failing.
        barrier_modules: module paths or class names treated as opaque barriers.
        training_pass: ``"auto"`` also traces in training mode when some module ran only
            there (e.g. Inception's auxiliary heads); ``"always"`` or ``"never"``.

    Returns:
        The :class:`DependencyGraph`.

    Example:
        >>> g = trace(torchvision.models.resnet18(), torch.randn(1, 3, 224, 224))
        >>> len(g.groups)
    """
    if unknown_ops not in ("error", "barrier"):
        raise ConfigError(f"unknown_ops must be 'error' or 'barrier', got {unknown_ops!r}")
    inputs = Inputs.of(example_inputs)
    tr = Tracer(model, unknown_ops=unknown_ops, barrier_modules=barrier_modules)
    saved = _snapshot(model)
    try:
        _run(tr, model, inputs, train=False)
        if training_pass == "always" or (training_pass == "auto" and _missed(tr, model)):
            _run(tr, model, inputs.map(_double), train=True)
    finally:
        _restore(saved)
    for path in ignored_layers:
        _ignore(tr, model, path)
    return _build(tr, model)


Snapshot = list[tuple[nn.Module, dict[str, Any], list[dict[str, Any]]]]
_TABLES = ("_parameters", "_buffers", "_modules", "_non_persistent_buffers_set")


def _snapshot(model: nn.Module) -> Snapshot:
    """Every module's attributes and tensor tables, shallow (tracing must leave all as is).

    Restoring it undoes whatever a forward pass did to the modules themselves: training flags
    set by the trace (each module keeps its own, e.g. a frozen BatchNorm in a training model),
    attributes a forward caches, tensors left swapped.
    """
    return [
        (m, dict(m.__dict__), [copy.copy(getattr(m, t)) for t in _TABLES]) for m in model.modules()
    ]


def _restore(saved: Snapshot) -> None:
    for m, attrs, tables in saved:
        m.__dict__.clear()
        m.__dict__.update(attrs)
        for name, table in zip(_TABLES, tables):
            live = getattr(m, name)
            live.clear()
            live.update(table)


def _double(x: Any) -> Any:
    # Training-mode BatchNorm needs more than one sample per channel.
    return torch.cat([x, x]) if isinstance(x, torch.Tensor) and x.dim() > 0 else x


def _missed(tr: Tracer, model: nn.Module) -> bool:
    leaves = [
        p
        for p, m in model.named_modules()
        if not list(m.children()) and any(True for _ in m.parameters(recurse=False))
    ]
    return any(p not in tr.called for p in leaves)


@dataclass
class Inputs:
    """Positional and keyword example inputs."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    @classmethod
    def of(cls, example: Any) -> Inputs:
        if isinstance(example, dict):
            return cls((), dict(example))
        return cls(example if isinstance(example, tuple) else (example,), {})

    def map(self, fn: Any) -> Inputs:
        return Inputs(tuple(fn(x) for x in self.args), {k: fn(v) for k, v in self.kwargs.items()})


def _run(tr: Tracer, model: nn.Module, inputs: Inputs, *, train: bool) -> None:
    """One forward pass under the tracer.

    Parameters, buffers and inputs are swapped for ``meta`` tensors (shapes only, no compute,
    no mutation of the real model); models whose forward needs real values are run as they are.
    """
    named = _state_slots(model)
    meta_of: dict[int, torch.Tensor] = {}
    state: dict[str, torch.Tensor] = {}
    for name, t in named.items():
        state[name] = meta_of.setdefault(id(t), torch.empty_like(t, device="meta"))
    real_names = tr.real_names
    tr.names = {id(state[n]): real_names[id(t)] for n, t in named.items() if id(t) in real_names}
    tr.real_of = {id(state[n]): t for n, t in named.items()}
    model.train(train)
    try:
        out = _forward(tr, model, state, inputs.map(_to_meta))
    except Exception as exc:
        if isinstance(exc, PrunekitError):
            raise
        tr.names = dict(real_names)
        tr.real_of = {}
        out = _forward_real_checked(tr, model, inputs, train)
    for t in iter_tensors(out):
        tr.freeze(tr.labels(t), "model output")


def _state_slots(model: nn.Module) -> dict[str, torch.Tensor]:
    """One name per (module, attribute) holding a parameter or buffer.

    A submodule registered under two names must be swapped once: ``functional_call`` restores
    each name in turn, and the second alias would restore the meta tensor the first one put
    there, leaving the user's model on the ``meta`` device. Tied tensors (one tensor held by
    two modules) keep both names: both attributes are swapped and restored.
    """
    seen: set[tuple[int, str]] = set()
    out: dict[str, torch.Tensor] = {}
    for path, mod in model.named_modules(remove_duplicate=False):
        for table in (mod._parameters, mod._buffers):
            for attr, t in table.items():
                if t is None or (id(mod), attr) in seen:
                    continue
                seen.add((id(mod), attr))
                out[f"{path}.{attr}" if path else attr] = t
    return out


def _to_meta(x: Any) -> Any:
    return x.to("meta") if isinstance(x, torch.Tensor) and x.is_floating_point() else x


def _forward(tr: Tracer, model: nn.Module, state: dict[str, torch.Tensor], inputs: Inputs) -> Any:
    handles = tr.hook_modules()
    try:
        with torch.no_grad(), tr:
            return torch.func.functional_call(
                model, state, inputs.args, inputs.kwargs, tie_weights=False
            )
    finally:
        for h in handles:
            h.remove()


def _forward_real_checked(tr: Tracer, model: nn.Module, inputs: Inputs, train: bool) -> Any:
    """:func:`_forward_real`; a model that cannot run on the inputs gets one clear error."""
    try:
        return _forward_real(tr, model, inputs, train)
    except PrunekitError:
        raise
    except Exception as exc:
        shapes = [tuple(t.shape) for t in iter_tensors((inputs.args, inputs.kwargs))]
        raise TraceError(
            f"{type(model).__name__} does not run on the example inputs {shapes} (failed in "
            f"module {tr.where()!r}: {type(exc).__name__}: {first_line(exc, 300)}); pass "
            "inputs the model accepts (CLI: --input-shape)"
        ) from exc


def _forward_real(tr: Tracer, model: nn.Module, inputs: Inputs, train: bool) -> Any:
    saved = {
        k: v.clone()
        for k, v in model.state_dict(keep_vars=True).items()
        if not isinstance(v, nn.Parameter)
    }
    rng = torch.get_rng_state()
    handles = tr.hook_modules()
    try:
        with torch.no_grad(), tr:
            return model(*inputs.args, **inputs.kwargs)
    finally:
        for h in handles:
            h.remove()
        torch.set_rng_state(rng)
        with torch.no_grad():  # undo BatchNorm running-stat updates
            for k, v in model.state_dict(keep_vars=True).items():
                if k in saved:
                    v.copy_(saved[k])


def _ignore(tr: Tracer, model: nn.Module, path: str) -> None:
    try:
        mod = model.get_submodule(path)
    except AttributeError:
        raise ConfigError(f"ignored layer {path!r} is not a module of the model") from None
    for name, _ in mod.named_parameters(recurse=False):
        key = (f"{path}.{name}" if path else name, 0)
        if key in tr.slots:
            tr.freeze(tr.slots[key], f"ignored layer {path!r}")


# --------------------------------------------------------------------------- resolution


def _components(tr: Tracer, extra: Sequence[np.ndarray]) -> np.ndarray:
    pairs = [p for p in list(tr.pairs) + list(extra) if p.size]
    n = tr.next_id
    if not pairs:
        return np.arange(n)
    e = np.concatenate(pairs)
    m = coo_matrix((np.ones(len(e), dtype=np.int8), (e[:, 0], e[:, 1])), shape=(n, n))
    return connected_components(m, directed=False)[1]


def _resolve(tr: Tracer) -> np.ndarray:
    """Components after applying count ties and direct-parameter consistency (fixpoint).

    Every round that finds a violation freezes at least one label not frozen before, so the
    loop ends after at most one round per label; it runs to the fixpoint (a round cap would
    return an inconsistent grouping without a word).
    """
    static = _static_pairs(tr)
    extra: list[np.ndarray] = []
    refs: list[np.ndarray] = []
    for _ in range(tr.next_id + 2):
        comp = _components(tr, static + refs + extra)
        frozen = comp[FROZEN]
        added = _tie_violations(tr, comp, frozen) + _direct_violations(tr, comp, frozen)
        new_refs = _direct_ref_pairs(tr, comp)
        if not added and _same(new_refs, refs):
            return comp
        extra.extend(added)
        refs = new_refs
    raise TraceError("the channel grouping did not reach a fixpoint; please report this model")


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def _static_pairs(tr: Tracer) -> list[np.ndarray]:
    """Shape reads tied to their slots (or frozen: a dim no op prunes is a constant), and the
    slots of tensors consumed whole."""
    out = []
    for (name, dim), ids in tr.shape_refs.items():
        slot = tr.slots.get((name, dim))
        if slot is not None and slot.size == ids.size:
            out.append(np.stack([ids, slot], axis=1))
        elif name not in tr.direct:
            out.append(_freeze_pairs(ids))
    for name, (base, shape) in tr.direct.items():
        mixed = [v for (n, _), v in tr.slots.items() if n == name]
        if mixed:  # one label per element cannot also follow a layer's per-dim slots
            arr = np.concatenate([np.arange(base, base + int(np.prod(shape))), *mixed])
            out.append(_freeze_pairs(arr))
            why = f"parameter {name!r} is used by a layer op and elementwise"
            tr.freeze_events.append((arr, why))
    for name, why in tr.whole.items():
        held = [v for (n, _), v in tr.slots.items() if n == name]
        if held:
            whole = np.concatenate(held)
            out.append(_freeze_pairs(whole))
            tr.freeze_events.append((whole, why))
    return out


def _direct_ref_pairs(tr: Tracer, comp: np.ndarray) -> list[np.ndarray]:
    """Shape reads of a directly used parameter: tied to its prunable dim, else constants."""
    out = []
    for (name, dim), ids in tr.shape_refs.items():
        if name not in tr.direct or (name, dim) in tr.slots:
            continue
        base, shape = tr.direct[name]
        c = comp[np.arange(base, base + int(np.prod(shape)))].reshape(shape)
        first = np.moveaxis(np.arange(base, base + c.size).reshape(shape), dim, 0)
        if _direct_dim(c) == dim and ids.size == shape[dim]:
            out.append(np.stack([ids, first.reshape(shape[dim], -1)[:, 0]], axis=1))
        else:
            out.append(_freeze_pairs(ids))
    return out


def _freeze_pairs(ids: np.ndarray) -> np.ndarray:
    ids = np.unique(ids[ids > 0])
    return np.stack([ids, np.zeros_like(ids)], axis=1)


def _tie_violations(tr: Tracer, comp: np.ndarray, frozen: int) -> list[np.ndarray]:
    out = []
    for prov, target in tr.ties:
        src = np.unique(comp[np.concatenate(prov)[np.concatenate(prov) >= 0]])
        dst = np.unique(comp[target[target >= 0]])
        if set(src.tolist()) != set(dst.tolist()) and not (
            {frozen} >= set(src.tolist()) | set(dst.tolist())
        ):
            both = np.concatenate([np.concatenate(prov), target])
            pairs = _freeze_pairs(both)
            if pairs.size and not np.all(comp[pairs[:, 0]] == frozen):
                out.append(pairs)
                tr.freeze_events.append((pairs[:, 0], "shape computed from another channel count"))
    return out


def _direct_dim(c: np.ndarray) -> int | None:
    """The one dim along which a direct parameter's units vary, if any."""
    dims = [d for d in range(c.ndim) if c.shape[d] > 1]
    for d in dims:
        m = np.moveaxis(c, d, 0).reshape(c.shape[d], -1)
        if np.all(m == m[:, :1]):
            return d
    return None


def _direct_violations(tr: Tracer, comp: np.ndarray, frozen: int) -> list[np.ndarray]:
    out = []
    for name, (base, shape) in tr.direct.items():
        ids = np.arange(base, base + int(np.prod(shape)), dtype=np.int64)
        c = comp[ids].reshape(shape)
        if np.all(c == frozen) or c.size <= 1:
            continue
        # one unit over several positions of its dim (every dim pinned by literal indexing):
        # removing it would empty the parameter, so it is kept whole
        single = bool(np.all(c == c.flat[0])) and max(shape) > 1
        if single or _direct_dim(c) is None:
            out.append(_freeze_pairs(ids))
            tr.freeze_events.append((ids, f"parameter {name!r} mixes channels across dims"))
    return out


def _all_slots(tr: Tracer, comp: np.ndarray) -> dict[tuple[str, int], np.ndarray]:
    slots = {k: comp[v] for k, v in tr.slots.items()}
    for name, (base, shape) in tr.direct.items():
        c = comp[np.arange(base, base + int(np.prod(shape)))].reshape(shape)
        d = _direct_dim(c) if c.size > 1 else None
        if d is not None and (name, d) not in slots:
            slots[(name, d)] = np.moveaxis(c, d, 0).reshape(c.shape[d], -1)[:, 0]
    return slots


def _build(tr: Tracer, model: nn.Module) -> DependencyGraph:
    comp = _resolve(tr)
    frozen = comp[FROZEN]
    slots = _all_slots(tr, comp)
    by_sig = _units_by_signature(slots, frozen)
    order = {k: i for i, k in enumerate(tr.slots)}
    # unit -> index of its signature; read by _make_group instead of per-group set lookups
    sig_of = np.full(int(comp.max()) + 1, -1, dtype=np.int64)
    for i, units in enumerate(by_sig.values()):
        sig_of[units] = i
    rank = np.zeros_like(sig_of)
    groups = [_make_group(keys, i, slots, order, sig_of, rank) for i, keys in enumerate(by_sig)]
    groups.sort(key=lambda g: order.get(_key(g.id), len(order)))
    shapes = _tensor_shapes(model)
    return DependencyGraph(
        groups=[g for g in groups if g.size > 0],
        frozen=_frozen_reasons(tr, slots, frozen),
        macs_per_weight=dict(tr.macs_per_weight),
        tensor_shapes=shapes,
        params={n for n, _ in model.named_parameters()},
    )


def _tensor_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Shape of every parameter and buffer, non-persistent buffers included (they are sliced
    like the others; ``state_dict()`` leaves them out)."""
    named = list(model.named_parameters()) + list(model.named_buffers())
    return {k: tuple(v.shape) for k, v in named}


def _units_by_signature(
    slots: dict[tuple[str, int], np.ndarray], frozen: int
) -> dict[frozenset[tuple[str, int]], np.ndarray]:
    """Group units by the set of tensor dims they touch (vectorised: ~10^5 slot positions).

    Returns:
        signature (the tensor dims) -> sorted unit ids, in order of each signature's first unit.
    """
    keys = list(slots)
    comps, kidx = [], []
    for i, key in enumerate(keys):
        u = np.unique(slots[key])
        u = u[u != frozen]
        comps.append(u)
        kidx.append(np.full(len(u), i))
    c, k = np.concatenate(comps), np.concatenate(kidx)
    if not len(c):
        return {}
    order = np.lexsort((k, c))
    c, k = c[order], k[order]
    # one segment of k (its sorted key indices) per unit
    starts = np.r_[0, np.flatnonzero(np.diff(c)) + 1]
    lens = np.diff(np.r_[starts, len(c)])
    sig, first = _segment_classes(k, starts, lens, len(keys))
    units = c[starts]
    by = np.argsort(sig, kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(sig))]
    out: dict[frozenset[tuple[str, int]], np.ndarray] = {}
    for g, f in enumerate(first.tolist()):
        ks = frozenset(keys[j] for j in k[starts[f] : starts[f] + lens[f]].tolist())
        out[ks] = units[by[bounds[g] : bounds[g + 1]]]
    return out


def _segment_classes(
    k: np.ndarray, starts: np.ndarray, lens: np.ndarray, nkeys: int
) -> tuple[np.ndarray, np.ndarray]:
    """Class id per segment (equal iff equal contents) and the first segment of each class.

    Segments are hashed with two random 64-bit weights per key, then every segment is compared
    element by element with its class representative, so a hash collision can never merge two
    different signatures (it falls back to exact grouping by bytes instead).
    """
    w = np.random.default_rng(0).integers(0, 2**63, size=(2, nkeys), dtype=np.uint64)
    h = np.stack(
        [
            np.add.reduceat(w[0][k], starts),
            np.add.reduceat(w[1][k], starts),
            lens.astype(np.uint64),
        ],
        axis=1,
    )
    _, first, inv = np.unique(h, axis=0, return_index=True, return_inverse=True)
    inv = inv.reshape(-1)
    seg = np.repeat(np.arange(len(starts)), lens)  # segment of each element
    rep = starts[first[inv]][seg] + (np.arange(len(k)) - starts[seg])
    if np.array_equal(k, k[rep]):
        # renumber classes by first appearance, so dict order follows unit order
        order = np.argsort(first, kind="stable")
        relabel = np.empty_like(order)
        relabel[order] = np.arange(len(order))
        return relabel[inv], first[order]
    classes: dict[bytes, int] = {}
    ids = np.array(
        [classes.setdefault(k[s : s + n].tobytes(), len(classes)) for s, n in zip(starts, lens)]
    )
    return ids, np.unique(ids, return_index=True)[1]


def _key(gid: str) -> tuple[str, int]:
    name, dim = gid.rsplit(":", 1)
    return name, int(dim)


def _make_group(
    keys: frozenset[tuple[str, int]],
    sig: int,
    slots: dict[tuple[str, int], np.ndarray],
    order: dict[Any, int],
    sig_of: np.ndarray,
    rank: np.ndarray,
) -> Group:
    producers = [k for k in keys if k[1] == 0 and k in order]
    anchor = min(producers or keys, key=lambda k: (order.get(k, 1 << 30), k))
    # Units are numbered by first position in the anchor, so ids are stable across traces.
    uniq, first = np.unique(slots[anchor], return_index=True)
    inside = sig_of[uniq] == sig
    ordered = uniq[inside][np.argsort(first[inside], kind="stable")]
    rank[ordered] = np.arange(len(ordered))
    out = []
    for key in sorted(keys, key=lambda k: (order.get(k, 1 << 30), k)):
        arr = slots[key]
        mask = sig_of[arr] == sig
        out.append(Slot(key[0], key[1], np.nonzero(mask)[0], rank[arr[mask]]))
    return Group(id=f"{anchor[0]}:{anchor[1]}", size=len(ordered), slots=out)


def _frozen_reasons(
    tr: Tracer, slots: dict[tuple[str, int], np.ndarray], frozen: int
) -> dict[str, list[str]]:
    # Components without the FROZEN merges tell which frozen slot each freeze event hit.
    loose = _components_without_frozen(tr)
    hit = {
        k: np.unique(loose[tr.slots[k]])
        for k, units in slots.items()
        if k in tr.slots and np.any(units == frozen)
    }
    wanted = np.zeros(int(loose.max()) + 1 if loose.size else 1, dtype=bool)
    for v in hit.values():
        wanted[v] = True
    event_comps: dict[int, list[str]] = defaultdict(list)
    for ids, why in tr.freeze_events:
        comps = np.unique(loose[ids])
        for c in comps[wanted[comps]].tolist():
            if len(event_comps[c]) < 3 and why not in event_comps[c]:
                event_comps[c].append(why)
    out: dict[str, list[str]] = {}
    for (name, dim), units in slots.items():
        if not np.any(units == frozen):
            continue
        reasons: list[str] = []
        for c in hit.get((name, dim), np.zeros(0, np.int64)).tolist():
            reasons.extend(r for r in event_comps.get(c, []) if r not in reasons)
            if len(reasons) >= 3:
                break
        out[f"{name}:{dim}"] = reasons[:3] or ["coupled to a frozen channel"]
    return out


def _components_without_frozen(tr: Tracer) -> np.ndarray:
    sub = copy.copy(tr)
    sub.pairs = [p[(p[:, 0] != FROZEN) & (p[:, 1] != FROZEN)] for p in tr.pairs]
    return _components(sub, [])
