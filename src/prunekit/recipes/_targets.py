"""Match a recipe's parameter/module names and globs against a real model.

Names may carry DataParallel's ``module.`` segments (Distiller schedules always do); a name that
matches nothing as written is retried with those segments removed. A name that still matches
nothing is an error naming the recipe line and the closest real names.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from torch import nn

from prunekit.errors import ConfigError
from prunekit.recipes.native import (
    BNL1RegularizerConfig,
    GroupLassoRegularizerConfig,
    GroupVarianceRegularizerConfig,
    L1RegularizerConfig,
    PrunerConfig,
    RampThresholdPrunerConfig,
    Recipe,
    RegularizerConfig,
    SplicingPrunerConfig,
    StdThresholdPrunerConfig,
)

_BN = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)
_PRUNABLE = (nn.modules.conv._ConvNd, nn.Linear)
#: what element-wise (fine-grained) pruners mask besides conv/linear weights
_ELEMENT_ONLY = (nn.RNNBase, nn.Embedding, nn.EmbeddingBag)


@dataclass(frozen=True)
class Universe:
    """Name lists of one model.

    Attributes:
        params: every parameter name.
        weights: weights of conv / linear layers (what structured pruners act on).
        bn: scale (``weight``) parameters of BatchNorm layers (Network Slimming's γ).
        modules: every submodule name (``""`` excluded).
        elements: what element-wise pruners may mask: ``weights`` plus the weight matrices of
            RNN/LSTM/GRU layers (``weight_ih_l0``, ``weight_hh_l0``, …) and embedding tables.
    """

    params: tuple[str, ...]
    weights: tuple[str, ...]
    bn: tuple[str, ...]
    modules: tuple[str, ...]
    elements: tuple[str, ...] = ()

    @classmethod
    def of(cls, model: nn.Module) -> Universe:
        """Collect the names of ``model`` (tied weights under their first name only)."""
        params = tuple(n for n, _ in model.named_parameters())
        known = set(params)
        weights, bn, modules, elements = [], [], [], []
        for name, module in model.named_modules():
            if not name:
                continue
            modules.append(name)
            if isinstance(module, nn.RNNBase):
                elements += [f"{name}.{w}" for w in module._flat_weights_names if "weight" in w]
                continue
            if f"{name}.weight" not in known:
                continue
            if isinstance(module, _PRUNABLE):
                weights.append(f"{name}.weight")
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                bn.append(f"{name}.weight")
            if isinstance(module, (*_PRUNABLE, *_ELEMENT_ONLY)):
                elements.append(f"{name}.weight")
        elements = [e for e in elements if e in known]
        return cls(params, tuple(weights), tuple(bn), tuple(modules), tuple(elements))


def strip_data_parallel(name: str) -> str:
    """``module.layer1.0.conv1.weight`` → ``layer1.0.conv1.weight`` (also inner ``module.``)."""
    return ".".join(part for part in name.split(".") if part != "module")


def match(pattern: str, names: Iterable[str]) -> list[str]:
    """Names matching a glob (exact names are globs too), retrying without ``module.``."""
    pool = list(names)
    hits = [n for n in pool if fnmatchcase(n, pattern)]
    if not hits and "module" in pattern.split("."):
        stripped = strip_data_parallel(pattern)
        hits = [n for n in pool if fnmatchcase(n, stripped)]
    return hits


def _no_match(
    recipe: Recipe,
    loc: tuple[Any, ...],
    pattern: str,
    kind: str,
    pool: Iterable[str],
    everything: Iterable[str],
) -> ConfigError:
    """Error for a pattern matching nothing, with close matches and a hint."""
    stripped = strip_data_parallel(pattern)
    read_as = f" (read as {stripped!r})" if stripped != pattern else ""
    if match(pattern, everything):
        return recipe.source.error(
            loc,
            f"{pattern!r}{read_as} names something that is not a {kind}; "
            f"list {kind}s only (e.g. {', '.join(list(pool)[:2])})",
        )
    close = difflib.get_close_matches(stripped, list(pool), n=3, cutoff=0.5)
    hint = (
        f"; close matches: {', '.join(close)}" if close else f"; e.g. {', '.join(list(pool)[:3])}"
    )
    return recipe.source.error(loc, f"{pattern!r}{read_as} matches no {kind} of the model{hint}")


def _select_names(
    recipe: Recipe,
    loc: tuple[Any, ...],
    patterns: list[str] | None,
    pool: tuple[str, ...],
    universe: Universe,
    kind: str,
    *,
    keyed: bool = False,
    by_module: bool = False,
) -> list[str]:
    """Names in ``pool`` matched by ``patterns`` (list items, or mapping keys if ``keyed``);
    with ``by_module`` the patterns name modules and select those modules' ``pool`` entries."""
    if not by_module:
        return _gather(
            recipe, loc, patterns, lambda p: match(p, pool), (kind, pool, universe.params), keyed
        )
    owners = {p.rsplit(".", 1)[0]: p for p in pool}

    def hits(pattern: str) -> list[str]:
        return [owners[m] for m in match(pattern, universe.modules) if m in owners]

    return _gather(
        recipe, loc, patterns, hits, (f"{kind} layer", list(owners), universe.modules), keyed
    )


def _gather(
    recipe: Recipe,
    loc: tuple[Any, ...],
    patterns: list[str] | None,
    hits_of: Callable[[str], list[str]],
    miss: tuple[str, Iterable[str], Iterable[str]],
    keyed: bool,
) -> list[str]:
    """The hits of every pattern, in order, without repeats; a pattern with none is an error
    at its own line (``miss``: what it should have named, the pool, everything there is)."""
    found: list[str] = []
    for i, pattern in enumerate(patterns or []):
        hits = hits_of(pattern)
        if not hits:
            raise _no_match(recipe, (*loc, pattern if keyed else i), pattern, *miss)
        found += [h for h in hits if h not in found]
    return found


def lookup(table: Mapping[str, float], name: str) -> float | None:
    """Value for ``name``: exact key first (``module.`` ignored), then the first glob key."""
    for key, value in table.items():
        if name in (key, strip_data_parallel(key)):
            return value
    for key, value in table.items():
        if match(key, [name]):
            return value
    return None


def _apply_ignore(
    recipe: Recipe,
    loc: tuple[Any, ...],
    ignore: list[str] | None,
    names: list[str],
    universe: Universe,
) -> list[str]:
    for i, pattern in enumerate(ignore or []):
        if not (match(pattern, universe.params) or match(pattern, universe.modules)):
            raise _no_match(
                recipe, (*loc, i), pattern, "parameter or layer", universe.params, universe.params
            )
        names = [
            n for n in names if not (match(pattern, [n]) or match(pattern, [n.rsplit(".", 1)[0]]))
        ]
    return names


def pruner_targets(
    recipe: Recipe, name: str, pruner: PrunerConfig, universe: Universe
) -> tuple[list[str], dict[str, float]]:
    """Parameters a pruner acts on, and per-parameter values (empty when uniform)."""
    base = ("pruners", name)
    pool, kind = pruner.pool(universe)
    field, table, default = pruner.value_table()
    names = _select_names(recipe, (*base, "params"), pruner.params, pool, universe, kind)
    names += [
        n
        for n in _select_names(
            recipe, (*base, "modules"), pruner.modules, pool, universe, kind, by_module=True
        )
        if n not in names
    ]
    explicit = pruner.params is not None or pruner.modules is not None
    if not explicit and table and default is None:
        keys = list(table)
        names = _select_names(recipe, (*base, str(field)), keys, pool, universe, kind, keyed=True)
    elif not explicit:
        names = list(pool)
    names = _apply_ignore(recipe, (*base, "ignore"), pruner.ignore, names, universe)
    if not names:
        raise recipe.source.error(base, f"pruner {name!r} selects no {kind}s of the model")
    if isinstance(pruner, RampThresholdPrunerConfig):
        return names, dict.fromkeys(names, pruner.q)  # each event turns q into its threshold
    if not table and not isinstance(pruner, (StdThresholdPrunerConfig, SplicingPrunerConfig)):
        return names, {}  # one uniform sparsity: no per-tensor values
    values: dict[str, float] = {}
    for n in names:
        value = lookup(table or {}, n)
        if value is None:
            value = default
        if value is None:
            raise recipe.source.error(
                (*base, field),
                f"pruner {name!r} acts on {n!r} but {field!r} has no entry "
                f"for it; add one (or a '*' entry)",
            )
        values[n] = value
    return names, values


def regularizer_strengths(
    recipe: Recipe, name: str, reg: RegularizerConfig, universe: Universe
) -> dict[str, float]:
    """Parameter → λ for one regularizer."""
    base = ("regularizers", name)
    if isinstance(reg, BNL1RegularizerConfig):
        if not universe.bn:
            raise recipe.source.error(
                base, f"regularizer {name!r} (bn_l1) needs BatchNorm layers; the model has none"
            )
        names = (
            list(universe.bn)
            if reg.modules is None
            else _select_names(
                recipe,
                (*base, "modules"),
                reg.modules,
                universe.bn,
                universe,
                "BatchNorm",
                by_module=True,
            )
        )
        return dict.fromkeys(names, reg.strength)
    assert isinstance(reg, (L1RegularizerConfig, GroupLassoRegularizerConfig, GroupVarianceRegularizerConfig))
    if isinstance(reg, (GroupLassoRegularizerConfig, GroupVarianceRegularizerConfig)):
        pool, kind = universe.weights, "conv/linear weight"
    else:
        pool, kind = universe.params, "parameter"
    table = reg.strengths or {}
    if reg.params is not None:
        names = _select_names(recipe, (*base, "params"), reg.params, pool, universe, kind)
    elif reg.strength is None:
        names = _select_names(
            recipe, (*base, "strengths"), list(table), pool, universe, kind, keyed=True
        )
    else:
        names = list(universe.weights)
    out: dict[str, float] = {}
    for n in names:
        value = lookup(table, n)
        out[n] = value if value is not None else float(reg.strength or 0.0)
    return out
