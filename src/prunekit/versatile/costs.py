"""What a versatile model costs, counted both ways the paper and the implementation allow.

* **Stored parameters / memory** (Wang et al. 2018, §3.3): only the primary filters (and one bias
  per output) are stored: ``out/(s·n) · (c−δ) · k²`` weights instead of ``out · c · k²``.
* **MACs as executed**: :class:`~prunekit.versatile.VersatileConv2d` runs one ordinary
  convolution with the unfolded weight, so it executes exactly the dense layer's
  ``out · c · k² · H'·W'`` multiply-accumulates (measured with PyTorch's FLOP counter).
* **MACs as the paper counts them**: each secondary filter is charged its own size,
  ``(k−2i)² · (c−δ)`` per output position, i.e. ``out/(s·n) · n · (c−δ) · Σ_i (k−2i)² · H'·W'``
  per layer — what an implementation that skips the zeros of the crops would run.

Both are reported next to the dense model (the same network with every versatile layer an
``nn.Conv2d``), because the one-conv layer saves memory, not computation.

Example:
    >>> costs = versatile_costs(model, torch.randn(1, 3, 32, 32))
    >>> costs.conv_fraction, costs.macs_paper / costs.macs_executed
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from prunekit.versatile.layer import VersatileConv2d

__all__ = ["LayerCost", "VersatileCosts", "summary_line", "versatile_costs", "versatile_summary"]

_MB = float(1 << 20)


@dataclass(frozen=True)
class LayerCost:
    """One convolution (versatile or dense ``nn.Conv2d``).

    Attributes:
        path: module path.
        versatile: whether it is a :class:`VersatileConv2d`.
        stored_params: weights + bias as stored.
        dense_params: the same for the equivalent ``nn.Conv2d``.
        macs_executed: multiply-accumulates of one forward pass as run.
        macs_paper: the same with each secondary filter counted at its own size.
    """

    path: str
    versatile: bool
    stored_params: int
    dense_params: int
    macs_executed: int
    macs_paper: int


@dataclass
class VersatileCosts:
    """Whole-model costs of a (partly) versatile model and of its dense counterpart.

    Attributes:
        params, dense_params: all parameters as stored / with dense convolutions.
        conv_params, dense_conv_params: convolution parameters only (weights + biases).
        memory_mb, dense_memory_mb: parameter memory in MB (2**20 bytes).
        macs_executed: multiply-accumulates of one forward pass as run (= the dense model's).
        macs_paper: ``macs_executed`` with versatile layers counted as the paper does.
        layers: per-convolution costs.
    """

    params: int
    dense_params: int
    conv_params: int
    dense_conv_params: int
    memory_mb: float
    dense_memory_mb: float
    macs_executed: int
    macs_paper: int
    layers: list[LayerCost] = field(default_factory=list)

    @property
    def conv_fraction(self) -> float:
        """Stored convolution parameters as a fraction of the dense ones."""
        return self.conv_params / max(self.dense_conv_params, 1)

    def to_dict(self, *, layers: bool = False) -> dict[str, Any]:
        """JSON-ready totals (and per-layer rows if ``layers``)."""
        out = asdict(self)
        if not layers:
            out.pop("layers")
        out["conv_fraction"] = self.conv_fraction
        return out


def _layer_cost(path: str, mod: Any, positions: int) -> LayerCost:
    """Costs of one conv whose output has ``positions`` = batch·H'·W' entries per channel."""
    bias = mod.out_channels if mod.bias is not None else 0
    k = mod.kernel_size[0] * mod.kernel_size[1]
    dense_w = mod.out_channels * (mod.in_channels // mod.groups) * k
    executed = dense_w * positions
    if not isinstance(mod, VersatileConv2d):
        return LayerCost(path, False, dense_w + bias, dense_w + bias, executed, executed)
    q, c_hat, kk, _ = mod.weight.shape
    crops = sum((kk - 2 * i) ** 2 for i in range(mod.s))
    paper = q * mod.n * c_hat * crops * positions
    return LayerCost(path, True, mod.weight.numel() + bias, dense_w + bias, executed, paper)


def versatile_costs(model: nn.Module, inputs: Any) -> VersatileCosts:
    """Stored parameters, memory and MACs (executed and paper-counted) of ``model``.

    Args:
        model: a model with :class:`VersatileConv2d` and/or ``nn.Conv2d`` layers.
        inputs: one example input (batch 1 gives per-image MACs), or a tuple of them.

    Returns:
        :class:`VersatileCosts`; the model is run once in eval mode and left unchanged.
    """
    convs = {p: m for p, m in model.named_modules() if isinstance(m, (nn.Conv2d, VersatileConv2d))}
    positions: dict[str, int] = {}

    def hook(path: str) -> Any:
        def fn(mod: nn.Module, args: Any, out: torch.Tensor) -> None:
            positions[path] = positions.get(path, 0) + out.numel() // out.shape[1]

        return fn

    handles = [m.register_forward_hook(hook(p)) for p, m in convs.items()]
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    was = model.training
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            model.eval()(*args)
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    layers = [_layer_cost(p, m, positions.get(p, 0)) for p, m in convs.items()]
    return _totals(model, layers, int(fc.get_total_flops() // 2))


def _totals(model: nn.Module, layers: list[LayerCost], macs: int) -> VersatileCosts:
    params = sum(p.numel() for p in model.parameters())
    size = next((p.element_size() for p in model.parameters()), 4)
    extra = sum(lc.dense_params - lc.stored_params for lc in layers)
    saved = sum(lc.macs_executed - lc.macs_paper for lc in layers)
    conv = sum(lc.stored_params for lc in layers)
    return VersatileCosts(
        params=params,
        dense_params=params + extra,
        conv_params=conv,
        dense_conv_params=conv + extra,
        memory_mb=params * size / _MB,
        dense_memory_mb=(params + extra) * size / _MB,
        macs_executed=macs,
        macs_paper=macs - saved,
        layers=layers,
    )


def versatile_summary(model: nn.Module, inputs: Any = None) -> dict[str, Any] | None:
    """The costs ``prunekit info`` and the prune report show; None without versatile layers.

    Args:
        model: the model.
        inputs: an example input for MACs; None reports parameters and memory only.

    Returns:
        ``{"layers", "params", "dense_params", "conv_params", "dense_conv_params",
        "conv_fraction", "memory_mb", "dense_memory_mb"}`` plus ``"macs_executed"`` and
        ``"macs_paper"`` (``"dense_macs"`` equals ``macs_executed``) when ``inputs`` is given.
    """
    layers = [m for m in model.modules() if isinstance(m, VersatileConv2d)]
    if not layers:
        return None
    if inputs is not None:
        out = versatile_costs(model, inputs).to_dict()
        out["dense_macs"] = out["macs_executed"]
    else:
        convs = [
            (p, m) for p, m in model.named_modules() if isinstance(m, (nn.Conv2d, VersatileConv2d))
        ]
        out = _totals(model, [_layer_cost(p, m, 0) for p, m in convs], 0).to_dict()
        for key in ("macs_executed", "macs_paper"):
            out.pop(key)
    return {"layers": len(layers), **out}


def summary_line(summary: dict[str, Any]) -> str:
    """One line of :func:`versatile_summary` for text reports."""
    text = (
        f"{summary['layers']} versatile convs: {summary['conv_params']:,} of "
        f"{summary['dense_conv_params']:,} conv params stored ({summary['conv_fraction']:.1%}), "
        f"{summary['memory_mb']:.2f} of {summary['dense_memory_mb']:.2f} MB"
    )
    if "macs_paper" in summary:
        text += (
            f"; MACs executed {summary['macs_executed']:,} (= dense), paper-counted "
            f"{summary['macs_paper']:,}"
        )
    return text
