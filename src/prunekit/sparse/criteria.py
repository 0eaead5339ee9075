"""Unstructured pruning criteria (``magnitude``, ``random``, ``std_threshold``, ``threshold``) and
entry points.

Every criterion turns the current (masked) weights into new keep-masks. Criteria live in
:data:`CRITERIA`, so recipes and the CLI can name them; a criterion declares whether its
``amount`` is a *sparsity* (fraction of entries to prune, hit exactly up to rounding), a
*multiplier* (``std_threshold``: the threshold is ``amount · std(w)``) or a *threshold*
(``threshold``: ``|w| <= amount`` is pruned). :func:`masks_for` applies a criterion to plain
tensors (what the recipe executor uses); :func:`compute_masks` and :func:`prune` to a model.

Already pruned entries rank below every live one, so raising the sparsity never revives a
pruned weight (masks only shrink; what gradual schedules such as AGP assume).

Example:
    >>> prune_magnitude(model, 0.9, scope="global")      # 90% of all Conv/Linear weights
    >>> prune_threshold_std(model, {"fc1.weight": 2.0, "fc3.weight": 1.0})
    >>> prune_to_sparsity(model, {"conv1.weight": 0.3, "fc*.weight": 0.9})
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from prunekit.errors import ConfigError
from prunekit.registry import Registry
from prunekit.sparse.masks import apply_masks, get_masks, parameter_names, select_params

Scope = Literal["layer", "global"]
Amount = float | Mapping[str, float]
#: how a sparsity becomes a count of pruned entries: ``round(s·n)`` or ``floor(s·n)`` (Distiller's
#: ``int(s·n)``, so a Distiller schedule keeps exactly the non-zeros its published tables show)
Rounding = Literal["round", "floor"]


@dataclass(frozen=True)
class PruneRequest:
    """What a criterion gets: current weights and masks plus the amount per parameter."""

    weights: dict[str, Tensor]
    """Current effective (masked) weights, detached."""
    current: dict[str, Tensor]
    """Current keep-masks (all True for unmasked parameters)."""
    amounts: dict[str, float]
    """Sparsity (or std multiplier) per parameter."""
    scope: Scope
    generator: torch.Generator | None
    rounding: Rounding = "round"
    """How a sparsity becomes a count (``round`` or ``floor``)."""


def pruned_count(sparsity: float, n: int, rounding: Rounding = "round") -> int:
    """Entries to prune for ``sparsity`` of ``n``: ``round(s·n)``, or with ``rounding="floor"``
    exactly Distiller's ``int(s·n)`` (float product truncated, so its published non-zero counts
    are reproduced to the entry)."""
    if rounding == "floor":
        return min(n, math.floor(sparsity * n))
    return round(sparsity * n)


def std_of(t: Tensor) -> float:
    """Standard deviation of every entry of ``t`` (zeros included; population form), the
    ``std(W)`` of Han et al. 2015's threshold ``s·std(W)``."""
    return float(t.float().std(unbiased=False)) if t.numel() > 1 else 0.0


@dataclass(frozen=True)
class Criterion:
    """A registered criterion.

    Args:
        fn: ``fn(request) -> {name: keep-mask}``.
        amount: ``"sparsity"`` (amount in [0, 1]), ``"multiplier"`` or ``"threshold"``
            (amount >= 0).
        scopes: the scopes it supports.
    """

    fn: Callable[[PruneRequest], dict[str, Tensor]]
    amount: Literal["sparsity", "multiplier", "threshold"] = "sparsity"
    scopes: tuple[str, ...] = ("layer", "global")


CRITERIA: Registry[Criterion] = Registry("sparse criterion")


def _prune_lowest(scores: Tensor, k: int) -> Tensor:
    """Keep-mask (flat) that drops exactly the ``k`` lowest scores; ties broken by position.

    Selection instead of a full sort: the k-th smallest value ``v`` (``kthvalue``, linear time)
    splits the entries into ``< v`` (all pruned) and ``== v`` (the first ones by position until
    ``k`` are pruned) — the same set a stable sort gives, several times faster on large tensors.
    """
    flat = scores.flatten()
    keep = torch.ones(flat.numel(), dtype=torch.bool, device=flat.device)
    if k <= 0:
        return keep
    if k >= flat.numel():
        return ~keep
    v = torch.kthvalue(flat, k)[0]
    below = flat < v
    keep &= ~below
    ties = torch.nonzero(flat == v).flatten()
    keep[ties[: k - int(below.sum())]] = False
    return keep


