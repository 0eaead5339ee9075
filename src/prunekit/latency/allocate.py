"""Latency-target allocation: choose per-group widths that reach a measured latency.

MACs are a poor proxy for speed: thin layers are memory-bound, and widths that are not a
multiple of the vector width miss the fast kernels. This allocator prices channels with the
per-device :class:`~prunekit.latency.LatencyTable` instead:

1. every conv/linear layer's latency is looked up (measured once, then cached) at the widths
   the groups touching it could take;
2. greedily, the group step that buys the most estimated time per unit of importance lost
   (normalised scores of the removed units) is taken, until the estimate reaches the target
   (a step that makes a layer slower is never chosen for itself; a group may jump several
   widths at once when the next one alone buys nothing);
3. the greedy path is then *confirmed by measurement*: the pruned model is timed against the
   dense one (interleaved), the estimate is corrected by the measured/estimated ratio, and the
   point closest to the target is kept. The result reports target vs achieved.

Optionally the MACs-target allocator (:func:`~prunekit.plan.plan_for_target`) is searched for the
MACs reduction that runs *as fast as* the latency plan, so both can be compared at equal speed
(importance kept, MACs, params).

Example:
    >>> res = latency_target_plan(graph, scores, model, x, target=0.5, round_to=8)
    >>> print(res.summary())
    >>> apply_plan(model, res.plan)
"""

from __future__ import annotations

import copy
import glob
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from prunekit.allocators import AllocationRequest, _normalized
from prunekit.errors import ConfigError, PlanError
from prunekit.graph import DependencyGraph, Group
from prunekit.latency.measure import LatencyConfig, compare_latency
from prunekit.latency.table import LatencyTable, input_shapes, kind_of
from prunekit.plan import Allocation, PruningPlan, estimate, make_plan, plan_for_target
from prunekit.surgery import apply_plan

__all__ = ["LatencyTargetResult", "allocate_latency", "latency_target_plan", "parse_latency_target"]


