"""Attention heads in the dependency graph.

An attention block is traced as one opaque module op (:func:`prunekit.graph.tracer.
register_module_op`): its inner products, head splits and softmax are not followed op by op —
they would freeze every channel they touch — because the block's meaning is known. Its exit
handler records:

* the input projections' columns coupled to the channels of their inputs (the residual stream),
* one unit per *key/value head group*: the key and value channels of kv head ``g``, the query
  channels of the query heads that read it (``h // (heads / kv_heads) == g``, grouped-query
  attention), the output projection's input columns of those heads, and per-head tensors
  (relative position bias tables, logit scales, gates, a norm over the heads' outputs),
* the output projection's rows as the output's channels.

Zeroing a head in soft mode zeros its queries, keys and values; its softmax then spreads evenly
over zero values and its output columns are zero too, so it contributes exactly what its
removal does. Heads are removed whole, so the head dimension and hence the softmax scale stay
the original constant (``scaled_dot_product_attention``'s default scale included).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from prunekit.graph.labels import along
from prunekit.graph.tracer import Tracer, iter_tensors


@dataclass
class Heads:
    """Labels of one attention call's channels, per head.

    Attributes:
        q: ``(heads, head_dim)`` query channels.
        k: ``(kv_heads, head_dim)`` key channels.
        v: ``(kv_heads, v_head_dim)`` value channels.
        out: ``(heads, v_head_dim)`` input columns of the output projection.
        per_head: other entries tied to query heads, each ``(heads, m)``.
    """

    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    out: np.ndarray
    per_head: list[np.ndarray] = field(default_factory=list)

    def arrays(self) -> list[np.ndarray]:
        """Every label array of these heads."""
        return [self.q, self.k, self.v, self.out, *self.per_head]


def couple_heads(tr: Tracer, heads: Heads) -> None:
    """Make each key/value head group one unit (see the module docstring)."""
    groups = heads.k.shape[0]
    if heads.q.shape[0] % groups or heads.v.shape[0] != groups:
        tr.freeze(np.concatenate([a.reshape(-1) for a in heads.arrays()]), "uneven head groups")
        return
    rep = heads.k[:, :1]
    for a in heads.arrays():
        grouped = a.reshape(groups, -1)  # query heads are contiguous per kv head
        tr.merge(grouped, np.broadcast_to(rep, grouped.shape))


def freeze_heads(tr: Tracer, heads: Heads, reason: str) -> None:
    """Keep every head (the block's input and output channels may still be pruned)."""
    tr.freeze(np.concatenate([a.reshape(-1) for a in heads.arrays()]), reason)


def tokens_per_sample(x: torch.Tensor, batch_dim: int | None = 0) -> float:
    """Positions a projection is applied at per sample (for MACs)."""
    batch = x.shape[batch_dim] if batch_dim is not None and x.dim() > 2 else 1
    return x.numel() / max(1, x.shape[-1]) / max(1, batch)


def linear_rows(
    tr: Tracer, inputs: Iterable[torch.Tensor], w: torch.Tensor, b: Any, tokens: float
) -> np.ndarray:
    """Couple ``F.linear(x, w, b)`` for each of ``inputs`` and return the output-row labels."""
    name = tr.name_of(w)
    assert name is not None  # checked by the caller (named_or_none)
    cols = tr.slot(name, 1, w.shape[1])
    seen: set[int] = set()
    for x in inputs:
        if id(x) not in seen:
            seen.add(id(x))
            tr.merge_rows(along(tr.labels(x), x.dim() - 1, x.shape[-1]), cols)
    rows = tr.slot(name, 0, w.shape[0])
    bias_rows(tr, b, rows)
    tr.macs_per_weight[name] = tokens
    return rows


def bias_rows(tr: Tracer, b: Any, rows: np.ndarray) -> None:
    """Couple bias ``b`` (a parameter of ``rows.size`` entries, or None) with ``rows``."""
    name = tr.name_of(b)
    if name is not None:
        tr.merge(tr.slot(name, 0, rows.size), rows)


def out_projection(
    tr: Tracer, w: torch.Tensor, b: Any, out: Any, tokens: float
) -> tuple[np.ndarray, np.ndarray]:
    """Input columns and output rows of the output projection; labels ``out`` with the rows."""
    name = tr.name_of(w)
    assert name is not None
    cols, rows = tr.slot(name, 1, w.shape[1]), tr.slot(name, 0, w.shape[0])
    bias_rows(tr, b, rows)
    tr.macs_per_weight[name] = tokens
    if isinstance(out, torch.Tensor):
        tr.set_labels(out, torch.from_numpy(rows.copy()).reshape((1,) * (out.dim() - 1) + (-1,)))
    return cols, rows


def named_or_none(tr: Tracer, tensors: Sequence[Any]) -> bool:
    """Whether every tensor among ``tensors`` is a parameter of the model (None is fine)."""
    return all(t is None or tr.name_of(t) is not None for t in tensors)


def opaque_fallback(tr: Tracer, args: Any, kwargs: Any, output: Any, reason: str) -> None:
    """Keep the channels through an attention block whole (its kind is not understood)."""
    for t in iter_tensors((args, kwargs)):
        tr.freeze(tr.known_labels(t), reason)
    for t in iter_tensors(output):
        tr.set_labels(t, torch.zeros((1,) * t.dim(), dtype=torch.int64))
