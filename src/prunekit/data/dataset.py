"""The in-memory dataset type (:class:`ImageTensors`) and helpers to split and subset it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from prunekit.errors import DataError

__all__ = [
    "ImageTensors",
    "channel_stats",
    "stratified_split",
    "stratified_subset",
    "subset",
]


@dataclass
class ImageTensors:
    """A labelled image dataset held as two tensors.

    Args:
        images: ``uint8`` tensor of shape ``N×C×H×W`` (raw pixels, 0..255).
        labels: ``int64`` tensor of shape ``N`` with values in ``[0, len(classes))``.
        classes: class names; ``labels`` index into it.
        mean: per-channel mean of the *train* split, in ``[0, 1]`` units.
        std: per-channel standard deviation of the *train* split, in ``[0, 1]`` units.
        name: a short description of where the data came from (for logs).

    Example:
        >>> ds = load_dataset("digits")  # doctest: +SKIP
        >>> ds.images.shape, ds.num_classes
        (torch.Size([1437, 1, 8, 8]), 10)
    """

    images: Tensor
    labels: Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str = field(default="")

    def __post_init__(self) -> None:
        what = f"dataset {self.name!r}" if self.name else "dataset"
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(
                f"{what}: images must be a uint8 N×C×H×W tensor, got "
                f"{self.images.dtype} of shape {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            raise DataError(
                f"{what}: labels must be an int64 tensor of length {self.images.shape[0]}, got "
                f"{self.labels.dtype} of shape {tuple(self.labels.shape)}"
            )
        channels = self.images.shape[1]
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)
        if len(self.mean) != channels or len(self.std) != channels:
            raise DataError(f"{what}: mean/std need {channels} values (one per channel)")
        if self.labels.numel() and (
            int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)
        ):
            raise DataError(f"{what}: labels fall outside [0, {len(self.classes)})")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def select(self, index: Tensor, name: str | None = None) -> ImageTensors:
        """Return the samples at ``index`` (keeping classes and train mean/std)."""
        return ImageTensors(
            images=self.images[index],
            labels=self.labels[index],
            classes=list(self.classes),
            mean=self.mean,
            std=self.std,
            name=self.name if name is None else name,
        )


def channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images, in ``[0, 1]`` units.

    Builds a 256-bin histogram per channel (exact, and ~8x faster than float accumulation on a
    CPU), then takes the moments of the histogram.

    Args:
        images: ``uint8`` tensor ``N×C×H×W``.

    Returns:
        ``(mean, std)``, each a tuple with one float per channel.
    """
    if images.shape[0] == 0:
        raise DataError("cannot compute mean/std of an empty dataset")
    channels = images.shape[1]
    hist = torch.zeros(channels, 256, dtype=torch.float64)
    for chunk in images.cpu().split(8192):
        for c in range(channels):
            hist[c] += torch.bincount(chunk[:, c].reshape(-1), minlength=256).double()
    values = torch.arange(256, dtype=torch.float64) / 255.0
    count = hist.sum(1)
    mean = (hist * values).sum(1) / count
    var = ((hist * values**2).sum(1) / count - mean**2).clamp_min(0)
    std = var.sqrt().clamp_min(1e-3)  # a constant channel must not divide by zero later
    return tuple(mean.tolist()), tuple(std.tolist())


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """Vectorised SplitMix64 hash (Steele et al. 2014): a fixed, version-independent mixer."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def stratified_split(
    labels: Tensor, test_fraction: float = 0.2, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Deterministic per-class split of sample indices into train and test.

    Within each class, samples are ordered by a hash of ``(seed, index)`` and the first
    ``round(test_fraction * n_class)`` go to test. The hash (not a library RNG) keeps the split
    identical across numpy/torch versions, so a cached dataset always splits the same way.

    Args:
        labels: ``int64`` labels, one per sample.
        test_fraction: share of each class put into the test split, in ``(0, 1)``.
        seed: selects a different (but again fixed) split.

    Returns:
        ``(train_index, test_index)``, sorted ``int64`` tensors.
    """
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    lab = labels.cpu().numpy()
    index = np.arange(lab.shape[0], dtype=np.uint64)
    keys = _splitmix64(index ^ _splitmix64(np.full_like(index, seed)))
    test: list[np.ndarray] = []
    for c in np.unique(lab):
        members = np.flatnonzero(lab == c)
        order = members[np.argsort(keys[members], kind="stable")]
        test.append(order[: round(test_fraction * members.size)])
    test_idx = np.sort(np.concatenate(test)) if test else np.zeros(0, dtype=np.int64)
    is_test = np.zeros(lab.shape[0], dtype=bool)
    is_test[test_idx] = True
    train_idx = np.flatnonzero(~is_test)
    return torch.from_numpy(train_idx.astype(np.int64)), torch.from_numpy(test_idx.astype(np.int64))


def subset(ds: ImageTensors, n: int, seed: int = 0) -> ImageTensors:
    """A random subset of ``n`` samples (without replacement), in their original order.

    Args:
        ds: the dataset.
        n: number of samples to keep (at most ``len(ds)``).
        seed: random seed.

    Returns:
        A new :class:`ImageTensors` sharing ``classes``/``mean``/``std`` with ``ds``.

    Example:
        >>> small = subset(load_dataset("digits"), 200, seed=1)  # doctest: +SKIP
    """
    if not 0 <= n <= len(ds):
        raise DataError(f"subset size {n} is outside [0, {len(ds)}] for dataset {ds.name!r}")
    gen = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(ds), generator=gen)[:n].sort().values
    return ds.select(index)


def stratified_subset(ds: ImageTensors, per_class: int, seed: int = 0) -> ImageTensors:
    """A class-balanced subset: ``per_class`` random samples of every class.

    Args:
        ds: the dataset.
        per_class: samples to keep per class; classes with fewer samples keep all of them.
        seed: random seed.

    Returns:
        A new :class:`ImageTensors` with at most ``per_class * num_classes`` samples, in their
        original order.

    Example:
        >>> tiny = stratified_subset(load_dataset("digits"), 20)  # doctest: +SKIP
        >>> len(tiny)
        200
    """
    if per_class < 0:
        raise DataError(f"per_class must be >= 0, got {per_class}")
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(ds), generator=gen)
    shuffled = ds.labels[order]
    keep: list[Tensor] = []
    for c in range(ds.num_classes):
        keep.append(order[shuffled == c][:per_class])
    index = torch.cat(keep).sort().values if keep else torch.zeros(0, dtype=torch.int64)
    return ds.select(index)
