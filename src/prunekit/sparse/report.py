"""Sparsity report: non-zeros per parameter and in total, as a text table or JSON.

The table follows the classic ``print_nonzeros`` of Han et al.'s re-implementations and
Distiller's sparsity table: one row per parameter with its shape, size, non-zeros, the share
pruned and the compression ``numel / nonzero``, then a total row.

Example:
    >>> print(sparsity_report(model).to_table())
    >>> sparsity_report(model).compression    # e.g. 12.4 (total parameters / non-zeros)
"""

from __future__ import annotations

import fnmatch
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from prunekit.errors import ConfigError
from prunekit.sparse.masks import merge_masked_state_dict, parameter_names

# State-dict entries that are buffers, not parameters, in the usual torch layers; a bare state
# dict (a safetensors file) does not say which is which.
_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def _ratio(numel: int, nonzero: int) -> float:
    return numel / nonzero if nonzero else math.inf


@dataclass(frozen=True)
class SparsityRow:
    """Counts for one parameter tensor."""

    name: str
    shape: tuple[int, ...]
    numel: int
    nonzero: int

    @property
    def pruned_pct(self) -> float:
        """Share of zero entries, in percent."""
        return 100.0 * (self.numel - self.nonzero) / self.numel if self.numel else 0.0

    @property
    def compression(self) -> float:
        """``numel / nonzero`` (``inf`` when everything is zero)."""
        return _ratio(self.numel, self.nonzero)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (``compression`` is None when infinite)."""
        comp = self.compression
        return {
            "name": self.name,
            "shape": list(self.shape),
            "numel": self.numel,
            "nonzero": self.nonzero,
            "pruned_pct": round(self.pruned_pct, 4),
            "compression": None if math.isinf(comp) else round(comp, 4),
        }


@dataclass(frozen=True)
class SparsityReport:
    """Per-parameter rows plus totals; build it with :func:`sparsity_report`."""

    rows: tuple[SparsityRow, ...]

    @property
    def numel(self) -> int:
        """Total number of entries."""
        return sum(r.numel for r in self.rows)

    @property
    def nonzero(self) -> int:
        """Total number of non-zero entries."""
        return sum(r.nonzero for r in self.rows)

    @property
    def sparsity(self) -> float:
        """Share of zeros over all rows, in [0, 1]."""
        return 1.0 - self.nonzero / self.numel if self.numel else 0.0

    @property
    def compression(self) -> float:
        """Total entries / non-zero entries."""
        return _ratio(self.numel, self.nonzero)

    def total(self) -> SparsityRow:
        """The totals as a row named ``"total"``."""
        return SparsityRow("total", (), self.numel, self.nonzero)

    def to_dict(self) -> dict[str, Any]:
        """``{"rows": [...], "total": {...}}``."""
        total = self.total().to_dict()
        del total["shape"], total["name"]
        return {"rows": [r.to_dict() for r in self.rows], "total": total}

    def to_json(self, indent: int | None = 2) -> str:
        """The report as JSON text."""
        return json.dumps(self.to_dict(), indent=indent)

    def to_table(self) -> str:
        """Aligned plain-text table, one line per parameter and a total line."""
        head = ("name", "shape", "numel", "nonzero", "pruned %", "compression")
        lines = [_cells(r) for r in self.rows]
        total = _cells(self.total())
        widths = [max(len(c[i]) for c in [head, *lines, total]) for i in range(len(head))]

        def fmt(cells: tuple[str, ...]) -> str:
            first = cells[0].ljust(widths[0])
            return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:]))])

        rule = "-" * len(fmt(head))
        return "\n".join([fmt(head), rule, *map(fmt, lines), rule, fmt(total)])


def _cells(row: SparsityRow) -> tuple[str, ...]:
    shape = "x".join(map(str, row.shape)) if row.shape else ""
    comp = "inf" if math.isinf(row.compression) else f"{row.compression:.2f}x"
    return (row.name, shape, f"{row.numel:,}", f"{row.nonzero:,}", f"{row.pruned_pct:.2f}", comp)


def _row(name: str, t: Tensor) -> SparsityRow:
    return SparsityRow(name, tuple(t.shape), t.numel(), int(torch.count_nonzero(t.detach())))


def sparsity_report(
    source: nn.Module | Mapping[str, Tensor], *, params: Iterable[str] | None = None
) -> SparsityReport:
    """Count non-zeros of every parameter of a model, or of the float tensors of a state dict.

    Args:
        source: a model (masked or not; masked parameters are counted after masking) or a
            state dict such as one read from a safetensors file (masked entries are merged;
            BatchNorm running statistics and non-float tensors are skipped).
        params: optional names / glob patterns restricting the rows.

    Returns:
        A :class:`SparsityReport`.

    Raises:
        ConfigError: ``params`` matches nothing.
    """
    if isinstance(source, nn.Module):
        tensors = {n: _get(source, n) for n in parameter_names(source)}
    else:
        tensors = {
            k: v
            for k, v in merge_masked_state_dict(source).items()
            if v.is_floating_point() and not k.endswith(_BUFFER_SUFFIXES)
        }
    if params is not None:
        patterns = [params] if isinstance(params, str) else list(params)
        keep = {n for n in tensors for p in patterns if n == p or fnmatch.fnmatchcase(n, p)}
        if not keep:
            raise ConfigError(
                f"params {patterns} match no tensor; names look like {list(tensors)[:4]}"
            )
        tensors = {n: t for n, t in tensors.items() if n in keep}
    return SparsityReport(tuple(_row(n, t) for n, t in tensors.items()))


def _get(model: nn.Module, name: str) -> Tensor:
    # getattr on the owning module, so masked parameters are read with the mask applied.
    module_name, _, attr = name.rpartition(".")
    return getattr(model.get_submodule(module_name), attr)
