"""Structure masks inside single tensors: zero whole filters, channels, rows, columns, kernels or
blocks of a weight without touching any other layer (no dependency graph, nothing sliced).

This is structured sparsity as a mask — what Distiller's ranked pruners do to a weight before
thinning, its Rows pruning of a Linear layer, its block pruning and its group thresholding
(``StructureParameterPruner``). Physically removing units through the graph is
:mod:`prunekit.structured`'s job instead.

A *structure* of a weight ``w``:

* ``filters`` / ``rows``: one slice along dim 0 (an output channel / a row of a 2-D weight);
* ``channels`` / ``cols``: one slice along dim 1 (an input channel / a column);
* ``kernels``: one ``(filter, channel)`` kernel of a conv weight (Distiller's 2D);
* ``blocks`` with ``block_shape = [r, d, 1, 1]``: ``r·d`` consecutive ``(filter, channel)``
  entries at one kernel position when ``d > 1``, or ``r`` consecutive filters at one
  ``(channel, kernel position)`` when ``d == 1`` (Distiller's block layout).

Example:
    >>> masks = group_masks({"fc.weight": w}, {"fc.weight": 0.5}, "cols")   # half the columns
    >>> masks["fc.weight"][:, 0].all() or not masks["fc.weight"][:, 0].any()
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from prunekit.errors import ConfigError
from prunekit.sparse.criteria import Rounding, pruned_count

Structure = Literal["filters", "channels", "rows", "cols", "kernels", "blocks"]
STRUCTURES: tuple[str, ...] = ("filters", "channels", "rows", "cols", "kernels", "blocks")


@dataclass(frozen=True)
class _View:
    """A tensor seen as ``[structures, entries]`` plus how to expand a per-structure keep."""

    flat: Tensor  # [n_structures, entries per structure]
    expand: Callable[[Tensor], Tensor]  # per-structure values → a tensor shaped like the weight


def _view(w: Tensor, structure: str, block_shape: Sequence[int] | None) -> _View:
    if structure in ("rows", "cols") and w.dim() != 2:
        raise ConfigError(
            f"{structure} are structures of 2-D (Linear) weights, got shape {tuple(w.shape)}"
        )
    if structure in ("kernels", "blocks") and w.dim() != 4:
        raise ConfigError(
            f"{structure} are structures of 4-D (conv) weights, got shape {tuple(w.shape)}"
        )
    if structure in ("filters", "rows"):
        shape = [w.shape[0]] + [1] * (w.dim() - 1)
        return _View(w.reshape(w.shape[0], -1), lambda v: v.view(shape).expand_as(w))
    if structure in ("channels", "cols"):
        shape = [1, w.shape[1]] + [1] * (w.dim() - 2)
        flat = w.transpose(0, 1).reshape(w.shape[1], -1)
        return _View(flat, lambda v: v.view(shape).expand_as(w))
    if structure == "kernels":
        f, c = w.shape[:2]
        return _View(w.reshape(f * c, -1), lambda v: v.view(f, c, 1, 1).expand_as(w))
    if structure == "blocks":
        return _blocks(w, block_shape)
    raise ConfigError(f"unknown structure {structure!r}; use one of {', '.join(STRUCTURES)}")


def _blocks(w: Tensor, block_shape: Sequence[int] | None) -> _View:
    if block_shape is None or len(block_shape) != 4 or list(block_shape[2:]) != [1, 1]:
        raise ConfigError(f"block_shape must be [repetitions, depth, 1, 1], got {block_shape}")
    r, d = int(block_shape[0]), int(block_shape[1])
    f, c, k = w.shape[0], w.shape[1], w.shape[2] * w.shape[3]
    size = r * d
    if (f * c) % size or (d == 1 and f % r):
        raise ConfigError(f"block_shape {list(block_shape)} does not tile weight {tuple(w.shape)}")
    if d > 1:  # r·d consecutive (filter, channel) entries at one kernel position
        v = w.reshape(f * c // size, size, k)
        flat = v.transpose(1, 2).reshape(-1, size)
        n = v.shape[0]
        return _View(
            flat, lambda b: b.view(n, k, 1).expand(n, k, size).transpose(1, 2).reshape(w.shape)
        )
    v = w.reshape(f // r, r, c * k)  # r consecutive filters at one (channel, kernel position)
    flat = v.transpose(1, 2).reshape(-1, r)
    n = v.shape[0]
    return _View(
        flat, lambda b: b.view(n, c * k, 1).expand(n, c * k, r).transpose(1, 2).reshape(w.shape)
    )


def structure_scores(
    w: Tensor,
    structure: str,
    norm: Literal["l1", "l2", "mean_abs", "max"] = "l1",
    block_shape: Sequence[int] | None = None,
) -> Tensor:
    """One score per structure of ``w``: L1 or L2 norm, mean |w| or max |w|."""
    flat = _view(w.detach().float(), structure, block_shape).flat
    if norm == "l1":
        return flat.abs().sum(1)
    if norm == "l2":
        return flat.square().sum(1).sqrt()
    if norm == "mean_abs":
        return flat.abs().mean(1)
    if norm == "max":
        return flat.abs().amax(1)
    raise ConfigError(f"unknown structure norm {norm!r}; use l1, l2, mean_abs or max")


def expand(
    w: Tensor, structure: str, values: Tensor, block_shape: Sequence[int] | None = None
) -> Tensor:
    """A tensor shaped like ``w`` holding each structure's value (e.g. a keep map)."""
    return _view(w, structure, block_shape).expand(values).clone()


