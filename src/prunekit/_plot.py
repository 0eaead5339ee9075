"""Headless figures written atomically (shared by reports, sensitivity and slimming plots)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prunekit._fileio import atomic_path


def new_figure(width: float, height: float) -> Any:
    """A matplotlib ``Figure`` on the Agg canvas.

    No pyplot: the user's global backend and open figures are left alone, and no display is
    ever needed. matplotlib is imported here, only when a plot is asked for.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: str | os.PathLike[str], dpi: int = 120) -> None:
    """Write ``fig`` to ``path`` atomically; the suffix picks the format (png, svg, pdf)."""
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
