"""Importance criteria: score every unit of every group.

Two explicit steps:

1. *Tensor scoring*: a criterion turns each slot (one dim of one tensor) into a score per
   position — e.g. the L2 norm of each filter, or |γ| of a BatchNorm.
2. *Group aggregation*: positions are summed into their unit, and the per-slot unit scores are
   reduced over the group's slots (``mean`` by default, as Torch-Pruning's group importance).

A new criterion is one short function registered with :func:`register_criterion` in
:data:`CRITERIA` — per slot (reduced over the group by a :data:`REDUCTIONS` entry), or per
group when it must see every slot at once (per-head, cross-layer scores).

Example:
    >>> scores = score(model, graph, "l2")
    >>> scores = score(model, graph, "taylor", batches=loader, loss_fn=F.cross_entropy)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.device import threads_set
from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph, Group, Slot
from prunekit.registry import Registry


@dataclass
class Context:
    """What a criterion may look at besides the weights."""

    model: nn.Module
    tensors: dict[str, torch.Tensor]
    grads: dict[str, torch.Tensor]
    activations: dict[str, torch.Tensor]
    generator: torch.Generator
    params: frozenset[str] = frozenset()
    """Names of the model's parameters (``tensors`` also holds buffers and overrides)."""
    norm_cache: dict[tuple[int, float], tuple[torch.Tensor, list[torch.Tensor]]] = field(
        default_factory=dict
    )
    """Per-dim Σ|t|^p of tensors already reduced in this :func:`score` call."""


SlotScore = Callable[[Slot, torch.Tensor, Context], "torch.Tensor | None"]
"""``fn(slot, tensor, context) -> per-position score`` (or ``None``: this slot does not vote)."""
GroupScore = Callable[[Group, Context], "torch.Tensor | None"]
"""``fn(group, context) -> per-unit score`` (or ``None``: the group is not scored)."""
Reduction = Callable[[torch.Tensor], torch.Tensor]
"""``fn(stacked) -> per-unit score``: combines the (slots × units) scores of one group."""


@dataclass(frozen=True)
class ImportanceCriterion:
    """A registered criterion: per-slot scores reduced over the group, or a whole-group score.

    Attributes:
        slot: scores one slot (one dim of one tensor); :func:`score` sums positions into
            units and combines the group's slots with the ``reduce`` entry of
            :data:`REDUCTIONS`.
        group: scores a whole group at once (it sees every slot and tensor: per-head or
            cross-layer criteria); ``reduce`` does not apply.
        needs: calibration data :func:`score` collects first: ``"grads"`` (Σ|w·∂L/∂w|),
            ``"activations"`` (mean |output|) or ``"apoz"`` (share of positive outputs).
    """

    slot: SlotScore | None = None
    group: GroupScore | None = None
    needs: str | None = None

    def __post_init__(self) -> None:
        if (self.slot is None) == (self.group is None):
            raise ConfigError("a criterion scores either slots (slot=) or groups (group=)")
        if self.needs not in (None, "grads", "activations", "apoz"):
            raise ConfigError(
                f"needs must be None, 'grads', 'activations' or 'apoz', got {self.needs!r}"
            )


#: criterion name -> :class:`ImportanceCriterion`; add entries with :func:`register_criterion`.
CRITERIA: Registry[ImportanceCriterion] = Registry("criterion")
#: how a slot criterion's per-slot unit scores combine into one score per unit.
REDUCTIONS: Registry[Reduction] = Registry("reduction")
REDUCTIONS.add("mean", lambda s: s.mean(0))
REDUCTIONS.add("sum", lambda s: s.sum(0))
REDUCTIONS.add("max", lambda s: s.max(0).values)
REDUCTIONS.add("first", lambda s: s[0])