def _alive(
    current: Tensor | None, structure: str, block_shape: Sequence[int] | None
) -> Tensor | None:
    if current is None:
        return None
    return _view(current.float(), structure, block_shape).flat.amax(1) > 0


def group_masks(
    weights: Mapping[str, Tensor],
    amounts: Mapping[str, float],
    structure: str,
    *,
    criterion: Literal["l1", "l2", "random", "bernoulli"] = "l1",
    thresholds: Literal["mean_abs", "max"] | None = None,
    block_shape: Sequence[int] | None = None,
    current: Mapping[str, Tensor] | None = None,
    rounding: Rounding = "floor",
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Masks that zero whole structures of each tensor.

    Args:
        weights: name → weight (read only).
        amounts: name → fraction of structures to prune, or with ``thresholds`` the cut-off: a
            structure whose mean |w| (``mean_abs``) or max |w| (``max``) is at most it is pruned
            (Distiller's group thresholding).
        structure: ``filters``, ``channels``, ``rows``, ``cols``, ``kernels`` or ``blocks``.
        criterion: rank by ``l1`` / ``l2`` norm or at ``random`` and prune the lowest
            ``int(s·n)`` (``rounding``); ``bernoulli`` keeps each structure with probability
            1 − s and scales the kept ones by n/kept (DropFilter, Chen et al. 2018,
            arXiv:1810.09849; Distiller's BernoulliFilterPruner) — the only float masks.
        thresholds: threshold mode instead of a fraction.
        block_shape: ``[repetitions, depth, 1, 1]`` for ``blocks``.
        current: keep-masks in force; structures pruned there rank lowest (stay pruned).
        rounding: ``floor`` (Distiller's ``int(s·n)``, default) or ``round``.
        generator: random source for ``random``/``bernoulli``.

    Returns:
        name → mask shaped like the weight (bool; float for ``bernoulli``).
    """
    out: dict[str, Tensor] = {}
    for name, w in weights.items():
        amount = float(amounts[name])
        if thresholds is not None:
            keep = structure_scores(w, structure, thresholds, block_shape) > amount
        elif criterion == "bernoulli":
            out[name] = _bernoulli(w, structure, amount, block_shape, generator)
            continue
        else:
            alive = _alive((current or {}).get(name), structure, block_shape)
            keep = _ranked_keep(
                w, structure, amount, criterion, block_shape, rounding, generator, alive
            )
        alive = _alive((current or {}).get(name), structure, block_shape)
        if alive is not None:
            keep = keep & alive.to(keep.device)
        out[name] = expand(w, structure, keep, block_shape).to(w.device)
    return out


def _ranked_keep(
    w: Tensor,
    structure: str,
    amount: float,
    criterion: str,
    block_shape: Sequence[int] | None,
    rounding: Rounding,
    generator: torch.Generator | None,
    alive: Tensor | None,
) -> Tensor:
    if criterion == "random":
        n = _view(w, structure, block_shape).flat.shape[0]
        scores = torch.rand(n, generator=generator, dtype=torch.float64)
    else:
        scores = structure_scores(w, structure, "l2" if criterion == "l2" else "l1", block_shape)
        scores = scores.double().cpu()
    if alive is not None:
        scores = scores.masked_fill(~alive.cpu(), -math.inf)  # pruned structures stay pruned
    k = pruned_count(amount, scores.numel(), rounding)
    keep = torch.ones(scores.numel(), dtype=torch.bool)
    if k:
        keep[torch.argsort(scores, stable=True)[:k]] = False
    return keep


def _bernoulli(
    w: Tensor,
    structure: str,
    drop: float,
    block_shape: Sequence[int] | None,
    generator: torch.Generator | None,
) -> Tensor:
    n = _view(w, structure, block_shape).flat.shape[0]
    keep = torch.bernoulli(torch.full((n,), 1.0 - drop), generator=generator)
    kept = float(keep.sum())
    scale = keep * (n / kept) if kept else keep  # kept filters carry the dropped ones' share
    return expand(w, structure, scale.to(w.dtype), block_shape).to(w.device)
