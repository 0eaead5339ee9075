"""Measurements: parameters, MACs, latency and per-layer channels before/after pruning."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from prunekit.device import temporarily


def count_params(model: nn.Module) -> int:
    """Number of parameters (shared ones counted once)."""
    return sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def _no_mha_fastpath() -> Iterator[None]:
    """Send ``nn.MultiheadAttention``/``TransformerEncoderLayer`` down their composite path.

    In eval mode without grad they call one fused kernel (``_native_multi_head_attention``,
    ``_transformer_encoder_layer_fwd``) that ``FlopCounterMode`` has no formula for, so the
    attention's projections and matmuls went uncounted (vit_b_16: 11.3 G instead of 16.9 G
    MACs). The composite path computes the same thing through linear/bmm/sdpa, which it counts.
    """
    mha = torch.backends.mha
    with temporarily(mha.get_fastpath_enabled, mha.set_fastpath_enabled, False):
        yield


def _cpu_attention_flops(
    q: Any, k: Any, v: Any, *args: Any, out_shape: Any = None, **kw: Any
) -> int:
    """FLOPs of CPU flash attention (QK^T and the weighted sum of V), which PyTorch's counter
    has a formula for on CUDA only (``sdpa_flop_count`` is its own CUDA formula)."""
    from torch.utils.flop_counter import sdpa_flop_count

    return int(sdpa_flop_count(q, k, v))


def count_macs(model: nn.Module, inputs: Any) -> int:
    """Multiply-accumulates of one eval-mode forward pass: PyTorch's FLOP counter / 2.

    Counts conv, linear, matmul/bmm and attention, the same in every mode and on every device:
    attention's fused eval kernel is bypassed while counting (:func:`_no_mha_fastpath`) and
    CPU's scaled-dot-product kernel gets the formula PyTorch uses on CUDA. Element-wise ops and
    normalisation are not counted, as is usual for MACs.

    Args:
        model: the model (its train/eval mode is restored).
        inputs: a tensor or a tuple of positional inputs.

    Returns:
        The MACs.

    Example:
        >>> count_macs(torchvision.models.resnet18(), torch.randn(1, 3, 224, 224))
        1814073344
    """
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    was = model.training
    model.eval()
    try:
        try:
            return _counted(model, args, grad=False)
        except AssertionError:
            # The counter's module tracker hooks the autograd graph of module inputs: a
            # parameter passed to a submodule (CaiT's class token) needs grad mode for that.
            return _counted(model, args, grad=True)
    finally:
        model.train(was)


def _counted(model: nn.Module, args: tuple[Any, ...], *, grad: bool) -> int:
    extra = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops}
    with (
        torch.set_grad_enabled(grad),
        _no_mha_fastpath(),
        FlopCounterMode(display=False, custom_mapping=extra) as fc,
    ):
        model(*args)
    return int(fc.get_total_flops() // 2)


def latency_ms(model: nn.Module, inputs: Any, *, warmup: int = 3, iters: int = 10) -> float:
    """Median wall time of one eval forward pass, in milliseconds (see :mod:`prunekit.latency`
    for thread counts, CUDA graphs, spread and interleaved comparisons)."""
    from prunekit.latency import LatencyConfig, model_latency

    return model_latency(model, inputs, LatencyConfig(warmup=warmup, repeats=iters)).median_ms


def layer_channels(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Weight shape of every layer that has one (conv, linear, norm...)."""
    out = {}
    for name, mod in model.named_modules():
        w = getattr(mod, "weight", None)
        if isinstance(w, torch.Tensor) and name:
            out[name] = tuple(w.shape)
    return out


@dataclass
class Measurement:
    """Size and speed of one model."""

    params: int
    macs: int
    latency_ms: float | None = None
    latency_iqr_ms: float | None = None


