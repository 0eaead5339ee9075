"""One self-contained HTML page per run: sections of text, tables and plots (PNG, base64).

Commands build a :class:`HtmlReport` from :class:`Section` objects and write it once; any
command (``prune``, ``slim``, ``run``, ``sensitivity``, ``versatile``) adds its own sections —
accuracy per stage, γ histograms, sensitivity curves — with the same three building blocks.
The page loads nothing from outside (no scripts, fonts or images by URL), so it opens offline
and can be attached to a ticket as one file.

Example:
    >>> rep = HtmlReport("resnet18 pruned with prunekit")
    >>> rep.add(Section("Size and speed", table=[["params", "11.7M", "3.1M"]],
    ...                 header=["", "before", "after"]))
    >>> rep.add(Section("Channels kept", figures=[fig]))   # a matplotlib Figure
    >>> rep.write("runs/x/report.html")
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import os
from dataclasses import dataclass, field
from typing import Any

from prunekit._fileio import atomic_write_text

__all__ = ["HtmlReport", "Section", "figure_png", "prune_sections"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.25em .6em}
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}
img.plot{max-width:100%;display:block;margin:.6em 0}p.meta{color:#666;font-size:.9em}
"""


def figure_png(fig: Any, dpi: int = 110) -> bytes:
    """PNG bytes of a matplotlib figure (see :func:`prunekit._plot.new_figure`)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


@dataclass
class Section:
    """One titled part of a report.

    Attributes:
        title: heading.
        text: paragraphs (plain text, escaped).
        table: rows of cells (numbers are right-aligned).
        header: column names of ``table``.
        figures: matplotlib figures or PNG bytes, embedded as base64 images.
    """

    title: str
    text: list[str] = field(default_factory=list)
    table: list[list[Any]] = field(default_factory=list)
    header: list[str] = field(default_factory=list)
    figures: list[Any] = field(default_factory=list)

    def html(self) -> str:
        """The section as an HTML fragment."""
        out = [f"<section><h2>{html.escape(self.title)}</h2>"]
        out += [f"<p>{html.escape(t)}</p>" for t in self.text]
        if self.table:
            out.append("<table>")
            if self.header:
                out.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in self.header)
                           + "</tr>")  # fmt: skip
            for row in self.table:
                out.append("<tr>" + "".join(_cell(c) for c in row) + "</tr>")
            out.append("</table>")
        for i, fig in enumerate(self.figures):
            png = fig if isinstance(fig, bytes) else figure_png(fig)
            b64 = base64.b64encode(png).decode("ascii")
            alt = html.escape(f"{self.title} plot {i + 1}")
            out.append(f'<img class="plot" alt="{alt}" src="data:image/png;base64,{b64}">')
        out.append("</section>")
        return "\n".join(out)


def _cell(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return f"<td>{html.escape(str(v))}</td>"
    text = f"{v:,}" if isinstance(v, int) else f"{v:.4g}"
    return f'<td class="n">{text}</td>'


@dataclass
class HtmlReport:
    """A self-contained HTML report built from sections.

    Attributes:
        title: page title and top heading.
        sections: the sections, in page order.
        meta: key/value facts shown under the title (command, versions, machine).
    """

    title: str
    sections: list[Section] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def add(self, section: Section) -> HtmlReport:
        """Append a section (returns ``self`` for chaining)."""
        self.sections.append(section)
        return self

    def render(self) -> str:
        """The whole page as a string."""
        when = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        facts = "; ".join(f"{k}: {v}" for k, v in {"generated": when, **self.meta}.items())
        body = "\n".join(s.html() for s in self.sections)
        t = html.escape(self.title)
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{t}</title><style>{_CSS}</style></head><body>"
            f'<h1>{t}</h1><p class="meta">{html.escape(facts)}</p>\n{body}\n</body></html>\n'
        )

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the page atomically."""
        atomic_write_text(path, self.render())


def prune_sections(report: Any, *, title: str = "") -> list[Section]:
    """The sections of a :class:`prunekit.report.Report`: totals before → after, the size/speed
    and channels-kept plots, and the per-layer table of changed shapes."""
    from prunekit._plot import new_figure

    b, a = report.before, report.after
    rows: list[list[Any]] = [
        ["params", b.params, a.params, _ratio(b.params, a.params)],
        ["MACs", b.macs, a.macs, _ratio(b.macs, a.macs)],
    ]
    if b.latency_ms is not None and a.latency_ms is not None:
        rows.append(["latency (ms)", round(b.latency_ms, 3), round(a.latency_ms, 3),
                     _ratio(b.latency_ms, a.latency_ms)])  # fmt: skip
    rows += [[k, str(v), "", ""] for k, v in report.extra.items()]
    fig = new_figure(12, 4.5)
    report.draw(fig, title)
    changed = [r for r in report.layers if r["before"] != r["after"]]
    layers = Section(
        f"Layers changed ({len(changed)})",
        table=[[r["layer"], str(tuple(r["before"])), str(tuple(r["after"]))] for r in changed],
        header=["layer", "weight shape before", "after"],
    )
    return [
        Section(
            "Size and speed, before → after",
            table=rows,
            header=["", "before", "after", "before / after"],
        ),
        Section("Size, speed and channels kept per layer", figures=[fig]),
        layers,
    ]


def _ratio(before: float, after: float) -> str:
    return f"{before / after:.2f}x" if after else "–"