def register_criterion(
    name: str, *, level: str = "slot", needs: str | None = None, overwrite: bool = False
) -> Callable[[Any], Any]:
    """Decorator registering a criterion function under ``name``.

    Args:
        name: the name the API, recipes and the CLI use.
        level: ``"slot"`` (``fn(slot, tensor, ctx)``) or ``"group"`` (``fn(group, ctx)``).
        needs: calibration data to collect first (see :class:`ImportanceCriterion`).
        overwrite: replace an existing entry (otherwise a duplicate name is an error).

    Returns:
        The decorator (it returns the function unchanged).

    Example:
        >>> @register_criterion("first_slot_l1", level="group")
        ... def first_slot_l1(group, ctx):
        ...     s = group.slots[0]
        ...     return ctx.tensors[s.tensor].abs().flatten(1).sum(1)[s.positions]
    """
    if level not in ("slot", "group"):
        raise ConfigError(f"level must be 'slot' or 'group', got {level!r}")

    def deco(fn: Any) -> Any:
        entry = (
            ImportanceCriterion(slot=fn, needs=needs)
            if level == "slot"
            else ImportanceCriterion(group=fn, needs=needs)
        )
        CRITERIA.add(name, entry, overwrite=overwrite)
        return fn

    return deco


def needs_data(criterion: str) -> str | None:
    """What calibration data ``criterion`` needs (``None``: none — it reads the weights)."""
    return CRITERIA.get(criterion).needs


def _dim_norms(t: torch.Tensor, p: float, ctx: Context) -> list[torch.Tensor]:
    """Σ|t|**p along every dim (one vector per dim), from a single pass over ``t``.

    Most weights have two slots (their output and input dim); computing |t|**p once and
    reducing it per dim halves the cost of magnitude scoring. Cached in the context, so for one :func:`score` call.
    """
    key = (id(t), p)
    hit = ctx.norm_cache.get(key)
    if hit is not None and hit[0] is t:
        return hit[1]
    v = t.detach().float()
    v = v.abs() if p == 1 else v.square()
    out = []
    for d in range(v.dim()):
        # leading dims first, then trailing: both contiguous reductions (fast on CPU)
        before = math.prod(v.shape[:d])
        r = v.reshape(before, -1).sum(0) if before > 1 else v
        out.append(r.reshape(v.shape[d], -1).sum(1))
    ctx.norm_cache[key] = (t, out)
    return out


def _per_position(slot: Slot, t: torch.Tensor, p: float, ctx: Context) -> torch.Tensor:
    """L_p norm of each slice along ``slot.dim`` at the slot's positions."""
    v = _dim_norms(t, p, ctx)[slot.dim] if t.dim() else t.detach().float().abs().reshape(1)
    if p != 1:
        v = v.sqrt()
    return v[torch.as_tensor(slot.positions, dtype=torch.long, device=t.device)]


def _is_weight(name: str, ctx: Context) -> bool:
    """Magnitude criteria look at parameters, not biases or running statistics."""
    return not name.endswith("bias") and name in ctx.params


@register_criterion("l1")
def l1(slot: Slot, t: torch.Tensor, ctx: Context) -> torch.Tensor | None:
    """Sum of absolute weights per position (Li et al., 2017, "Pruning Filters")."""
    return _per_position(slot, t, 1, ctx) if _is_weight(slot.tensor, ctx) else None


@register_criterion("l2")
def l2(slot: Slot, t: torch.Tensor, ctx: Context) -> torch.Tensor | None:
    """L2 norm of the weights per position."""
    return _per_position(slot, t, 2, ctx) if _is_weight(slot.tensor, ctx) else None


def _norm_layer(ctx: Context, name: str) -> bool:
    path = name.rpartition(".")[0]
    try:
        mod = ctx.model.get_submodule(path) if path else ctx.model
    except AttributeError:
        return False
    norms = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    return isinstance(mod, norms) and name.endswith("weight")


@register_criterion("bn_scale")
def bn_scale(slot: Slot, t: torch.Tensor, ctx: Context) -> torch.Tensor | None:
    """|γ| of normalisation layers (Network Slimming, Liu et al., ICCV 2017)."""
    return _per_position(slot, t, 1, ctx) if _norm_layer(ctx, slot.tensor) else None


