"""Network Slimming channel selection: one global threshold on BatchNorm scale factors |γ|.

Two ways to turn |γ| into a pruning plan on prunekit's dependency graph:

* :func:`global_slim_plan` — prunekit's own: every group is scored by the mean |γ| of the
  BatchNorms it feeds, all groups are ranked together, and each group keeps at least ``floor``
  units (optionally a multiple of ``round_to``). A layer can never lose every channel.
* :func:`reference_threshold_plan` — the reference code's rule (Liu et al., ICCV 2017;
  Eric-mingjie/network-slimming ``vggprune.py``/``resprune.py``/``denseprune.py``): sort the |γ|
  of *all* BatchNorm channels, take ``thr = sorted[int(total · percent)]`` and keep a channel
  iff ``|γ| > thr``. No floor: a layer whose every |γ| is at or below ``thr`` would be emptied
  (the reference then crashes building a 0-channel layer); here it is reported as
  ``collapsed`` instead.

Groups fed by several BatchNorms (a residual stream read by every block's ``bn1``, a DenseNet
feature map read by every later layer) keep a unit if **any** of those BatchNorms keeps it (mask
union). The reference inserts a ``channel_selection`` layer after such BatchNorms so each reader
drops its own channels while the stream keeps full width; a plan cannot express per-reader
selection, so the union keeps a superset of the reference's channels. A unit dropped by the union
is dropped by every reader in the reference too, so it contributes nothing there either.

Example:
    >>> graph = prunekit.trace(model, torch.zeros(1, 3, 32, 32))
    >>> plan, report = reference_threshold_plan(model, graph, 0.7)
    >>> report.collapsed, report.threshold
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from prunekit.errors import ConfigError, PlanError
from prunekit.graph import DependencyGraph, Group, Slot
from prunekit.importance import score
from prunekit.plan import Allocation, PruningPlan, make_plan, plan_from_keep

BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
METHODS = ("prunekit", "reference")


@dataclass
class SlimReport:
    """What a slimming threshold did, layer by layer.

    Attributes:
        method: ``"prunekit"`` (global ranking with a floor) or ``"reference"``.
        percent: requested fraction of channels to remove.
        threshold: the |γ| threshold (units scoring at or below it are removed).
        ranked: number of scores ranked (BN channels for ``reference``, group units for
            ``prunekit``).
        removed: units removed by the plan.
        groups: per group ``{"group", "bns", "size", "kept"}``.
        bns: per BatchNorm ``{"bn", "size", "above", "kept"}``: channels above the threshold
            and channels kept by the plan.
        collapsed: the threshold alone empties at least one BatchNorm layer (the reference code
            would crash there).
        collapsed_layers: those BatchNorm layers.
        collapsed_groups: groups whose every unit falls at or below the threshold; ``prunekit``
            keeps ``floor`` units there, ``reference`` keeps the single best unit.
    """

    method: str
    percent: float
    threshold: float
    ranked: int
    removed: int = 0
    groups: list[dict[str, Any]] = field(default_factory=list)
    bns: list[dict[str, Any]] = field(default_factory=list)
    collapsed: bool = False
    collapsed_layers: list[str] = field(default_factory=list)
    collapsed_groups: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    def to_table(self, max_rows: int = 60) -> str:
        """Text table of kept channels per BatchNorm layer."""
        lines = [
            f"{self.method} threshold |γ| <= {self.threshold:.4g} at {self.percent:.0%} "
            f"({self.ranked} ranked, {self.removed} units removed)"
        ]
        for row in self.bns[:max_rows]:
            mark = "  COLLAPSED" if row["bn"] in self.collapsed_layers else ""
            lines.append(f"  {row['bn']:<36} {row['kept']:>5}/{row['size']:<5}{mark}")
        if len(self.bns) > max_rows:
            lines.append(f"  ... {len(self.bns) - max_rows} more")
        if self.collapsed:
            lines.append(
                f"the threshold empties {len(self.collapsed_layers)} BatchNorm layer(s): "
                "the reference code would crash here"
            )
        return "\n".join(lines)


def bn_modules(model: nn.Module) -> dict[str, nn.Module]:
    """``{name: module}`` of every affine BatchNorm1d/2d/3d of ``model``."""
    return {n: m for n, m in model.named_modules() if isinstance(m, BN_TYPES) and m.affine}


def _gamma(m: nn.Module) -> torch.Tensor:
    """|γ| of a BatchNorm as a detached CPU float tensor."""
    w = m.weight
    assert isinstance(w, torch.Tensor)
    return w.detach().abs().float().cpu()


def _gamma_slots(group: Group, bns: dict[str, nn.Module]) -> Iterator[tuple[str, Slot]]:
    """The slots of ``group`` that are BatchNorm scale factors, with the BN's module name."""
    for s in group.slots:
        path, _, attr = s.tensor.rpartition(".")
        if attr == "weight" and path in bns:
            yield path, s