def parse_latency_target(target: float | str) -> tuple[str, float]:
    """``0.5`` -> ``("fraction", 0.5)`` (of the dense latency); ``"12ms"`` -> ``("ms", 12.0)``."""
    if isinstance(target, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*ms\s*", target)
        if m is None:
            raise ConfigError(
                f"latency target {target!r} must be a fraction of the dense latency such as 0.5, "
                "or milliseconds such as '12ms'"
            )
        ms = float(m.group(1))
        if ms <= 0:
            raise ConfigError(f"latency target must be positive, got {target!r}")
        return "ms", ms
    if isinstance(target, bool) or not 0.0 < float(target) < 1.0:
        raise ConfigError(
            f"latency target fraction must be in (0, 1) (e.g. 0.5 = half the dense latency), "
            f"got {target!r}; give milliseconds as a string such as '12ms'"
        )
    return "fraction", float(target)


@dataclass
class LatencyTargetResult:
    """What :func:`latency_target_plan` chose and measured.

    Attributes:
        plan: the chosen plan (``meta`` records target and achieved latency).
        target_ms: the target in milliseconds.
        dense_ms: dense latency measured in the confirming runs.
        achieved_ms: measured latency of the plan's pruned model.
        estimated_ms: the table's estimate for that plan.
        trials: every measured point (``estimated_ms``, ``measured_ms``, ``dense_ms``).
        macs_comparison: the MACs-target plan at the same measured latency (or ``None``).
        table_measurements: layer timings that were not in the table yet.
    """

    plan: PruningPlan
    target_ms: float
    dense_ms: float
    achieved_ms: float
    estimated_ms: float
    trials: list[dict[str, float]] = field(default_factory=list)
    macs_comparison: dict[str, Any] | None = None
    table_measurements: int = 0

    @property
    def error(self) -> float:
        """Relative miss: ``achieved / target - 1``."""
        return self.achieved_ms / self.target_ms - 1.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the plan as its own JSON dict)."""
        d = asdict(self)
        d["plan"] = self.plan.to_dict()
        d["error"] = self.error
        return d

    def summary(self) -> str:
        """Target vs achieved, and the MACs-target comparison when made."""
        lines = [
            f"latency target {self.target_ms:.2f} ms: achieved {self.achieved_ms:.2f} ms "
            f"({self.error:+.1%}), dense {self.dense_ms:.2f} ms, "
            f"speed-up {self.dense_ms / self.achieved_ms:.2f}x"
        ]
        c = self.macs_comparison
        if c:
            lines.append(
                f"  latency plan: importance kept {c['latency']['importance_kept']:.1%}, MACs "
                f"kept {c['latency']['macs_kept']:.1%}, params kept {c['latency']['params_kept']:.1%}"
            )
            lines.append(
                f"  MACs plan at {c['macs']['measured_ms']:.2f} ms: importance kept "
                f"{c['macs']['importance_kept']:.1%}, MACs kept {c['macs']['macs_kept']:.1%}, "
                f"params kept {c['macs']['params_kept']:.1%}"
            )
        return "\n".join(lines)


@dataclass
class _Layer:
    module: nn.Module
    weight: str
    input_shape: tuple[int, ...]
    shape: tuple[int, ...]
    slots: list[tuple[int, int, np.ndarray]]  # (group index, weight dim, units of that slot)


class _CostModel:
    """Estimated time of every layer at given group widths, from the latency table.

    Each layer is timed along each of its prunable weight dims alone (all candidate widths of
    the group on that dim, in one interleaved batch), and its time at any widths is taken as
    separable: ``t(c_in, c_out) = t_dense · f_in(c_in) · f_out(c_out)`` — two short curves per
    layer instead of a grid, measured consistently.
    """

    def __init__(
        self,
        model: nn.Module,
        inputs: Any,
        graph: DependencyGraph,
        groups: list[Group],
        ranks: list[np.ndarray],
        cands: list[list[int]],
        table: LatencyTable,
    ) -> None:
        self.ranks = ranks
        mods = {n: m for n, m in model.named_modules() if n and kind_of(m) is not None}
        shapes = input_shapes(model, inputs, mods)
        gi = {g.id: i for i, g in enumerate(groups)}
        self.layers: list[_Layer] = []
        for name, mod in mods.items():
            wn = f"{name}.weight"
            if name not in shapes or wn not in graph.tensor_shapes:
                continue
            slots = [(gi[g.id], s.dim, s.units) for g in groups for s in g.slots if s.tensor == wn]
            self.layers.append(_Layer(mod, wn, shapes[name], tuple(graph.tensor_shapes[wn]), slots))
        self.of_group: list[list[int]] = [[] for _ in groups]
        for li, layer in enumerate(self.layers):
            for g, _, _ in layer.slots:
                if li not in self.of_group[g]:
                    self.of_group[g].append(li)
        # (layer, dim) -> {size along dim: fraction of the dense time}
        self.curve: dict[tuple[int, int], dict[int, float]] = {}
        self.dense: list[float] = []
        for li, layer in enumerate(tqdm(self.layers, desc="latency table", leave=False,
                                        disable=None)):  # fmt: skip
            self.dense.append(table.lookup(layer.module, layer.input_shape))
            self._measure_curves(li, layer, cands, table)

    def _measure_curves(
        self, li: int, layer: _Layer, cands: list[list[int]], table: LatencyTable
    ) -> None:
        for d in sorted({dim for _, dim, _ in layer.slots}):
            sizes = {layer.shape[d]}
            for g, dim, _ in layer.slots:
                if dim == d:
                    sizes |= {self._dim_size(layer, d, {g: w}) for w in cands[g]}
            todo = sorted(sizes)
            shapes = [tuple(n if k == d else s for k, s in enumerate(layer.shape)) for n in todo]
            ms = table.lookup_many(layer.module, layer.input_shape, shapes)
            base = self.dense[li]
            self.curve[(li, d)] = {n: t / base if base > 0 else 1.0 for n, t in zip(todo, ms)}

    def _dim_size(self, layer: _Layer, d: int, widths: Mapping[int, int]) -> int:
        n = layer.shape[d]
        for g, dim, units in layer.slots:
            if dim == d and g in widths:
                n -= int((self.ranks[g][units] >= widths[g]).sum())
        return n

    def layer_ms(self, li: int, widths: list[int]) -> float:
        layer = self.layers[li]
        t = self.dense[li]
        all_w = dict(enumerate(widths))
        for d in {dim for _, dim, _ in layer.slots}:
            n = self._dim_size(layer, d, all_w)
            curve = self.curve[(li, d)]
            t *= curve[n] if n in curve else _interp(curve, n)
        return t

    def total(self, widths: list[int]) -> float:
        return sum(self.layer_ms(li, widths) for li in range(len(self.layers)))

    def saving(self, g: int, widths: list[int], new: int) -> float:
        """Estimated ms saved by moving group ``g`` to width ``new``."""
        trial = list(widths)
        trial[g] = new
        return sum(self.layer_ms(li, widths) - self.layer_ms(li, trial) for li in self.of_group[g])


def _interp(curve: Mapping[int, float], n: int) -> float:
    """Linear interpolation of a measured width curve (two groups sharing a dim can combine to a
    size that was not timed)."""
    xs = sorted(curve)
    return float(np.interp(n, xs, [curve[x] for x in xs]))


def _candidate_widths(
    size: int, floor: int, round_to: int | None, steps: int, max_ratio: float
) -> list[int]:
    """Widths a group may take, largest first (``size`` itself included)."""
    lo = min(size, max(floor, math.ceil(size * (1.0 - max_ratio) - 1e-9)))
    if round_to and round_to > 1:
        ws = {w for w in range(round_to, size, round_to) if w >= lo} | {size}
        if len(ws) <= 1:
            ws |= {lo}  # a group smaller than round_to may still shrink
    else:
        ws = {max(lo, size - math.ceil(i * size / steps)) for i in range(steps)} | {size}
    return sorted(ws, reverse=True)


def _greedy_path(
    cost: _CostModel,
    sizes: list[int],
    cands: list[list[int]],
    imp: list[np.ndarray],
    stop_ms: float,
    lookahead: int = 8,
) -> list[tuple[list[int], float]]:
    """Greedy steps (widths, estimated table ms) from dense down to ``stop_ms`` (or the floor)."""
    widths = list(sizes)
    pos = [0] * len(sizes)  # index into cands of each group's current width
    est = cost.total(widths)
    path = [(list(widths), est)]
    best: dict[int, tuple[float, int]] = {}

    def rate(g: int) -> tuple[float, int]:
        top = (-math.inf, 0)
        for j in range(1, lookahead + 1):
            if pos[g] + j >= len(cands[g]):
                break
            new = cands[g][pos[g] + j]
            gain = cost.saving(g, widths, new)
            lost = float(imp[g][new : widths[g]].sum())
            r = gain / max(lost, 1e-12)
            if gain > 0 and r > top[0]:  # ties go to the smaller step
                top = (r, j)
        return top

    for g in range(len(sizes)):
        best[g] = rate(g)
    bar = tqdm(desc="latency allocation", unit="step", leave=False, disable=None)
    while est > stop_ms:
        g = max(best, key=lambda k: best[k][0])
        if best[g][0] == -math.inf:
            break  # no step saves time any more
        pos[g] += best[g][1]
        widths[g] = cands[g][pos[g]]
        touched = {h for li in cost.of_group[g] for h, _, _ in cost.layers[li].slots} | {g}
        for h in touched:
            best[h] = rate(h)
        est = cost.total(widths)
        path.append((list(widths), est))
        bar.update()
    bar.close()
    return path


def _plan_for_widths(
    graph: DependencyGraph,
    scores: Mapping[str, torch.Tensor],
    groups: list[Group],
    widths: list[int],
    normalize: str | None,
) -> PruningPlan:
    """The plan keeping ``widths[i]`` top-scored units of each group (through make_plan)."""
    over = {
        glob.escape(g.id): (g.size - w) / g.size for g, w in zip(groups, widths) if w < g.size
    }
    plan = make_plan(graph, scores, Allocation(ratio=0.0, overrides=over, normalize=normalize))
    for g, w in zip(groups, widths):
        if len(plan.groups[g.id]["keep"]) != w:  # never a silently different plan
            raise PlanError(f"latency plan for {g.id!r}: wanted {w} units, plan keeps "
                            f"{len(plan.groups[g.id]['keep'])}")  # fmt: skip
    return plan


def _measure(
    model: nn.Module, inputs: Any, plan: PruningPlan, config: LatencyConfig
) -> tuple[float, float]:
    """(dense ms, pruned ms), timed interleaved."""
    pruned = apply_plan(copy.deepcopy(model), plan)
    s = compare_latency({"dense": model, "pruned": pruned}, inputs, config)
    return s["dense"].median_ms, s["pruned"].median_ms


def latency_target_plan(
    graph: DependencyGraph,
    scores: Mapping[str, torch.Tensor],
    model: nn.Module,
    example_inputs: Any,
    *,
    target: float | str = 0.5,
    table: LatencyTable | None = None,
    round_to: int | None = None,
    floor: int = 1,
    max_ratio: float = 0.8,
    steps: int = 16,
    normalize: str | None = "mean",
    config: LatencyConfig | None = None,
    tol: float = 0.03,
    max_trials: int = 6,
    compare_macs: bool = False,
) -> LatencyTargetResult:
    """Choose widths reaching a latency target, priced with the latency table, then measured.

    Args:
        graph: the dependency graph of ``model``.
        scores: group id -> per-unit importance (groups without a score keep all units).
        model: the dense model (left unchanged; copies are pruned and timed).
        example_inputs: inputs to time on (their device is the device timed).
        target: a fraction of the dense latency in (0, 1), or milliseconds as ``"12ms"``.
        table: the latency table (default: this device's cached table; saved afterwards).
        round_to: widths are multiples of this (or the full width), for hardware that likes
            multiples (vector width, tensor cores).
        floor: units every group keeps.
        max_ratio: the largest fraction of any group removed. Without it the greedy empties the
            thin early layers first (each of their channels costs the most time per unit of
            importance at full resolution), which costs accuracy out of proportion.
        steps: without ``round_to``, the number of widths tried per group.
        normalize: per-group score normalisation, as in :class:`~prunekit.plan.Allocation`.
        config: timing settings for the confirming measurements.
        tol: stop refining once the measured latency is within this fraction of the target.
        max_trials: most confirming measurements.
        compare_macs: also find the MACs-target plan with the same measured latency.

    Returns:
        A :class:`LatencyTargetResult`; ``result.plan.meta`` records target and achieved.

    Raises:
        ConfigError: a malformed target.

    Example:
        >>> res = latency_target_plan(graph, score(model, graph, "l2"), model, x, target=0.6)
        >>> res.achieved_ms / res.dense_ms
        0.61
    """
    kind, value = parse_latency_target(target)
    if floor < 1:
        raise ConfigError(f"floor must be >= 1, got {floor}")
    if not 0.0 < max_ratio < 1.0:
        raise ConfigError(f"max_ratio must be in (0, 1), got {max_ratio}")
    cfg = config or LatencyConfig(warmup=3, repeats=15)
    own = table is None
    tab = table or LatencyTable(config=LatencyConfig(threads=cfg.threads, warmup=3, repeats=15,
                                                     min_seconds=0.05))  # fmt: skip
    measured0 = tab.measured
    groups = [g for g in graph.groups if g.id in scores]
    norm = [_normalized(scores[g.id], normalize).numpy() for g in groups]
    order = [np.argsort(-n, kind="stable") for n in norm]
    ranks = [np.argsort(o, kind="stable") for o in order]
    imp = [n[o] for n, o in zip(norm, order)]  # importance by rank, highest first
    sizes = [g.size for g in groups]
    cands = [_candidate_widths(s, floor, round_to, steps, max_ratio) for s in sizes]
    cost = _CostModel(model, example_inputs, graph, groups, ranks, cands, tab)
    dense_plan = _plan_for_widths(graph, scores, groups, [g.size for g in groups], normalize)
    dense_ms, _ = _measure(model, example_inputs, dense_plan, cfg)
    target_ms = value * dense_ms if kind == "fraction" else value
    table_dense = cost.total(sizes)
    # The table covers conv/linear time only; the rest of the model (norms, activations) is
    # taken to shrink with it, so the model's time is estimated as dense x table ratio. Go on
    # past the target, so the measured correction has room on both sides.
    path = _greedy_path(cost, sizes, cands, imp, table_dense * min(1.0, target_ms / dense_ms) * 0.7)
    if own and tab.measured:
        tab.save()
    return _confirm(graph, scores, model, example_inputs, groups, path, target_ms, table_dense,
                    dense_ms, cfg, tol, max_trials, normalize, compare_macs,
                    tab.measured - measured0)  # fmt: skip


def _confirm(
    graph: DependencyGraph,
    scores: Mapping[str, torch.Tensor],
    model: nn.Module,
    inputs: Any,
    groups: list[Group],
    path: list[tuple[list[int], float]],
    target_ms: float,
    table_dense: float,
    dense_ms: float,
    cfg: LatencyConfig,
    tol: float,
    max_trials: int,
    normalize: str | None,
    compare_macs: bool,
    new_entries: int,
) -> LatencyTargetResult:
    """Walk the greedy path with real measurements until the target is met (see module doc)."""
    est = [dense_ms * t / table_dense for _, t in path]  # model-level estimate per step
    goal, trials, tried = target_ms, [], set()
    best: tuple[float, int, float, float] | None = None  # (|miss|, step, dense, measured)
    for _ in range(max_trials):
        near = sorted((k for k in range(len(est)) if k not in tried),
                      key=lambda k: abs(est[k] - goal))  # fmt: skip
        if not near:
            break
        i = near[0]
        tried.add(i)
        plan = _plan_for_widths(graph, scores, groups, path[i][0], normalize)
        d_ms, p_ms = _measure(model, inputs, plan, cfg)
        got = p_ms * dense_ms / d_ms  # rescaled to the first dense measurement (drift)
        trials.append({"step": i, "estimated_ms": est[i], "measured_ms": got, "dense_ms": d_ms})
        miss = abs(got / target_ms - 1.0)
        if best is None or miss < best[0]:
            best = (miss, i, d_ms, got)
        if miss <= tol:
            break
        goal = est[i] * target_ms / got  # correct the estimate by what was measured
    assert best is not None
    _, i, _, got = best
    plan = _plan_for_widths(graph, scores, groups, path[i][0], normalize)
    plan.meta.update({"allocator": "latency", "target_ms": target_ms, "achieved_ms": got,
                      "dense_ms": dense_ms, "estimated_ms": est[i]})  # fmt: skip
    res = LatencyTargetResult(plan, target_ms, dense_ms, got, est[i], trials,
                              table_measurements=new_entries)  # fmt: skip
    if compare_macs:
        res.macs_comparison = _macs_at_same_latency(graph, scores, model, inputs, res, cfg,
                                                    normalize, max_trials)  # fmt: skip
    return res


def _kept(graph: DependencyGraph, scores: Mapping[str, torch.Tensor], plan: PruningPlan,
          normalize: str | None) -> dict[str, float]:  # fmt: skip
    """Importance, MACs and params kept by ``plan`` (fractions of the dense model)."""
    dense, after = estimate(graph), estimate(graph, plan)
    tot = kept = 0.0
    for gid, s in scores.items():
        if gid in plan.groups:
            n = _normalized(s, normalize)
            tot += float(n.sum())
            kept += float(n[plan.groups[gid]["keep"]].sum())
    return {"importance_kept": kept / tot if tot else 1.0,
            "macs_kept": after["macs"] / dense["macs"] if dense["macs"] else 1.0,
            "params_kept": after["params"] / dense["params"] if dense["params"] else 1.0}  # fmt: skip


def _macs_at_same_latency(
    graph: DependencyGraph,
    scores: Mapping[str, torch.Tensor],
    model: nn.Module,
    inputs: Any,
    res: LatencyTargetResult,
    cfg: LatencyConfig,
    normalize: str | None,
    max_trials: int,
) -> dict[str, Any]:
    """Bisect the MACs reduction whose measured latency matches the latency plan's."""
    lo, hi = 0.0, 0.95
    best: tuple[float, PruningPlan, float] | None = None
    for _ in range(max_trials):
        mid = (lo + hi) / 2
        plan = plan_for_target(graph, scores, target="macs", reduction=mid, normalize=normalize)
        d_ms, p_ms = _measure(model, inputs, plan, cfg)
        got = p_ms * res.dense_ms / d_ms
        miss = abs(got / res.achieved_ms - 1.0)
        if best is None or miss < best[0]:
            best = (miss, plan, got)
        if miss <= 0.03:
            break
        lo, hi = (mid, hi) if got > res.achieved_ms else (lo, mid)
    assert best is not None
    _, plan, got = best
    macs = {**_kept(graph, scores, plan, normalize), "measured_ms": got,
            "reduction": plan.meta.get("achieved")}  # fmt: skip
    lat = {**_kept(graph, scores, res.plan, normalize), "measured_ms": res.achieved_ms}
    return {"latency": lat, "macs": macs}


def allocate_latency(req: AllocationRequest, kind: str) -> dict[str, int]:
    """The ``latency``/``latency_ms`` allocators: keep counts of :func:`latency_target_plan`.

    Args:
        req: the allocation request; its ``context`` must hold ``model`` and
            ``example_inputs`` (as :func:`prunekit.pipeline.prune` passes them).
        kind: ``"fraction"`` (target = fraction of the dense latency) or ``"ms"``.

    Returns:
        Kept units per scored group; target vs achieved go into the plan's meta.
    """
    model, inputs = req.context.get("model"), req.context.get("example_inputs")
    if model is None or inputs is None:
        raise ConfigError(
            "the latency allocators time the model: use prunekit.pipeline.prune, or pass "
            "make_plan(..., context={'model': model, 'example_inputs': x})"
        )
    goal = float(req.alloc.target or 0.0)
    res = latency_target_plan(
        req.graph,
        req.scores,
        model,
        inputs,
        target=goal if kind == "fraction" else f"{goal}ms",
        round_to=req.alloc.round_to,
        floor=req.alloc.floor,
        normalize=req.alloc.normalize,
    )
    req.meta.update(
        {"target_ms": res.target_ms, "achieved_ms": res.achieved_ms, "dense_ms": res.dense_ms}
    )
    return {gid: len(res.plan.groups[gid]["keep"]) for gid in req.scores}