@register_criterion("taylor", needs="grads")
def taylor(slot: Slot, t: torch.Tensor, ctx: Context) -> torch.Tensor | None:
    """First-order Taylor expansion of the loss change, Σ |w·∂L/∂w| per position.

    Molchanov et al., "Pruning Convolutional Neural Networks for Resource Efficient
    Inference", ICLR 2017 (and CVPR 2019); ``ctx.grads`` holds the per-element |w·g| summed
    over calibration batches by :func:`score`.
    """
    wg = ctx.grads.get(slot.tensor)
    return None if wg is None else _per_position(slot, wg, 1, ctx)


@register_criterion("activation", needs="activations")
def activation(slot: Slot, t: torch.Tensor, ctx: Context) -> torch.Tensor | None:
    """Mean |activation| of the layer output a producer slot feeds (Hu et al. 2016, APoZ family)."""
    act = ctx.activations.get(slot.tensor) if slot.dim == 0 else None
    if act is None:
        return None
    return act[torch.as_tensor(slot.positions, dtype=torch.long)]


@register_criterion("apoz", needs="apoz")
def apoz(slot: Slot, t: torch.Tensor, ctx: Context) -> torch.Tensor | None:
    """1 − APoZ, the share of positive activations of each output channel (Hu et al. 2016,
    "Network Trimming", arXiv:1607.03250: channels whose ReLU output is mostly zero matter least).

    Measured on the layer's output as a following ReLU sees it: after the BatchNorm that directly
    consumes the layer's output when there is one (conv → BN → ReLU), else on the output itself.
    """
    act = ctx.activations.get(slot.tensor) if slot.dim == 0 else None
    if act is None:
        return None
    return act[torch.as_tensor(slot.positions, dtype=torch.long)]


@register_criterion("random")
def random(slot: Slot, t: torch.Tensor, ctx: Context) -> torch.Tensor | None:
    """Uniform random scores (a baseline)."""
    return torch.rand(len(slot.positions), generator=ctx.generator)


def _group_score(
    g: Group, crit: ImportanceCriterion, ctx: Context, reduce: Reduction
) -> torch.Tensor | None:
    if crit.group is not None:
        v = crit.group(g, ctx)
        return None if v is None else v.double().cpu().reshape(g.size)
    assert crit.slot is not None
    per_slot = []
    for s in g.slots:
        t = ctx.tensors.get(s.tensor)
        if t is None:
            continue
        v = crit.slot(s, t, ctx)
        if v is None:
            continue
        unit = torch.zeros(g.size, dtype=torch.float64)
        unit.index_add_(0, torch.as_tensor(s.units, dtype=torch.long), v.double().cpu())
        per_slot.append(unit)
    if not per_slot:
        return None
    return reduce(torch.stack(per_slot))


