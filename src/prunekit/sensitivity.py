"""Sensitivity analysis: prune one target at a time, at several levels, and measure a metric.

This is the layer-wise sensitivity scan of Han et al. 2015 (fig. 6) and Distiller's
``sensitivity_analysis``: each target is pruned *alone* at each level, the metric (e.g. test
accuracy) is measured, and the model is restored exactly before the next measurement. The curves
show which layers tolerate heavy pruning; :func:`ratios_from_budget` turns them into a
per-target level for a given accuracy budget.

Targets are generic:

* a parameter name (``"fc1.weight"``): unstructured, :func:`unstructured_pruner` masks the
  smallest weights of that tensor;
* a core :class:`~prunekit.graph.Group` (``prunekit.trace(model, x).groups``): structured,
  :func:`structured_pruner` removes the group's least important units (filters/channels) with
  :func:`~prunekit.plan.plan_from_keep` and a *soft* :func:`~prunekit.surgery.apply_plan`, so
  the measured metric is exactly the thinned model's (see ``docs/design.md``);
* anything else, with a custom ``pruner`` (see :func:`restoring_pruner`).

Example:
    >>> result = sensitivity_analysis(model, lambda m: evaluate(m, test_loader))
    >>> result.to_csv("runs/sens.csv"); result.plot("runs/sens.png")
    >>> ratios_from_budget(result, max_drop=0.01)   # {'fc1.weight': 0.9, 'fc3.weight': 0.5, ...}
    >>> groups = prunekit.trace(model, torch.randn(1, 3, 32, 32)).groups
    >>> sensitivity_analysis(model, acc, groups, method="l1")   # per-layer filter pruning
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from prunekit._fileio import atomic_write_text
from prunekit._plot import new_figure, save_figure
from prunekit.allocators import keep_count
from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph, Group
from prunekit.importance import score
from prunekit.plan import plan_from_keep, top_units
from prunekit.sparse import compute_masks, default_param_names, stored_tensor
from prunekit.sparse.masks import zero_pruned
from prunekit.surgery import apply_plan

Pruner = Callable[[nn.Module, Any, float], AbstractContextManager[Any]]
"""``pruner(model, target, level)`` -> context manager; pruned inside, restored on exit."""

DEFAULT_LEVELS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def target_label(target: Any) -> str:
    """Printable name of a target: a string itself, else its ``.id``, else ``str(target)``."""
    if isinstance(target, str):
        return target
    ident = getattr(target, "id", None)
    return str(ident) if ident is not None else str(target)


def unstructured_pruner(method: str = "magnitude", *, seed: int | None = 0) -> Pruner:
    """Pruner masking one parameter to a sparsity with a criterion of :mod:`prunekit.sparse`.

    The parameter's stored values are zeroed in place and copied back from a snapshot on exit,
    so the model is bit-for-bit what it was (masks already on the model are respected).

    Args:
        method: criterion name (``magnitude``, ``random``); ``std_threshold`` would read the
            level as a multiplier.
        seed: seed for ``random`` so every level uses the same draw.

    Returns:
        A :data:`Pruner` taking a parameter name as target.
    """

    @contextlib.contextmanager
    def pruner(model: nn.Module, target: Any, level: float) -> Iterator[None]:
        name = target_label(target)
        mask = compute_masks(model, level, criterion=method, params=[name], seed=seed)[name]
        tensor = stored_tensor(model, name)
        snapshot = tensor.detach().clone()
        try:
            zero_pruned({name: tensor}, {name: mask})
            yield
        finally:
            with torch.no_grad():
                tensor.copy_(snapshot)

    return pruner


def _one_group_graph(model: nn.Module, group: Group) -> DependencyGraph:
    """A graph holding only ``group``: plans built on it touch that group's tensors alone."""
    state: dict[str, torch.Tensor] = dict(model.named_parameters())
    state.update(model.named_buffers())
    missing = [t for t in group.tensors if t not in state]
    if missing:
        raise ConfigError(
            f"group {group.id!r} names tensor(s) {missing} the model does not have; "
            "trace this model (prunekit.trace) and pass its groups"
        )
    return DependencyGraph([group], tensor_shapes={t: tuple(state[t].shape) for t in group.tensors})