def _check_percent(percent: float) -> float:
    if not 0.0 <= float(percent) < 1.0:
        raise ConfigError(
            f"percent must be in [0, 1) (fraction of channels removed), got {percent}"
        )
    return float(percent)


def global_slim_plan(
    model: nn.Module,
    graph: DependencyGraph,
    percent: float,
    *,
    floor: int = 1,
    round_to: int | None = None,
    count: str = "bn",
) -> tuple[PruningPlan, SlimReport]:
    """prunekit's Network Slimming plan: raw |γ| ranked globally, a per-group floor.

    A unit's score is the mean |γ| over the BatchNorms it feeds. The library's ``global``
    allocator removes units in order of score until ``percent`` of the total (by ``count``) is
    reached, while each group keeps at least ``floor`` units (its best ones) and, with
    ``round_to``, a multiple of it.

    Args:
        model: the (sparse-trained) model the graph was traced from.
        graph: its dependency graph.
        percent: fraction to remove, in [0, 1).
        floor: units every group keeps at least (>= 1).
        round_to: keep a multiple of this many units per group.
        count: what ``percent`` counts. ``"bn"``: BatchNorm channels, the paper's accounting
            (a unit read by k BatchNorms — a residual stream, a DenseNet feature map — weighs
            k); ``"units"``: prunable units, each once (as ``prunekit prune --method slim``).

    Returns:
        ``(plan, report)``; ``report.threshold`` is the global |γ| cut.

    Example:
        >>> plan, report = global_slim_plan(model, graph, 0.7, floor=1)
    """
    percent = _check_percent(percent)
    if count not in ("bn", "units"):
        raise ConfigError(f"count must be 'bn' (BatchNorm channels) or 'units', got {count!r}")
    scores = score(model, graph, "bn_scale")
    bns = bn_modules(model)
    weights = {
        g.id: _readers(g, bns) if count == "bn" else torch.ones(g.size)
        for g in graph.groups
        if g.id in scores
    }
    # The library's global allocator: raw |γ| ranked together, exact counts, per-group floor.
    alloc = Allocation(
        ratio=percent,
        global_ranking=True,
        floor=floor,
        round_to=round_to,
        normalize=None,
        weights=weights,
    )
    plan = make_plan(graph, scores, alloc)
    thr = _cut(scores, plan)
    plan.meta.update(
        {
            "criterion": "bn_scale",
            "method": "slim",
            "threshold_rule": "prunekit",
            "count": count,
            "threshold": thr,
        }
    )
    total = int(sum(float(w.sum()) for w in weights.values()))
    report = SlimReport("prunekit", percent, thr, total)
    report.collapsed_groups = [g for g, s in scores.items() if bool((s <= thr).all())]
    _fill_report(report, model, graph, plan, thr)
    return plan, report


def _cut(scores: dict[str, torch.Tensor], plan: PruningPlan) -> float:
    """The global |γ| cut a plan made: the highest score of a removed unit (-inf: none)."""
    cut = float("-inf")
    for gid, s in scores.items():
        gone = torch.ones(s.numel(), dtype=torch.bool)
        gone[torch.as_tensor(plan.groups[gid]["keep"], dtype=torch.long)] = False
        if bool(gone.any()):
            cut = max(cut, float(s[gone].max()))
    return cut


def _readers(g: Group, bns: dict[str, nn.Module]) -> torch.Tensor:
    """Per unit of ``g``: how many BatchNorm channels it is (at least 1)."""
    w = np.zeros(g.size)
    for _, s in _gamma_slots(g, bns):
        np.add.at(w, s.units, 1.0)
    return torch.from_numpy(np.maximum(w, 1.0))