def _rank_masks(req: PruneRequest, scores: dict[str, Tensor]) -> dict[str, Tensor]:
    """Masks pruning the lowest-scoring ``round(sparsity · numel)`` entries (``floor`` with
    ``req.rounding``), per layer or global."""
    # Pruned entries sink to the bottom so that masks only shrink as the sparsity grows.
    ranked = {n: s.float().masked_fill(~req.current[n], -float("inf")) for n, s in scores.items()}
    if req.scope == "layer":
        return {
            n: _prune_lowest(s, pruned_count(req.amounts[n], s.numel(), req.rounding)).view_as(s)
            for n, s in ranked.items()
        }
    levels = set(req.amounts.values())
    if len(levels) != 1:
        raise ConfigError("scope='global' needs one sparsity for all parameters, not a mapping")
    names = list(ranked)
    flat = torch.cat([ranked[n].flatten().cpu() for n in names])
    keep = _prune_lowest(flat, pruned_count(levels.pop(), flat.numel(), req.rounding))
    out, start = {}, 0
    for n in names:
        size = ranked[n].numel()
        out[n] = keep[start : start + size].view_as(ranked[n]).to(ranked[n].device)
        start += size
    return out


def _magnitude(req: PruneRequest) -> dict[str, Tensor]:
    # Han et al. 2015, "Learning both Weights and Connections": small |w| matters least.
    return _rank_masks(req, {n: w.abs() for n, w in req.weights.items()})


def _random(req: PruneRequest) -> dict[str, Tensor]:
    scores = {
        n: torch.rand(w.shape, generator=req.generator).to(w.device) for n, w in req.weights.items()
    }
    return _rank_masks(req, scores)


def _std_threshold(req: PruneRequest) -> dict[str, Tensor]:
    # Han et al. 2015 (and Distiller's SensitivityPruner): per layer, drop |w| <= s · std(w),
    # std taken over the whole current tensor, zeros included.
    return {
        n: (w.abs() > req.amounts[n] * std_of(w)) & req.current[n] for n, w in req.weights.items()
    }


def _threshold(req: PruneRequest) -> dict[str, Tensor]:
    # A fixed magnitude cut per tensor (Distiller's MagnitudeParameterPruner).
    return {n: (w.abs() > req.amounts[n]) & req.current[n] for n, w in req.weights.items()}


CRITERIA.add("magnitude", Criterion(_magnitude))
CRITERIA.add("random", Criterion(_random))
CRITERIA.add("std_threshold", Criterion(_std_threshold, amount="multiplier", scopes=("layer",)))
CRITERIA.add("threshold", Criterion(_threshold, amount="threshold", scopes=("layer",)))


def resolve_amounts(
    model: nn.Module, amount: Amount, params: list[str] | tuple[str, ...] | None = None
) -> dict[str, float]:
    """Expand an amount into ``{parameter name: amount}``.

    Args:
        model: the model.
        amount: one number for every selected parameter, or a mapping from names / glob patterns
            to numbers (later entries override earlier ones, so put general patterns first).
        params: names/patterns selecting parameters for a single number (default: Conv/Linear
            weights); must be None when ``amount`` is a mapping.

    Returns:
        Amount per logical parameter name, in model order.
    """
    if not isinstance(amount, Mapping):
        return dict.fromkeys(select_params(model, params), float(amount))
    if params is not None:
        raise ConfigError("give either a per-parameter mapping or `params`, not both")
    out: dict[str, float] = {}
    for pattern, value in amount.items():
        for name in select_params(model, [pattern]):
            out[name] = float(value)
    order = parameter_names(model)
    return {n: out[n] for n in order if n in out}


def _validate(name: str, crit: Criterion, amounts: dict[str, float], scope: str) -> None:
    if scope not in crit.scopes:
        raise ConfigError(f"criterion {name!r} supports scope {crit.scopes}, not {scope!r}")
    for pname, a in amounts.items():
        bad = not 0.0 <= a <= 1.0 if crit.amount == "sparsity" else a < 0.0
        if bad or a != a:
            want = "a sparsity in [0, 1]" if crit.amount == "sparsity" else f"a {crit.amount} >= 0"
            raise ConfigError(f"{name} amount for {pname!r} is {a}; expected {want}")


def masks_for(
    weights: Mapping[str, Tensor],
    amounts: Mapping[str, float],
    *,
    criterion: str = "magnitude",
    scope: Scope = "layer",
    current: Mapping[str, Tensor] | None = None,
    seed: int | None = None,
    rounding: Rounding = "round",
) -> dict[str, Tensor]:
    """Keep-masks for plain tensors with a registered criterion (no model, nothing applied).

    Args:
        weights: name → current (already masked) weight; only read.
        amounts: name → sparsity, multiplier or threshold (see :class:`Criterion`).
        criterion: a name from :data:`CRITERIA`.
        scope: ``"layer"`` or ``"global"``.
        current: name → keep-mask already in force (default: all kept); entries pruned there
            stay pruned.
        seed: seed for ``random``.
        rounding: ``round`` (default) or ``floor`` — how a sparsity becomes a count of pruned
            entries (:func:`pruned_count`).

    Returns:
        ``{name: BoolTensor}`` shaped like each weight.

    Example:
        >>> masks_for({"fc.weight": w}, {"fc.weight": 0.9})["fc.weight"].float().mean()  # ≈ 0.1
    """
    crit = CRITERIA.get(criterion)
    missing = [n for n in weights if n not in amounts]
    if missing:
        raise ConfigError(f"{criterion}: no amount given for {missing}; give one per weight")
    levels = {n: float(amounts[n]) for n in weights}
    _validate(criterion, crit, levels, scope)
    if not levels:
        return {}
    detached = {n: w.detach() for n, w in weights.items()}
    now = {
        n: (current or {}).get(n, torch.ones_like(w, dtype=torch.bool)).to(w.device)
        for n, w in detached.items()
    }
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    return crit.fn(PruneRequest(detached, now, levels, scope, gen, rounding))


