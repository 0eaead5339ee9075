"""A device-resident batch loader with vectorised augmentation.

CIFAR/MNIST-sized datasets fit in accelerator memory as uint8 (CIFAR-10 train: 150 MiB), so
:class:`TensorLoader` moves them to the device once and builds every batch there: index,
augment (random crop with zero padding + horizontal flip, as in He et al. 2016's CIFAR recipe),
convert and normalise — no worker processes, no host-to-device copies per step. The same code
runs on the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from torch import Tensor

from prunekit.config import drop_nones
from prunekit.data.dataset import ImageTensors, channel_stats
from prunekit.device import resolve_device
from prunekit.errors import ConfigError, DataError

__all__ = ["AUGMENT_PRESETS", "AugmentConfig", "TensorLoader", "augment_batch"]


class AugmentConfig(BaseModel):
    """Batch augmentation settings; unknown keys are errors, ``None`` values mean the default.

    Args:
        crop_padding: zero padding for the random crop (``0`` turns cropping off).
        hflip: flip each image horizontally with probability 1/2.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    crop_padding: int = Field(default=4, ge=0)
    hflip: bool = True

    @model_validator(mode="before")
    @classmethod
    def _none_is_default(cls, data: Any) -> Any:
        return drop_nones(data)


AUGMENT_PRESETS: dict[str, AugmentConfig | None] = {
    "none": None,
    "flip": AugmentConfig(crop_padding=0),
    "crop_flip": AugmentConfig(),
    "cifar": AugmentConfig(),
}


def _parse_augment(value: AugmentConfig | dict[str, Any] | str | None) -> AugmentConfig | None:
    if value is None or isinstance(value, AugmentConfig):
        return value
    if isinstance(value, str):
        if value not in AUGMENT_PRESETS:
            raise ConfigError(
                f"unknown augmentation preset {value!r}; use one of {', '.join(AUGMENT_PRESETS)}"
            )
        return AUGMENT_PRESETS[value]
    try:
        return AugmentConfig.model_validate(value)
    except ValidationError as exc:
        raise ConfigError(f"invalid augmentation config {value!r}: {exc}") from None


def augment_batch(x: Tensor, cfg: AugmentConfig, generator: torch.Generator) -> Tensor:
    """Randomly crop (zero padding) and flip each image of a batch, without a Python loop.

    The batch is padded once; each sample's crop offset and flip become one flat index per
    output pixel, and a single ``gather`` reads all crops at once.

    Args:
        x: ``B×C×H×W`` batch (any dtype; uint8 keeps it cheap).
        cfg: what to apply.
        generator: source of randomness, on ``x``'s device.

    Returns:
        The augmented batch, same shape and dtype.
    """
    b, c, h, w = x.shape
    p, dev = cfg.crop_padding, x.device
    if p == 0 and not cfg.hflip:
        return x
    padded = F.pad(x, (p, p, p, p)) if p else x
    if p:
        oy = torch.randint(0, 2 * p + 1, (b, 1), generator=generator, device=dev)
        ox = torch.randint(0, 2 * p + 1, (b, 1), generator=generator, device=dev)
    else:
        oy = ox = torch.zeros(b, 1, dtype=torch.long, device=dev)
    rows = oy + torch.arange(h, device=dev)  # b×h
    cols = torch.arange(w, device=dev).expand(b, w)
    if cfg.hflip:
        flip = torch.rand(b, 1, generator=generator, device=dev) < 0.5
        cols = torch.where(flip, w - 1 - cols, cols)
    cols = ox + cols  # b×w
    flat = (rows[:, :, None] * (w + 2 * p) + cols[:, None, :]).reshape(b, 1, h * w)
    out = padded.reshape(b, c, -1).gather(2, flat.expand(b, c, h * w))
    return out.reshape(b, c, h, w)


def _stream_seed(seed: int, epoch: int) -> int:
    """Mix (seed, epoch) into one 63-bit seed (SplitMix64 finaliser, Steele et al. 2014)."""
    mask = (1 << 64) - 1
    z = (seed * 0x9E3779B97F4A7C15 + epoch * 0xD1B54A32D192ED03 + 1) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return (z ^ (z >> 31)) & ((1 << 63) - 1)