def score(
    model: nn.Module,
    graph: DependencyGraph,
    criterion: str = "l2",
    *,
    reduce: str = "mean",
    batches: Iterable[Any] | None = None,
    loss_fn: Callable[..., torch.Tensor] | None = None,
    max_batches: int = 8,
    seed: int = 0,
    slots: Mapping[str, tuple[str, int]] | None = None,
    tensors: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Importance of every unit of every group.

    Args:
        model: the model the graph was traced from.
        graph: its dependency graph.
        criterion: a name in :data:`CRITERIA` (``l1 l2 bn_scale taylor activation apoz random``).
        reduce: how slot scores combine into a unit score: a :data:`REDUCTIONS` name
            (``mean``, ``sum``, ``max``, ``first``); whole-group criteria ignore it.
        batches: calibration batches ``(inputs, targets)`` for ``taylor``/``activation``.
        loss_fn: loss for ``taylor`` (default cross-entropy).
        max_batches: how many batches to use.
        seed: seed of the ``random`` criterion.
        slots: group id → the one ``(tensor, dim)`` slot that scores that group, instead of
            all its slots (e.g. rank a layer's units by its own filters alone, as Distiller's
            ranked pruners do); other groups are scored from every slot.
        tensors: name → values to score in place of the model's (e.g. BN-folded weights).

    Returns:
        group id -> float64 tensor of unit scores; groups the criterion cannot score (e.g. no
        BatchNorm for ``bn_scale``) are absent and so stay unpruned.
    """
    crit = CRITERIA.get(criterion)
    reduction = REDUCTIONS.get(reduce)
    values: dict[str, torch.Tensor] = dict(model.named_parameters())
    params = frozenset(values)
    values.update(model.named_buffers())
    values.update(tensors or {})
    ctx = Context(model, values, {}, {}, torch.Generator().manual_seed(seed), params)
    _collect(ctx, crit.needs, criterion, batches, loss_fn, max_batches)
    out = {}
    # Many small reductions: OpenMP threads cost more than they give (and spin on a busy
    # machine), so score on one thread.
    with threads_set(1):
        for g in graph.groups:
            only = (slots or {}).get(g.id)
            voters = g if only is None else _only_slot(g, only)
            s = _group_score(voters, crit, ctx, reduction)
            if s is not None:
                out[g.id] = s
    return out


def _collect(
    ctx: Context,
    need: str | None,
    criterion: str,
    batches: Iterable[Any] | None,
    loss_fn: Callable[..., torch.Tensor] | None,
    max_batches: int,
) -> None:
    """Fill ``ctx`` with what a data criterion needs from the calibration batches."""
    if need is None:
        return
    if batches is None:
        raise ConfigError(f"criterion {criterion!r} needs calibration batches (batches=...)")
    if need == "grads":
        ctx.grads = _taylor_terms(ctx.model, batches, loss_fn or F.cross_entropy, max_batches)
    elif need == "apoz":
        ctx.activations = _positive_fractions(ctx.model, batches, max_batches)
    else:
        ctx.activations = _mean_activations(ctx.model, batches, max_batches)


def _only_slot(g: Group, slot: tuple[str, int]) -> Group:
    """``g`` with only the slot ``(tensor, dim)`` left to score it."""
    kept = [s for s in g.slots if (s.tensor, s.dim) == tuple(slot)]
    if not kept:
        raise ConfigError(f"group {g.id!r} has no slot {slot[0]}:{slot[1]} to score it")
    return Group(g.id, g.size, kept)


def _split(batch: Any) -> tuple[Any, Any]:
    if isinstance(batch, (list, tuple)) and len(batch) == 2:
        return batch[0], batch[1]
    return batch, None


def _taylor_terms(
    model: nn.Module, batches: Iterable[Any], loss_fn: Callable[..., torch.Tensor], max_batches: int
) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    acc = {n: torch.zeros_like(p) for n, p in params.items()}
    was = model.training
    model.eval()
    for i, batch in enumerate(batches):
        if i >= max_batches:
            break
        x, y = _split(batch)
        model.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        with torch.no_grad():
            for n, p in params.items():
                if p.grad is not None:
                    acc[n] += (p * p.grad).abs()
    model.zero_grad(set_to_none=True)
    model.train(was)
    return acc


def _mean_activations(
    model: nn.Module, batches: Iterable[Any], max_batches: int
) -> dict[str, torch.Tensor]:
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    hooks = []
    for path, mod in model.named_modules():
        if isinstance(mod, (nn.modules.conv._ConvNd, nn.Linear)) and not getattr(
            mod, "transposed", False
        ):
            name = f"{path}.weight" if path else "weight"

            def hook(m: nn.Module, i: Any, o: torch.Tensor, name: str = name) -> None:
                ch = 1 if isinstance(m, nn.modules.conv._ConvNd) else o.dim() - 1
                v = o.detach().abs().float().movedim(ch, 0).reshape(o.shape[ch], -1).mean(1)
                sums[name] = sums.get(name, 0) + v.cpu()
                counts[name] = counts.get(name, 0) + 1

            hooks.append(mod.register_forward_hook(hook))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i, batch in enumerate(batches):
                if i >= max_batches:
                    break
                model(_split(batch)[0])
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return {k: v / counts[k] for k, v in sums.items()}


def _channel_positive(o: torch.Tensor, conv: bool) -> torch.Tensor:
    """Per output channel, the share of entries > 0 (what a ReLU keeps)."""
    ch = 1 if conv else o.dim() - 1
    return (o.detach() > 0).float().movedim(ch, 0).reshape(o.shape[ch], -1).mean(1).cpu()


def _layers(model: nn.Module) -> dict[str, nn.Module]:
    """Weight name → conv/linear module (transposed convs left out)."""
    return {
        (f"{path}.weight" if path else "weight"): mod
        for path, mod in model.named_modules()
        if isinstance(mod, (nn.modules.conv._ConvNd, nn.Linear))
        and not getattr(mod, "transposed", False)
    }


def following_norms(model: nn.Module, example: Any) -> dict[str, str]:
    """Which BatchNorm consumes each conv/linear layer's output directly.

    Found by data flow on one forward pass of ``example`` (the BN's input is the layer's output
    tensor itself), so it holds for any module structure (conv → BN → ReLU blocks, residual
    blocks, sequential stacks).

    Returns:
        conv/linear weight name → BN module name, for the layers that have one.
    """
    layers = _layers(model)
    produced: dict[int, tuple[str, torch.Tensor]] = {}
    found: dict[str, str] = {}
    hooks = []
    for name, mod in layers.items():

        def keep(m: nn.Module, i: Any, o: torch.Tensor, name: str = name) -> None:
            produced[id(o)] = (name, o)  # holding ``o`` keeps its id unique for this pass

        hooks.append(mod.register_forward_hook(keep))
    for path, mod in model.named_modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):

            def match(m: nn.Module, i: Any, path: str = path) -> None:
                hit = produced.get(id(i[0])) if i else None
                if hit is not None:
                    found.setdefault(hit[0], path)

            hooks.append(mod.register_forward_pre_hook(match))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(_split(example)[0] if isinstance(example, (list, tuple)) else example)
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
        produced.clear()
    return found


def fold_bn(
    model: nn.Module, names: Iterable[str], norms: Mapping[str, str]
) -> dict[str, torch.Tensor]:
    """Weights with their following BatchNorm folded in, ``w·γ/sqrt(var + eps)`` per output
    channel (Jacob et al. 2018, arXiv:1712.05877, eq. 20-21 — what Distiller's
    ``fold_batchnorm`` ranks); weights without a BN in ``norms`` come back unchanged."""
    params = dict(model.named_parameters())
    out = {}
    for name in names:
        w = params[name].detach()
        bn_path = norms.get(name)
        if bn_path is None:
            out[name] = w
            continue
        bn = model.get_submodule(bn_path)
        assert isinstance(bn, nn.modules.batchnorm._BatchNorm)
        var = bn.running_var if bn.running_var is not None else torch.ones_like(w[:, 0].flatten())
        scale = 1.0 / torch.sqrt(var + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight.detach()
        out[name] = w * scale.view(-1, *([1] * (w.dim() - 1)))
    return out


def _positive_fractions(
    model: nn.Module, batches: Iterable[Any], max_batches: int
) -> dict[str, torch.Tensor]:
    """Per conv/linear weight, the mean share of positive activations per output channel, after
    the BatchNorm that consumes the layer's output (:func:`following_norms`), else on the layer
    output itself."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    hooks = []

    def record(name: str, o: torch.Tensor, conv: bool) -> None:
        sums[name] = sums.get(name, 0) + _channel_positive(o, conv)
        counts[name] = counts.get(name, 0) + 1

    norms: dict[str, str] | None = None
    was = model.training
    try:
        for k, batch in enumerate(batches):
            if k >= max_batches:
                break
            x = _split(batch)[0]
            if norms is None:
                norms = following_norms(model, x)
                for name, mod in _layers(model).items():
                    where = model.get_submodule(norms[name]) if name in norms else mod
                    conv = isinstance(mod, nn.modules.conv._ConvNd)
                    hooks.append(
                        where.register_forward_hook(
                            lambda m, i, o, name=name, conv=conv: record(name, o, conv)
                        )
                    )
                model.eval()
            with torch.no_grad():
                model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return {k: v / counts[k] for k, v in sums.items()}


def scores_to_json(scores: Mapping[str, torch.Tensor]) -> dict[str, list[float]]:
    """Scores as plain lists (for reports)."""
    return {k: v.tolist() for k, v in scores.items()}