def compute_masks(
    model: nn.Module,
    amount: Amount,
    *,
    criterion: str = "magnitude",
    scope: Scope = "layer",
    params: list[str] | tuple[str, ...] | None = None,
    seed: int | None = None,
) -> dict[str, Tensor]:
    """Compute keep-masks like :func:`prune`, without applying them (the model is unchanged).

    Returns:
        ``{name: BoolTensor}`` for every selected parameter.
    """
    amounts = resolve_amounts(model, amount, params)
    tensors = dict(model.named_parameters())
    with torch.no_grad():
        weights = {n: _effective(model, n, tensors) for n in amounts}
    return masks_for(
        weights, amounts, criterion=criterion, scope=scope, current=get_masks(model), seed=seed
    )


def prune(
    model: nn.Module,
    amount: Amount,
    *,
    criterion: str = "magnitude",
    scope: Scope = "layer",
    params: list[str] | tuple[str, ...] | None = None,
    seed: int | None = None,
) -> dict[str, Tensor]:
    """Compute masks with a registered criterion and apply them (see :func:`apply_masks`).

    Args:
        model: the model (masked in place).
        amount: sparsity (or std multiplier) — one number or ``{name or glob: number}``.
        criterion: a name from :data:`CRITERIA` (``magnitude``, ``random``, ``std_threshold``,
            ``threshold``).
        scope: ``"layer"`` (each tensor hits its own sparsity) or ``"global"`` (one ranking
            across all selected tensors, so the total sparsity is hit and layers differ).
        params: names/patterns to prune; default Conv/Linear weights.
        seed: seed for ``random``; None uses torch's global generator.

    Returns:
        The masks now applied, ``{name: BoolTensor}``.

    Example:
        >>> prune(model, 0.8, criterion="random", seed=0)
    """
    masks = compute_masks(model, amount, criterion=criterion, scope=scope, params=params, seed=seed)
    apply_masks(model, masks)
    return masks


def _effective(model: nn.Module, name: str, tensors: Mapping[str, Tensor]) -> Tensor:
    if name in tensors:
        return tensors[name].detach()
    module_name, _, attr = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    return getattr(module, attr).detach()  # parametrized: recomputed with the mask applied


def prune_magnitude(
    model: nn.Module,
    sparsity: Amount,
    *,
    scope: Scope = "layer",
    params: list[str] | tuple[str, ...] | None = None,
) -> dict[str, Tensor]:
    """Magnitude pruning to an exact sparsity, per layer or global (Han et al. 2015).

    Args:
        model: the model (masked in place).
        sparsity: fraction of entries to zero, one number or ``{name or glob: fraction}``.
        scope: ``"layer"`` or ``"global"``.
        params: names/patterns to prune; default Conv/Linear weights.

    Returns:
        The applied masks.

    Example:
        >>> prune_magnitude(model, 0.9, scope="global")
    """
    return prune(model, sparsity, criterion="magnitude", scope=scope, params=params)


def prune_threshold_std(
    model: nn.Module, s: Amount, params: list[str] | tuple[str, ...] | None = None
) -> dict[str, Tensor]:
    """Prune ``|w| <= s · std(w)`` per layer (Han et al. 2015; Distiller's sensitivity pruner).

    For roughly Gaussian weights ``s = 1`` prunes about 68%, ``s = 2`` about 95%.

    Args:
        model: the model (masked in place).
        s: multiplier, one number or ``{name or glob: s}``.
        params: names/patterns to prune; default Conv/Linear weights.

    Returns:
        The applied masks.
    """
    return prune(model, s, criterion="std_threshold", params=params)


def prune_to_sparsity(
    model: nn.Module,
    per_param: Mapping[str, float],
    *,
    criterion: str = "magnitude",
    seed: int | None = None,
) -> dict[str, Tensor]:
    """Prune each listed parameter to its own sparsity.

    Args:
        model: the model (masked in place).
        per_param: ``{name or glob: sparsity}``; later entries override earlier ones.
        criterion: ``magnitude`` or ``random``.
        seed: seed for ``random``.

    Returns:
        The applied masks.

    Example:
        >>> prune_to_sparsity(model, {"conv1.weight": 0.3, "fc1.weight": 0.92})
    """
    return prune(model, per_param, criterion=criterion, scope="layer", seed=seed)