def structured_pruner(
    criterion: str = "l1",
    *,
    floor: int = 1,
    round_to: int | None = None,
    score_kwargs: Mapping[str, Any] | None = None,
) -> Pruner:
    """Pruner removing a share of one core ``Group``'s units, soft, restored exactly on exit.

    At level ``l`` the group keeps its ``size - floor(l·size)`` most important units (at least
    ``floor``; rounded up to a multiple of ``round_to``), chosen by ``criterion`` as in
    :func:`prunekit.plan.make_plan`. The removed units are zeroed everywhere they live (producer
    filters, BatchNorm scale/shift, consumer columns), which computes exactly what the
    physically thinned model computes. Only the touched parameters are snapshotted.

    Args:
        criterion: a :data:`prunekit.importance.CRITERIA` name (``l1 l2 bn_scale taylor
            activation random``).
        floor: units the group keeps even at level 1.0.
        round_to: keep a multiple of this many units.
        score_kwargs: extra arguments of :func:`prunekit.importance.score` (``batches`` ...).

    Returns:
        A :data:`Pruner` taking a ``Group`` as target.
    """
    kwargs = dict(score_kwargs or {})
    if floor < 1 or (round_to is not None and round_to < 1):
        raise ConfigError(f"floor and round_to must be >= 1, got {floor} and {round_to}")

    @contextlib.contextmanager
    def pruner(model: nn.Module, target: Any, level: float) -> Iterator[None]:
        graph = _one_group_graph(model, target)
        scores = score(model, graph, criterion, **kwargs).get(target.id)
        if scores is None:
            raise ConfigError(
                f"criterion {criterion!r} cannot score group {target.id!r} (e.g. bn_scale "
                "needs a BatchNorm in the group); use l1 or l2"
            )
        n = keep_count(target.size, level, floor=floor, round_to=round_to)
        plan = plan_from_keep(graph, {target.id: top_units(scores, n)})
        params = dict(model.named_parameters())
        snapshot = {t: params[t].detach().clone() for t in plan.tensors if t in params}
        try:
            apply_plan(model, plan, soft=True)
            yield
        finally:
            with torch.no_grad():
                for name, saved in snapshot.items():
                    params[name].copy_(saved)

    return pruner


def auto_pruner(method: str = "magnitude") -> Pruner:
    """Pruner choosing by target type: ``Group`` → structured, parameter name → unstructured.

    Args:
        method: for parameter names an unstructured criterion (``magnitude``, ``random``); for
            groups a core criterion (``l1``, ``l2``, ...) with ``magnitude`` meaning ``l1``
            (filter L1 norm, Li et al. 2017).
    """
    structured = structured_pruner("l1" if method == "magnitude" else method)
    unstructured = unstructured_pruner(method) if method in ("magnitude", "random") else None

    def pruner(model: nn.Module, target: Any, level: float) -> AbstractContextManager[Any]:
        if isinstance(target, Group):
            return structured(model, target, level)
        if unstructured is None:
            raise ConfigError(
                f"{method!r} is not an unstructured criterion; use magnitude or random for "
                f"parameter targets such as {target_label(target)!r}"
            )
        return unstructured(model, target, level)

    return pruner


def restoring_pruner(prune_fn: Callable[[nn.Module, Any, float], Any]) -> Pruner:
    """Wrap an in-place ``prune_fn(model, target, level)`` into a restoring :data:`Pruner`.

    The whole state dict is snapshotted before and loaded back after, so ``prune_fn`` may change
    any parameter or buffer in place, but not tensor shapes (use soft structured pruning).
    """

    @contextlib.contextmanager
    def pruner(model: nn.Module, target: Any, level: float) -> Iterator[None]:
        snapshot = {k: v.detach().clone() for k, v in model.state_dict().items()}
        try:
            prune_fn(model, target, level)
            yield
        finally:
            model.load_state_dict(snapshot)

    return pruner