@dataclass
class Report:
    """Before/after comparison, printable as a table and serialisable as JSON."""

    before: Measurement
    after: Measurement
    layers: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    def to_table(self, max_layers: int = 40) -> str:
        """Aligned text table: totals, then layers whose shape changed."""
        b, a = self.before, self.after
        rows = [
            f"{'':<12}{'before':>16}{'after':>16}{'ratio':>10}",
            _row("params", b.params, a.params),
            _row("MACs", b.macs, a.macs),
        ]
        if b.latency_ms is not None and a.latency_ms is not None:
            rows.append(
                f"{'latency ms':<12}{_spread(b):>16}{_spread(a):>16}"
                f"{b.latency_ms / max(a.latency_ms, 1e-9):>9.2f}x"
            )
        for k, v in self.extra.items():
            rows.append(f"{k:<12}{v!s:>16}")
        changed = [r for r in self.layers if r["before"] != r["after"]]
        if changed:
            rows.append(f"\n{len(changed)} layers changed (weight shape before -> after):")
            for r in changed[:max_layers]:
                rows.append(f"  {r['layer']:<44} {r['before']!s:>22} -> {r['after']!s}")
            if len(changed) > max_layers:
                rows.append(f"  ... {len(changed) - max_layers} more")
        return "\n".join(rows)

    def kept_fractions(self) -> dict[str, float]:
        """Output channels kept per conv/linear layer (after / before), in model order."""
        out = {}
        for r in self.layers:
            b, a = r["before"], r["after"]
            if len(b) >= 2 and a:  # conv and linear weights; norms repeat their producer
                out[r["layer"]] = a[0] / b[0]
        return out

    def plot(self, path: str | os.PathLike[str], title: str = "") -> dict[str, float]:
        """Save a PNG/SVG/PDF: size and speed after/before, and kept channels per layer.

        Args:
            path: file to write (atomically); the suffix picks the format.
            title: figure title.

        Returns:
            The plotted per-layer fractions (:meth:`kept_fractions`).

        Example:
            >>> compare(dense, pruned, x).plot("report.png")
        """
        from prunekit._plot import new_figure, save_figure

        fig = new_figure(12, 4.5)
        kept = self.draw(fig, title)
        save_figure(fig, path)
        return kept

    def draw(self, fig: Any, title: str = "") -> dict[str, float]:
        """Draw :meth:`plot`'s two panels on a matplotlib figure; returns the kept fractions."""
        left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 3]})
        b, a = self.before, self.after
        bars: dict[str, tuple[float, float]] = {
            "params": (b.params, a.params),
            "MACs": (b.macs, a.macs),
        }
        if b.latency_ms and a.latency_ms is not None:
            bars["latency"] = (b.latency_ms, a.latency_ms)
        pct = [100 * after / before if before else 0.0 for before, after in bars.values()]
        left.bar(list(bars), pct, color="tab:blue")
        for i, v in enumerate(pct):
            left.annotate(f"{v:.0f}%", (i, v), ha="center", va="bottom", fontsize="small")
        left.axhline(100, color="grey", lw=0.8, ls="--")
        left.set_ylabel("after / before (%)")
        left.set_ylim(0, max(110.0, *pct) * 1.08)
        kept = self.kept_fractions()
        right.bar(range(len(kept)), [100 * v for v in kept.values()], color="tab:orange")
        right.set_ylim(0, 105)
        right.set_ylabel("output channels kept (%)")
        right.set_xlabel(f"layer ({len(kept)} conv/linear layers, model order)")
        if len(kept) <= 40:
            right.set_xticks(range(len(kept)), list(kept), rotation=90, fontsize="x-small")
        fig.suptitle(title or "Pruning report")
        return kept


def _spread(m: Measurement) -> str:
    """``median±IQR`` of a timed model (the IQR only when it was measured)."""
    if m.latency_iqr_ms is None:
        return f"{m.latency_ms:.2f}"
    return f"{m.latency_ms:.2f}±{m.latency_iqr_ms:.2f}"


def _row(label: str, before: float, after: float) -> str:
    ratio = before / after if after else float("inf")
    return f"{label:<12}{before:>16,.0f}{after:>16,.0f}{ratio:>9.2f}x"


def measure(model: nn.Module, inputs: Any, *, latency: bool = True) -> Measurement:
    """Params, MACs and (optionally) latency of ``model`` on ``inputs``."""
    return Measurement(
        count_params(model),
        count_macs(model, inputs),
        latency_ms(model, inputs) if latency else None,
    )


def compare(
    before: nn.Module,
    after: nn.Module,
    inputs: Any,
    *,
    latency: bool | Any = True,
    before_layers: dict[str, tuple[int, ...]] | None = None,
) -> Report:
    """Measure two models on the same inputs and list per-layer shape changes.

    Args:
        before: the dense model.
        after: the pruned model.
        inputs: inputs for both (a tensor or a tuple).
        latency: time both, **interleaved** (before, after, before, ...: load hits both alike)
            and report median and IQR; ``True`` for the default
            :class:`~prunekit.latency.LatencyConfig`, or a config, or ``False`` to skip.
        before_layers: :func:`layer_channels` of ``before`` taken earlier (e.g. before an
            in-place prune).

    Returns:
        A :class:`Report` (``extra["latency"]`` says how the times were taken).
    """
    lb = before_layers if before_layers is not None else layer_channels(before)
    la = layer_channels(after)
    layers = [{"layer": k, "before": list(v), "after": list(la.get(k, ()))} for k, v in lb.items()]
    report = Report(measure(before, inputs, latency=False), measure(after, inputs, latency=False),
                    layers)  # fmt: skip
    if latency is not False:
        from prunekit.latency import LatencyConfig, compare_latency

        cfg = latency if isinstance(latency, LatencyConfig) else LatencyConfig()
        stats = compare_latency({"before": before, "after": after}, inputs, cfg)
        for m, st in ((report.before, stats["before"]), (report.after, stats["after"])):
            m.latency_ms, m.latency_iqr_ms = st.median_ms, st.iqr_ms
        where = f"{st.device}, {st.threads} threads" if st.threads else st.device
        report.extra["latency"] = f"median±IQR of {st.n} interleaved runs ({where})"
    return report
