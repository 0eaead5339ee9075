"""BatchNorm scale-factor (γ) helpers: collect them and plot their histogram before/after
sparsity training, as in Network Slimming's Figure 4 (Liu et al. 2017)."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from prunekit._plot import new_figure, save_figure
from prunekit.train.regularizers import BN_TYPES


def bn_scales(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{module name: γ}`` for every affine BatchNorm1d/2d/3d, as detached CPU float copies.

    Example:
        >>> before = bn_scales(model)
    """
    return {
        name: m.weight.detach().float().cpu().clone()
        for name, m in model.named_modules()
        if isinstance(m, BN_TYPES) and m.affine
    }


def bn_sparsity(scales: Mapping[str, torch.Tensor], threshold: float = 1e-2) -> float:
    """Fraction of all γ whose magnitude is below ``threshold`` (0.0 when there are none)."""
    flat = _flatten(scales)
    return float((flat.abs() < threshold).float().mean()) if flat.numel() else 0.0


def _flatten(scales: Mapping[str, torch.Tensor]) -> torch.Tensor:
    if not scales:
        return torch.zeros(0)
    return torch.cat([s.detach().float().cpu().flatten() for s in scales.values()])


def plot_bn_histogram(
    before: Mapping[str, torch.Tensor],
    after: Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    bins: int = 100,
    title: str = "BatchNorm scale factors",
) -> None:
    """Save a PNG with the |γ| histograms before and after (e.g. sparsity training).

    Args:
        before: output of :func:`bn_scales` before training.
        after: output of :func:`bn_scales` after training.
        path: PNG file to write (atomically).
        bins: histogram bins.
        title: figure title.
    """
    a, b = _flatten(before).abs().numpy(), _flatten(after).abs().numpy()
    top = float(max(a.max(initial=0.0), b.max(initial=0.0))) or 1.0
    fig = new_figure(6, 4)
    ax = fig.add_subplot()
    ax.hist(a, bins=bins, range=(0, top), alpha=0.6, label=f"before (n={a.size})")
    ax.hist(b, bins=bins, range=(0, top), alpha=0.6, label=f"after (n={b.size})")
    ax.set_xlabel("|γ|")
    ax.set_ylabel("count")
    ax.set_title(title)
    ax.legend()
    save_figure(fig, path, dpi=100)
