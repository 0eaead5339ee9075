"""Per-layer latency: each layer timed alone, and a per-device lookup table cached on disk.

A layer's latency depends on its kind, its hyper-parameters (kernel, stride, groups...), its
input shape and its channel counts — and on the device, the thread count and the torch
version. :class:`LatencyTable` keys measurements by the first four and keeps one JSON file per
(device, threads, torch) under the prunekit cache folder, so a measurement made once (by the
latency-target allocator, by the speed benchmark) is reused by every later run on that machine.
Files are written atomically; a corrupt file is ignored and rebuilt.

Layer kinds are a registry (:data:`LAYER_KINDS`): convolutions and linear layers, which hold
almost all of a CNN's or a transformer's time, are registered; add others with
:func:`register_layer_kind`.

Example:
    >>> table = LatencyTable()                      # this CPU, torch's thread count
    >>> table.lookup(model.conv1, (1, 3, 224, 224))  # ms; measured on a miss, then cached
    >>> table.save()
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit._fileio import atomic_write_text
from prunekit.latency.measure import LatencyConfig, LatencyStats, cpu_name, time_callable
from prunekit.plan import PruningPlan
from prunekit.registry import Registry
from prunekit.surgery import apply_plan

__all__ = [
    "LAYER_KINDS",
    "LatencyTable",
    "LayerKind",
    "kind_of",
    "latency_cache_dir",
    "layer_latency",
    "register_layer_kind",
    "resized_layer",
]

TABLE_FORMAT = "prunekit.latency-table/1"


@dataclass(frozen=True)
class LayerKind:
    """How the latency table handles one family of layers.

    Attributes:
        types: module classes of this kind (subclasses match too).
        signature: hyper-parameters that change the layer's cost, besides its input shape.
        channel_dim: dim of the layer's input that holds its input channels.
        in_channels: the layer's input channel count.
        out_dim: dim of the weight that holds the output channels.
    """

    types: tuple[type[nn.Module], ...]
    signature: Callable[[Any], dict[str, Any]]
    channel_dim: int
    in_channels: Callable[[Any], int]
    out_dim: Callable[[Any], int]


LAYER_KINDS: Registry[LayerKind] = Registry("layer kind")


def register_layer_kind(name: str, kind: LayerKind) -> None:
    """Add a layer kind to the latency table (see :class:`LayerKind`)."""
    LAYER_KINDS.add(name, kind)


def _conv_signature(m: Any) -> dict[str, Any]:
    return {
        "type": type(m).__name__,
        "in": m.in_channels,
        "out": m.out_channels,
        "kernel": list(m.kernel_size),
        "stride": list(m.stride),
        "padding": m.padding if isinstance(m.padding, str) else list(m.padding),
        "dilation": list(m.dilation),
        "groups": m.groups,
        "bias": m.bias is not None,
        "transposed": m.transposed,
        "output_padding": list(m.output_padding),
    }


register_layer_kind(
    "conv",
    LayerKind(
        types=(nn.modules.conv._ConvNd,),
        signature=_conv_signature,
        channel_dim=1,
        in_channels=lambda m: m.in_channels,
        out_dim=lambda m: 1 if m.transposed else 0,
    ),
)
register_layer_kind(
    "linear",
    LayerKind(
        types=(nn.Linear,),
        signature=lambda m: {"in": m.in_features, "out": m.out_features, "bias": m.bias is not None},
        channel_dim=-1,
        in_channels=lambda m: m.in_features,
        out_dim=lambda m: 0,
    ),
)


def kind_of(module: nn.Module) -> str | None:
    """The registered layer kind of ``module``, or ``None``."""
    for name in LAYER_KINDS:
        if isinstance(module, LAYER_KINDS.get(name).types):
            return name
    return None


def latency_cache_dir() -> Path:
    """``$PRUNEKIT_CACHE/latency`` if that variable is set, else ``~/.cache/prunekit/latency``."""
    env = os.environ.get("PRUNEKIT_CACHE")
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "prunekit"
    return root / "latency"


def resized_layer(module: nn.Module, weight_shape: tuple[int, ...]) -> nn.Module:
    """A copy of ``module`` with its weight cut to ``weight_shape`` (leading entries kept).

    The cut goes through :func:`prunekit.surgery.apply_plan`, so the copy's attributes
    (``in_channels``, ``groups``...) are exactly what surgery gives a pruned model.
    """
    kind = LAYER_KINDS.get(kind_of(module) or "conv")
    w = module.get_parameter("weight")
    dims = {d: list(range(n)) for d, (n, s) in enumerate(zip(weight_shape, w.shape)) if n != s}
    out = copy.deepcopy(module)
    if not dims:
        return out
    plan = PruningPlan(tensors={"weight": dims}, shapes={"weight": list(w.shape)})
    od = kind.out_dim(module)
    if getattr(module, "bias", None) is not None and od in dims:
        plan.tensors["bias"] = {0: dims[od]}
        plan.shapes["bias"] = [w.shape[od]]
    return apply_plan(out, plan)


def _input_shape(kind: LayerKind, module: nn.Module, shape: tuple[int, ...]) -> tuple[int, ...]:
    s = list(shape)
    s[kind.channel_dim] = kind.in_channels(module)
    return tuple(s)


class LatencyTable:
    """Measured latency per (layer kind, hyper-parameters, input shape) on one device.

    Args:
        path: the JSON file; default: one per (device, threads, torch version) in
            :func:`latency_cache_dir`.
        config: timing settings per layer (default: 3 warm-up runs, at least 15 timed runs
            and 50 ms of timing).
        device: where layers are timed.

    Example:
        >>> table = LatencyTable(config=LatencyConfig(threads=2))
        >>> ms = table.lookup(conv, (1, 64, 56, 56))
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        config: LatencyConfig | None = None,
        device: str = "cpu",
    ) -> None:
        self.config = config or LatencyConfig(warmup=3, repeats=15, min_seconds=0.05)
        self.device = device
        self.threads = self.config.threads or torch.get_num_threads()
        self.path = Path(path) if path is not None else latency_cache_dir() / self._file_name()
        self.entries: dict[str, dict[str, Any]] = self._read()
        self.measured = 0  # measurements made by this object (misses)

    def _file_name(self) -> str:
        dev = torch.device(self.device)
        name = cpu_name() if dev.type == "cpu" else torch.cuda.get_device_name(dev)
        ident = f"{name}|{dev.type}|{self.threads}|{torch.__version__}"
        slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")[:40]
        digest = hashlib.sha256(ident.encode()).hexdigest()[:10]
        return f"{dev.type}-{slug}-t{self.threads}-{digest}.json"

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # missing or corrupt: start afresh (it is only a cache)
        if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT:
            return {}
        entries = data.get("entries", {})
        return entries if isinstance(entries, dict) else {}

    def key(self, module: nn.Module, input_shape: tuple[int, ...]) -> str:
        """The table key of ``module`` run on an input of ``input_shape``."""
        name = kind_of(module)
        if name is None:
            raise TypeError(f"no latency layer kind for {type(module).__name__}")
        sig = {"kind": name, "input": list(input_shape), **LAYER_KINDS.get(name).signature(module)}
        return json.dumps(sig, sort_keys=True, separators=(",", ":"))

    def lookup(self, module: nn.Module, input_shape: tuple[int, ...]) -> float:
        """Latency (ms) of ``module`` on an input of ``input_shape``; measured on a miss.

        The value is the lower quartile of the timed runs: on a machine shared with other work a
        whole timing window can be slowed by a preempted thread, which moves the median of a
        sub-millisecond layer by a multiple but the lower quartile far less; what the allocator
        needs is each layer's cost relative to the others, consistently.
        """
        k = self.key(module, input_shape)
        hit = self.entries.get(k)
        if hit is None:
            hit = self._measure(module, input_shape).to_dict()
            self.entries[k] = hit
            self.measured += 1
        return float(hit["q1_ms"])

    def lookup_resized(
        self, module: nn.Module, input_shape: tuple[int, ...], weight_shape: tuple[int, ...]
    ) -> float:
        """Latency (ms) of ``module`` once its weight is cut to ``weight_shape``.

        On a miss the cut layer is timed interleaved with the dense one and stored as the dense
        entry times their measured ratio: load that comes and goes between measurements (other
        processes on a shared machine) cancels out of the ratio, so the widths of one layer
        compare consistently.

        Args:
            module: the dense layer.
            input_shape: the dense layer's input shape (its channel dim is adjusted).
            weight_shape: the weight shape after pruning.
        """
        return self.lookup_many(module, input_shape, [weight_shape])[0]

    def lookup_many(
        self, module: nn.Module, input_shape: tuple[int, ...], weight_shapes: list[tuple[int, ...]]
    ) -> list[float]:
        """:meth:`lookup_resized` for several weight shapes of one layer; the missing ones are
        timed together, interleaved with the dense layer (one consistent batch)."""
        kind = LAYER_KINDS.get(kind_of(module) or "")
        smalls = [resized_layer(module, ws) for ws in weight_shapes]
        shapes = [_input_shape(kind, m, input_shape) for m in smalls]
        keys = [self.key(m, sh) for m, sh in zip(smalls, shapes)]
        missing = {k: (m, sh) for k, m, sh in zip(keys, smalls, shapes) if k not in self.entries}
        if missing:
            ref = self.lookup(module, input_shape)
            runs = {"ref": (module, input_shape), **missing}
            stats = self._measure_together(runs)
            for k in missing:
                hit = stats[k].to_dict()
                hit["q1_ms"] = ref * stats[k].q1_ms / max(stats["ref"].q1_ms, 1e-9)
                self.entries[k] = hit
                self.measured += 1
        return [float(self.entries[k]["q1_ms"]) for k in keys]

    def _measure_together(
        self, runs: Mapping[str, tuple[nn.Module, tuple[int, ...]]]
    ) -> dict[str, LatencyStats]:
        from prunekit.latency.measure import compare_latency

        fns = {}
        for k, (m, shape) in runs.items():
            layer = copy.deepcopy(m).to(self.device).eval()
            x = torch.randn(*shape, device=self.device)
            fns[k] = lambda layer=layer, x=x: layer(x)
        cfg = self.config
        # compare_latency has no time floor: scale the rounds to the table's min_seconds.
        once = sum(time_callable(f, LatencyConfig(warmup=1, repeats=1, threads=cfg.threads),
                                 device=self.device).median_ms for f in fns.values())  # fmt: skip
        rounds = max(cfg.repeats, int(cfg.min_seconds * 1000 / max(once, 1e-3)))
        together = LatencyConfig(warmup=cfg.warmup, repeats=min(rounds, 1000),
                                 threads=cfg.threads, device=self.device,
                                 cuda_graphs=cfg.cuda_graphs)  # fmt: skip
        return compare_latency(fns, None, together)

    def _measure(self, module: nn.Module, input_shape: tuple[int, ...]) -> LatencyStats:
        layer = copy.deepcopy(module).to(self.device).eval()
        x = torch.randn(*input_shape, device=self.device)
        return time_callable(lambda: layer(x), self.config, device=self.device)

    def save(self) -> Path:
        """Write the table (atomically) and return its path."""
        from prunekit.latency.measure import environment

        data = {"format": TABLE_FORMAT, "env": environment(self.config), "entries": self.entries}
        atomic_write_text(self.path, json.dumps(data, indent=0, sort_keys=True))
        return self.path