@dataclass
class SensitivityResult:
    """Measured metric per (target, level); level 0.0 holds the unpruned baseline."""

    baseline: float
    curves: dict[str, dict[float, float]] = field(default_factory=dict)
    higher_is_better: bool = True

    def rows(self) -> list[tuple[str, float, float]]:
        """``(target, level, metric)`` rows, targets in analysis order, levels ascending."""
        return [(t, lv, m) for t, c in self.curves.items() for lv, m in sorted(c.items())]

    def to_csv(self, path: str | Path) -> None:
        """Write ``target,level,metric`` rows to ``path`` atomically."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["target", "level", "metric"])
        writer.writerows(self.rows())
        atomic_write_text(path, buf.getvalue())

    @classmethod
    def from_csv(cls, path: str | Path, *, higher_is_better: bool = True) -> SensitivityResult:
        """Read a CSV written by :meth:`to_csv` (the baseline comes from its level-0 rows)."""
        curves: dict[str, dict[float, float]] = {}
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                curves.setdefault(row["target"], {})[float(row["level"])] = float(row["metric"])
        base = [c[0.0] for c in curves.values() if 0.0 in c]
        if not base:
            raise ConfigError(f"{path} has no level-0 (baseline) rows; was it written by to_csv?")
        return cls(base[0], curves, higher_is_better)

    def plot(self, path: str | Path, *, metric_name: str = "metric", title: str = "") -> None:
        """Save one curve per target (metric vs level) to ``path`` atomically (PNG, SVG, PDF)."""
        fig = new_figure(7, 4.5)
        ax = fig.add_subplot()
        for target, curve in self.curves.items():
            levels = sorted(curve)
            ax.plot(levels, [curve[lv] for lv in levels], marker="o", ms=3, label=target)
        ax.set_xlabel("pruning level (fraction pruned)")
        ax.set_ylabel(metric_name)
        ax.set_title(title or "Sensitivity analysis")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="best", ncol=1 + len(self.curves) // 12)
        save_figure(fig, path)


def _check_levels(levels: Sequence[float]) -> list[float]:
    out = sorted({float(lv) for lv in levels})
    if not out or any(not 0.0 <= lv <= 1.0 or math.isnan(lv) for lv in out):
        raise ConfigError(f"sensitivity levels must be non-empty and in [0, 1], got {list(levels)}")
    return out


def sensitivity_analysis(
    model: nn.Module,
    evaluate_fn: Callable[[nn.Module], float],
    targets: Sequence[Any] | None = None,
    levels: Sequence[float] = DEFAULT_LEVELS,
    method: str = "magnitude",
    *,
    pruner: Pruner | None = None,
    higher_is_better: bool = True,
    progress: bool | None = None,
) -> SensitivityResult:
    """Prune each target alone at each level and record ``evaluate_fn(model)``.

    Args:
        model: the trained model; it is restored after every measurement.
        evaluate_fn: returns the metric (e.g. accuracy) of the model as it is now.
        targets: parameter names (default: Conv/Linear weights), core ``Group``s (structured,
            labelled by their ``.id``) or, with a custom ``pruner``, any objects.
        levels: pruning levels in [0, 1] (for groups: the share of units removed).
        method: criterion of the default :func:`auto_pruner`.
        pruner: custom ``pruner(model, target, level)`` context manager.
        higher_is_better: whether a larger metric is better (False for a loss).
        progress: show a tqdm bar; None = only when stderr is a terminal.

    Returns:
        A :class:`SensitivityResult` (level 0.0 = baseline for every target).
    """
    lv = _check_levels(levels)
    targets = list(default_param_names(model) if targets is None else targets)
    if not targets:
        raise ConfigError("no targets to analyse; pass parameter names or groups")
    prune_ctx = pruner or auto_pruner(method)
    baseline = float(evaluate_fn(model))
    result = SensitivityResult(baseline, higher_is_better=higher_is_better)
    show = sys.stderr.isatty() if progress is None else progress
    with tqdm(total=len(targets) * len(lv), desc="sensitivity", disable=not show) as bar:
        for target in targets:
            curve = result.curves.setdefault(target_label(target), {0.0: baseline})
            for level in lv:
                with prune_ctx(model, target, level):
                    curve[level] = float(evaluate_fn(model))
                bar.update(1)
    return result


def ratios_from_budget(
    results: SensitivityResult | Mapping[str, Mapping[float, float]],
    max_drop: float,
    *,
    baseline: float | None = None,
    higher_is_better: bool = True,
    contiguous: bool = True,
) -> dict[str, float]:
    """Per target, the highest level whose metric drop from the baseline is within ``max_drop``.

    Args:
        results: a :class:`SensitivityResult` or ``{target: {level: metric}}``.
        max_drop: allowed degradation, in the metric's unit (0.01 = one point of accuracy in
            [0, 1]).
        baseline: unpruned metric; default: the result's baseline (or each curve's level 0).
        higher_is_better: for a plain mapping; a SensitivityResult carries its own.
        contiguous: only accept a level if every lower level is within budget too, so one
            lucky noisy point at a high level is not picked.

    Returns:
        ``{target: level}``; 0.0 when even the lowest level costs too much.
    """
    if isinstance(results, SensitivityResult):
        curves: Mapping[str, Mapping[float, float]] = results.curves
        baseline = results.baseline if baseline is None else baseline
        higher_is_better = results.higher_is_better
    else:
        curves = results
    if max_drop < 0:
        raise ConfigError(f"max_drop must be >= 0, got {max_drop}")
    out: dict[str, float] = {}
    for target, curve in curves.items():
        base = baseline if baseline is not None else curve.get(0.0)
        if base is None:
            raise ConfigError(f"no baseline for {target!r}: pass baseline= or include level 0.0")
        best = 0.0
        for level in sorted(curve):
            drop = base - curve[level] if higher_is_better else curve[level] - base
            if drop <= max_drop + 1e-12:
                best = level
            elif contiguous:
                break
        out[target] = best
    return out