def reference_threshold_plan(
    model: nn.Module,
    graph: DependencyGraph,
    percent: float,
    *,
    on_collapse: str = "keep_best",
) -> tuple[PruningPlan, SlimReport]:
    """The reference code's global |γ| threshold, as a plan on prunekit's graph.

    ``thr = sort(|γ| of all BN channels)[int(total · percent)]``; a unit is kept iff some
    BatchNorm it feeds has ``|γ| > thr`` (see the module docstring for the union rule). Groups
    with no BatchNorm keep every unit, as in the reference.

    Args:
        model: the (sparse-trained) model.
        graph: its dependency graph.
        percent: fraction of BN channels below the threshold, in [0, 1).
        on_collapse: ``"keep_best"`` (a group left with no unit keeps its highest-|γ| unit so
            the plan stays buildable; the report says ``collapsed``) or ``"error"`` (raise
            :class:`~prunekit.errors.PlanError`, the reference behaviour).

    Returns:
        ``(plan, report)``.
    """
    percent = _check_percent(percent)
    if on_collapse not in ("keep_best", "error"):
        raise ConfigError(f"on_collapse must be 'keep_best' or 'error', got {on_collapse!r}")
    bns = bn_modules(model)
    if not bns:
        # Nothing to rank: the reference has nothing to prune either.
        plan = plan_from_keep(graph, {}, {"method": "slim", "threshold_rule": "reference"})
        report = SlimReport("reference", percent, float("-inf"), 0)
        _fill_report(report, model, graph, plan, report.threshold)
        return plan, report
    allv = torch.cat([_gamma(m).flatten() for m in bns.values()])
    thr = float(torch.sort(allv).values[int(allv.numel() * percent)])
    report = SlimReport("reference", percent, thr, int(allv.numel()))
    keep: dict[str, list[int]] = {}
    for g in graph.groups:
        alive, best = _alive_units(g, bns, thr)
        if alive is None:
            continue
        if not alive.any():
            report.collapsed_groups.append(g.id)
            if on_collapse == "error":
                raise PlanError(
                    f"threshold {thr:.4g} removes every channel of group {g.id!r}; lower the "
                    "percent or use the prunekit threshold (it keeps a per-layer floor)"
                )
            alive[int(np.argmax(best))] = True
        keep[g.id] = np.flatnonzero(alive).tolist()
    meta = {
        "criterion": "bn_scale",
        "method": "slim",
        "threshold_rule": "reference",
        "ratio": percent,
        "threshold": thr,
    }
    plan = plan_from_keep(graph, keep, meta)
    _fill_report(report, model, graph, plan, thr)
    return plan, report


def _alive_units(
    g: Group, bns: dict[str, nn.Module], thr: float
) -> tuple[np.ndarray | None, np.ndarray]:
    """(units with some |γ| > thr, best |γ| per unit), or ``(None, ...)`` with no BatchNorm."""
    alive = np.zeros(g.size, dtype=bool)
    best = np.full(g.size, -np.inf)
    seen = False
    for path, s in _gamma_slots(g, bns):
        gamma = _gamma(bns[path]).numpy()[s.positions]
        np.logical_or.at(alive, s.units, gamma > thr)
        np.maximum.at(best, s.units, gamma)
        seen = True
    return (alive if seen else None), best


def _fill_report(
    report: SlimReport, model: nn.Module, graph: DependencyGraph, plan: PruningPlan, thr: float
) -> None:
    """Per-group and per-BatchNorm kept counts, and the BatchNorms the threshold empties."""
    bns = bn_modules(model)
    for g in graph.groups:
        names = sorted({p for p, _ in _gamma_slots(g, bns)})
        kept = len(plan.groups.get(g.id, {}).get("keep", range(g.size)))
        report.groups.append({"group": g.id, "bns": names, "size": g.size, "kept": kept})
    for name, m in bns.items():
        gamma = _gamma(m)
        kept_idx = plan.tensors.get(f"{name}.weight", {}).get(0)
        kept = gamma.numel() if kept_idx is None else len(kept_idx)
        above = int((gamma > thr).sum())
        report.bns.append({"bn": name, "size": gamma.numel(), "above": above, "kept": kept})
        if above == 0:
            report.collapsed_layers.append(name)
    report.collapsed = bool(report.collapsed_layers)
    report.removed = plan.removed_units()


def describe_plan(
    model: nn.Module, graph: DependencyGraph, plan: PruningPlan, *, method: str, percent: float
) -> SlimReport:
    """A :class:`SlimReport` for a plan chosen some other way (no threshold: ``nan``).

    Per-BatchNorm ``above`` counts are then against ``nan`` (0), so ``collapsed`` is not
    meaningful; ``kept`` and ``removed`` are.
    """
    report = SlimReport(method, float(percent), float("nan"), 0)
    _fill_report(report, model, graph, plan, float("nan"))
    report.collapsed, report.collapsed_layers = False, []
    return report


def slim_plan(
    model: nn.Module,
    graph: DependencyGraph,
    percent: float,
    *,
    method: str = "prunekit",
    floor: int = 1,
    round_to: int | None = None,
    count: str = "bn",
) -> tuple[PruningPlan, SlimReport]:
    """Dispatch to :func:`global_slim_plan` or :func:`reference_threshold_plan` by ``method``."""
    if method == "prunekit":
        return global_slim_plan(model, graph, percent, floor=floor, round_to=round_to, count=count)
    if method == "reference":
        return reference_threshold_plan(model, graph, percent)
    raise ConfigError(f"slimming threshold must be one of {METHODS}, got {method!r}")