class TensorLoader:
    """Yield ``(x, y)`` batches from uint8 images held on ``device``.

    Args:
        data: an :class:`ImageTensors`, or ``(images, labels)`` with uint8 ``N×C×H×W`` images.
        batch_size: samples per batch.
        shuffle: reshuffle every epoch.
        drop_last: skip the last, smaller batch.
        device: where the data lives and batches are built (``None`` = CPU).
        augment: ``None``, a preset (``"crop_flip"``, ``"flip"``, ``"none"``), a dict or an
            :class:`AugmentConfig`.
        normalize: subtract the mean and divide by the std per channel; else only scale to [0, 1].
        mean: per-channel mean in [0, 1] units; ``None`` = the dataset's (or computed).
        std: per-channel std in [0, 1] units; ``None`` = the dataset's (or computed).
        seed: base seed; the shuffle and augmentation of epoch ``e`` depend on ``(seed, e)`` only.
        dtype: floating dtype of ``x`` (``torch.float32`` or ``torch.bfloat16``).
        channels_last: return ``x`` in channels-last memory format.

    Each ``iter()`` runs the current epoch and advances it; :meth:`set_epoch` jumps to an epoch,
    so a resumed run sees exactly the batches it would have seen.

    Example:
        >>> loader = TensorLoader(load_dataset("digits"), 64, shuffle=True)  # doctest: +SKIP
        >>> x, y = next(iter(loader))
        >>> x.shape, y.shape
        (torch.Size([64, 1, 8, 8]), torch.Size([64]))
    """

    def __init__(
        self,
        data: ImageTensors | tuple[Tensor, Tensor],
        batch_size: int,
        *,
        shuffle: bool = False,
        drop_last: bool = False,
        device: torch.device | str | None = None,
        augment: AugmentConfig | dict[str, Any] | str | None = None,
        normalize: bool = True,
        mean: tuple[float, ...] | list[float] | None = None,
        std: tuple[float, ...] | list[float] | None = None,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
    ) -> None:
        images, labels, ds_mean, ds_std = _unpack(data, normalize and (mean is None or std is None))
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if not dtype.is_floating_point:
            raise ConfigError(f"dtype must be a floating type such as torch.float32, got {dtype}")
        self.device = resolve_device(device if device is not None else "cpu")
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.augment = _parse_augment(augment)
        self.seed, self.dtype, self.channels_last = seed, dtype, channels_last
        self.epoch = 0
        self._scale, self._shift = self._affine(normalize, mean or ds_mean, std or ds_std)

    def _affine(
        self,
        normalize: bool,
        mean: tuple[float, ...] | list[float],
        std: tuple[float, ...] | list[float],
    ) -> tuple[Tensor, Tensor]:
        """``x_float = x_uint8 * scale + shift`` implements ``(x / 255 - mean) / std``."""
        channels = self.images.shape[1]
        if not normalize:
            mean, std = [0.0] * channels, [1.0] * channels
        if len(mean) != channels or len(std) != channels:
            raise ConfigError(f"mean/std need {channels} values, got {len(mean)} and {len(std)}")
        m = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        return 1.0 / (255.0 * s), -m / s

    def __len__(self) -> int:
        n = self.images.shape[0]
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    @property
    def num_samples(self) -> int:
        """Number of samples in the dataset."""
        return int(self.images.shape[0])

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` produce epoch ``epoch``'s shuffle and augmentation."""
        if epoch < 0:
            raise ConfigError(f"epoch must be >= 0, got {epoch}")
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        gen = torch.Generator(device=self.device)
        gen.manual_seed(_stream_seed(self.seed, self.epoch))
        self.epoch += 1
        n = self.num_samples
        order = torch.randperm(n, generator=gen, device=self.device) if self.shuffle else None
        for i in range(len(self)):
            lo, hi = i * self.batch_size, min((i + 1) * self.batch_size, n)
            if order is None:
                x, y = self.images[lo:hi], self.labels[lo:hi]
            else:
                idx = order[lo:hi]
                x, y = self.images[idx], self.labels[idx]
            yield self._finish(x, gen), y

    def _finish(self, x: Tensor, gen: torch.Generator) -> Tensor:
        if self.augment is not None:
            x = augment_batch(x, self.augment, gen)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        # Normalise in float32 even for bf16 output: bf16 cannot hold mean*255 exactly.
        out = x.to(torch.float32).mul_(self._scale).add_(self._shift)
        return out if self.dtype == torch.float32 else out.to(self.dtype)


def _unpack(
    data: ImageTensors | tuple[Tensor, Tensor], need_stats: bool
) -> tuple[Tensor, Tensor, tuple[float, ...], tuple[float, ...]]:
    if isinstance(data, ImageTensors):
        return data.images, data.labels, data.mean, data.std
    if not (isinstance(data, tuple | list) and len(data) == 2):
        raise DataError("TensorLoader needs an ImageTensors or an (images, labels) pair")
    images, labels = data
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise DataError(
            f"TensorLoader needs uint8 N×C×H×W images, got {images.dtype} {tuple(images.shape)}; "
            "convert with (x * 255).round().to(torch.uint8)"
        )
    if labels.shape != images.shape[:1]:
        raise DataError(f"{images.shape[0]} images but labels of shape {tuple(labels.shape)}")
    mean, std = channel_stats(images) if need_stats else ((), ())
    return images, labels.long(), mean, std