def input_shapes(model: nn.Module, inputs: Any, names: Mapping[str, nn.Module]) -> dict[str, Any]:
    """Shape of the first input of each named module in one eval forward pass (no grad)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def hook(name: str) -> Callable[..., None]:
        def record(mod: nn.Module, args: tuple[Any, ...]) -> None:  # must return None
            if args and isinstance(args[0], torch.Tensor):
                shapes.setdefault(name, tuple(args[0].shape))

        return record

    hooks = [m.register_forward_pre_hook(hook(n)) for n, m in names.items()]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            if isinstance(inputs, dict):
                model(**inputs)
            else:
                model(*(inputs if isinstance(inputs, tuple) else (inputs,)))
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return shapes


def layer_latency(
    model: nn.Module, inputs: Any, table: LatencyTable | None = None
) -> dict[str, float]:
    """Latency (ms) of every conv/linear layer of ``model`` (each timed alone), in model order.

    Args:
        model: the model.
        inputs: example inputs (their shapes set each layer's input shape).
        table: the lookup table to read and fill (default: this device's cached table, saved
            afterwards).

    Returns:
        Module path -> median ms. Layers that did not run are left out.

    Example:
        >>> ms = layer_latency(model, torch.randn(1, 3, 224, 224))
        >>> sorted(ms.items(), key=lambda kv: -kv[1])[:5]   # the five slowest layers
    """
    own = table is None
    tab = table or LatencyTable()
    layers = {n: m for n, m in model.named_modules() if n and kind_of(m) is not None}
    shapes = input_shapes(model, inputs, layers)
    out = {n: tab.lookup(m, shapes[n]) for n, m in layers.items() if n in shapes}
    if own and tab.measured:
        tab.save()
    return out
