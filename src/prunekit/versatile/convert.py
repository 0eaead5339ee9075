"""Turn a CNN's convolutions into :class:`VersatileConv2d` layers and back.

:func:`versatilize` replaces, in place, every eligible ``nn.Conv2d`` by a versatile layer with
the same ``in_channels``, ``out_channels``, kernel, stride, padding and dilation, so every tensor
the rest of the model sees keeps its shape. Layers it cannot convert are listed with the reason
(1×1 kernels have no spatial variant, grouped/depthwise convolutions, non-square kernels,
output counts not divisible by ``s·n``...). Converted layers are freshly initialised: versatile
filters are trained from scratch (Wang et al. 2018), a dense conv's weights do not map onto them.

:func:`to_dense` replaces every versatile layer by an ``nn.Conv2d`` holding its unfolded weight
(the same computation, exactly), for ONNX export and any runtime.

Both return a :class:`~prunekit.record.Conversion` (kinds ``versatile`` and ``versatile_dense``)
that :func:`prunekit.save` records and :func:`prunekit.load` replays on a fresh base model.

Example:
    >>> model = prunekit.models.build_model("zoo:vgg16", num_classes=10)
    >>> report = versatilize(model, VersatileConfig(mode="spatial"))
    >>> print(report.summary())
    >>> prunekit.save(model, "out/vgg16-versatile", "zoo:vgg16", [report.conversion()])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from prunekit.config import Config
from prunekit.errors import ConfigError, PlanError, PrunekitError
from prunekit.record import CONVERSIONS, Conversion, ModelRecord
from prunekit.versatile.layer import VersatileConv2d, channel_offsets, num_crops

__all__ = [
    "LayerSetting",
    "VersatileConfig",
    "VersatileReport",
    "to_dense",
    "versatile_record",
    "versatilize",
]

Mode = Literal["spatial", "channel", "spatial+channel"]


class VersatileConfig(Config):
    """Which versatile variant :func:`versatilize` applies.

    Attributes:
        mode: ``spatial`` (crops, ``s = ⌈k/2⌉``), ``channel`` (channel shifts,
            ``n = δ/g + 1``) or ``spatial+channel``.
        delta: δ, input channels a primary filter leaves out (paper Eq. 6); > 0 for the
            channel variant. A layer with ``in_channels <= δ`` gets the spatial variant only.
        g: channel stride, a divisor of δ; None: ``g = δ`` (n = 2 channel positions).
        skip: module paths to keep as dense ``nn.Conv2d`` (e.g. the stem).
    """

    what: ClassVar[str] = "versatile option"
    mode: Mode = "spatial"
    delta: int = 0
    g: int | None = None
    skip: list[str] = Field(default_factory=list)

    @field_validator("delta")
    @classmethod
    def _delta(cls, v: int) -> int:
        if v < 0:
            raise ValueError("must be >= 0")
        return v

    @model_validator(mode="after")
    def _channel_needs_delta(self) -> VersatileConfig:
        if "channel" in self.mode and self.delta == 0:
            raise ValueError(f"mode {self.mode!r} needs delta > 0 (e.g. --delta 4)")
        if "channel" not in self.mode and self.delta:
            raise ValueError(f"delta={self.delta} needs a channel mode ('spatial+channel')")
        if self.g is not None and (self.g < 1 or (self.delta and self.delta % self.g)):
            raise ValueError(f"g={self.g} must be a positive divisor of delta={self.delta}")
        return self

    @property
    def stride(self) -> int:
        """The channel stride g actually used."""
        return self.g if self.g is not None else max(self.delta, 1)


@dataclass(frozen=True)
class LayerSetting:
    """The versatile hyper-parameters chosen for one layer."""

    spatial: bool
    delta: int
    g: int

    def to_dict(self) -> dict[str, Any]:
        return {"spatial": self.spatial, "delta": self.delta, "g": self.g}


@dataclass
class VersatileReport:
    """What :func:`versatilize` did.

    Attributes:
        converted: module path → the setting of its new :class:`VersatileConv2d`.
        skipped: module path → why that ``nn.Conv2d`` stayed dense.
        notes: module path → why a converted layer got less than the requested variant.
    """

    converted: dict[str, LayerSetting] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def conversion(self) -> Conversion:
        """The recorded step (kind ``versatile``) for :func:`prunekit.save`."""
        layers = {p: s.to_dict() for p, s in self.converted.items()}
        return Conversion("versatile", {"layers": layers}, module=__name__)

    def summary(self) -> str:
        """One line per layer: converted (with s, n) or skipped (with the reason)."""
        lines = [f"{len(self.converted)} convolutions versatile, {len(self.skipped)} kept dense"]
        for path, st in self.converted.items():
            note = f"  ({self.notes[path]})" if path in self.notes else ""
            lines.append(f"  {path:<40} spatial={st.spatial} delta={st.delta} g={st.g}{note}")
        for path, why in self.skipped.items():
            lines.append(f"  {path:<40} dense: {why}")
        return "\n".join(lines)


def _ineligible(conv: nn.Module) -> str | None:
    """Why ``conv`` (an ``nn.Conv2d`` instance) cannot become versatile at all, or None."""
    if type(conv) is not nn.Conv2d:
        return f"{type(conv).__name__} subclasses nn.Conv2d (its own forward would be lost)"
    if conv.groups > 1:
        kind = "depthwise" if conv.groups == conv.in_channels else "grouped"
        return f"{kind} convolution (groups={conv.groups}); versatile filters need groups=1"
    if conv.kernel_size[0] != conv.kernel_size[1]:
        return f"non-square kernel {tuple(conv.kernel_size)}"
    return None


def _choose(conv: nn.Conv2d, cfg: VersatileConfig) -> tuple[LayerSetting | None, str | None]:
    """The best valid setting for ``conv`` (requested variants first) and a note/reason."""
    k, cin, cout = conv.kernel_size[0], conv.in_channels, conv.out_channels
    want_sp, want_ch = "spatial" in cfg.mode, "channel" in cfg.mode
    why: list[str] = []
    if want_sp and k == 1:
        why.append("1×1 kernel: no spatial variant")
    if want_ch and cfg.delta >= cin:
        why.append(f"in_channels={cin} <= delta={cfg.delta}: no channel variant")
    sp = want_sp and k > 1
    delta = cfg.delta if want_ch and cfg.delta < cin else 0
    g = cfg.stride if delta else 1
    options = [(sp, delta)] + ([(sp, 0)] if delta and sp else [])
    for spatial, d in options:
        s, n = num_crops(k, spatial), channel_offsets(d, g if d else 1)
        if s * n == 1:
            continue
        if cout % (s * n) == 0:
            return LayerSetting(spatial, d, g if d else 1), "; ".join(why) or None
        why.append(f"out_channels={cout} not divisible by s·n={s * n}")
    return None, "; ".join(why) or "no variant applies"


def _replace(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, new)


def _versatile_from(conv: nn.Conv2d, st: LayerSetting) -> VersatileConv2d:
    w = conv.weight
    layer = VersatileConv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
        conv.padding if isinstance(conv.padding, str) else tuple(conv.padding), conv.dilation,
        bias=conv.bias is not None, padding_mode=conv.padding_mode,
        spatial=st.spatial, delta=st.delta, g=st.g, device=w.device, dtype=w.dtype,
    )  # fmt: skip
    layer.weight.requires_grad_(w.requires_grad)
    return layer.train(conv.training)


def versatilize(model: nn.Module, config: VersatileConfig | str | None = None) -> VersatileReport:
    """Replace the eligible ``nn.Conv2d`` layers of ``model`` by versatile ones, in place.

    Args:
        model: any CNN (prunekit zoo, torchvision, a user's model).
        config: a :class:`VersatileConfig`, or just its mode (``"spatial"``); None: spatial.

    Returns:
        A :class:`VersatileReport`: converted layers, skipped ones with reasons, and the
        :class:`~prunekit.record.Conversion` to save the model with (``report.conversion()``).

    Example:
        >>> report = versatilize(torchvision.models.resnet18(), "spatial")
        >>> report.skipped["layer2.0.downsample.0"]
        '1×1 kernel: no spatial variant'
    """
    if not isinstance(config, VersatileConfig):
        config = VersatileConfig(mode=config or "spatial")  # type: ignore[arg-type]
    known = {p for p, _ in model.named_modules()}
    unknown = [p for p in config.skip if p not in known]
    if unknown:
        raise ConfigError(f"versatile skip names no module of the model: {unknown[:3]}")
    report = VersatileReport()
    for path, mod in list(model.named_modules()):
        if not isinstance(mod, nn.Conv2d):
            continue
        reason = "listed in skip" if path in config.skip else _ineligible(mod)
        setting, note = (None, reason) if reason else _choose(mod, config)
        if setting is None:
            report.skipped[path] = note or "no variant applies"
            continue
        _replace(model, path, _versatile_from(mod, setting))
        report.converted[path] = setting
        if note:
            report.notes[path] = note
    return report


def versatile_record(record: ModelRecord, config: VersatileConfig | None) -> ModelRecord:
    """``record`` with the ``versatile`` conversion its model gets under ``config`` appended.

    The layers to convert depend on the architecture only, so they are found on a meta-device
    build (no weights computed, no random numbers drawn); ``record.build()`` then yields the
    versatile model. ``config`` None returns ``record`` unchanged. This is how the CLI
    (``--versatile``), native recipes (``model: {versatile: ...}``) and the method workbench
    build versatile models.

    Example:
        >>> record = versatile_record(ModelRecord("zoo:vgg16"), VersatileConfig(mode="spatial"))
        >>> model = record.build()
    """
    if config is None:
        return record
    try:
        with torch.device("meta"):
            model = record.build()
    except PrunekitError:
        raise
    except Exception:  # a builder that needs real tensors (e.g. loads weights)
        model = record.build()
    return record.then(versatilize(model, config).conversion())


def to_dense(model: nn.Module) -> Conversion:
    """Replace every :class:`VersatileConv2d` by an ``nn.Conv2d`` with its unfolded weight.

    The dense layer runs the very convolution the versatile one runs (same weight tensor, same
    ``F.conv2d`` call), so outputs are exactly equal. Use it before ONNX export or for a
    runtime that knows only standard layers.

    Returns:
        The recorded step (kind ``versatile_dense``) for :func:`prunekit.save`.

    Example:
        >>> step = to_dense(model)
        >>> torch.onnx.export(model, x, "model.onnx")
    """
    paths = []
    for path, mod in list(model.named_modules()):
        if isinstance(mod, VersatileConv2d):
            _replace(model, path, mod.deploy_module())
            paths.append(path)
    return Conversion("versatile_dense", {"layers": paths}, module=__name__)


def _module(model: nn.Module, path: str, cls: type[nn.Module], kind: str) -> Any:
    try:
        mod = model.get_submodule(path)
    except AttributeError:
        raise PlanError(
            f"{kind} conversion names {path!r}, which the model does not have"
        ) from None
    if not isinstance(mod, cls):
        raise PlanError(
            f"{kind} conversion expects {path!r} to be {cls.__name__}, got {type(mod).__name__}"
        )
    return mod


def _replay_versatile(model: nn.Module, data: Mapping[str, Any]) -> None:
    for path, st in dict(data.get("layers", {})).items():
        conv = _module(model, path, nn.Conv2d, "versatile")
        setting = LayerSetting(bool(st["spatial"]), int(st["delta"]), int(st["g"]))
        _replace(model, path, _versatile_from(conv, setting))


def _replay_dense(model: nn.Module, data: Mapping[str, Any]) -> None:
    for path in list(data.get("layers", [])):
        _replace(
            model, path, _module(model, path, VersatileConv2d, "versatile_dense").deploy_module()
        )


CONVERSIONS.add("versatile", _replay_versatile)
CONVERSIONS.add("versatile_dense", _replay_dense)
