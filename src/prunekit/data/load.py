"""``load_dataset``: turn a dataset spec into an :class:`ImageTensors`, decoding once and caching."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from prunekit.data.cache import default_cache_dir, entry_stem, fingerprint, load_entry, save_entry
from prunekit.data.dataset import ImageTensors, channel_stats, stratified_split
from prunekit.data.folders import read_folder, read_tar
from prunekit.data.formats import Layout, RawData, detect_layout, read_array_layout
from prunekit.errors import DataError

__all__ = ["SPLITS", "DatasetSpec", "load_dataset", "parse_dataset_spec"]

SPLITS = ("train", "test", "all")
TEST_FRACTION = 0.2  # share held out when a source has no test split of its own
# kind -> (number of classes, channels) the named dataset must have; None = not checked.
KINDS: dict[str, tuple[int, int] | None] = {
    "auto": None,
    "imagefolder": None,
    "cifar10": (10, 3),
    "cifar100": (100, 3),
    "mnist": (10, 1),
    "fashionmnist": (10, 1),
}


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed dataset spec.

    Args:
        kind: ``digits``, ``auto`` (detect from the path), ``imagefolder``, ``cifar10``,
            ``cifar100``, ``mnist`` or ``fashionmnist``. Named kinds check the class and
            channel count after loading.
        path: where the data lives (``None`` for ``digits``).
    """

    kind: str
    path: Path | None = None


def parse_dataset_spec(spec: str | os.PathLike[str] | DatasetSpec) -> DatasetSpec:
    """Parse ``"digits"``, ``"cifar10:/data/cifar10-jpeg.tar.gz"``, ``"mnist:/data/MNIST"`` or a path.

    Args:
        spec: the spec string, a path, or an already parsed spec.

    Returns:
        The :class:`DatasetSpec`.

    Example:
        >>> parse_dataset_spec("cifar10:~/data/cifar10-jpeg.tar.gz").kind
        'cifar10'
    """
    if isinstance(spec, DatasetSpec):
        return spec
    if isinstance(spec, os.PathLike):
        return DatasetSpec("auto", Path(spec).expanduser())
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"dataset spec must be a non-empty string or path, got {spec!r}")
    text = spec.strip()
    if text == "digits":
        return DatasetSpec("digits")
    kind, sep, rest = text.partition(":")
    if sep and kind.lower() in KINDS:
        if not rest:
            raise DataError(f"dataset spec {spec!r} lacks a path; write e.g. '{kind}:/data/...'")
        return DatasetSpec(kind.lower(), Path(rest).expanduser())
    if sep and len(kind) > 1 and not Path(text).expanduser().exists():
        known = ", ".join(["digits", *KINDS])
        raise DataError(f"unknown dataset kind {kind!r} in {spec!r}; known kinds: {known}")
    return DatasetSpec("auto", Path(text).expanduser())


def _load_digits(split: str) -> ImageTensors:
    """scikit-learn's 8×8 digits (UCI, 1797 images of 0..16) scaled to uint8 and split 80/20."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = torch.from_numpy(bunch.images).mul(255.0 / 16.0).round().to(torch.uint8)
    raw = RawData(
        {"all": (pixels[:, None].contiguous(), torch.from_numpy(bunch.target).long())},
        [str(i) for i in range(10)],
    )
    mean, std = _train_stats(raw)
    return _assemble(raw, split, mean, std, "digits")


def _train_stats(raw: RawData) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if "train" in raw.splits:
        return channel_stats(raw.splits["train"][0])
    images, labels = raw.splits["all"]
    train_idx, _ = stratified_split(labels, TEST_FRACTION)
    return channel_stats(images[train_idx])


def _assemble(
    raw: RawData,
    split: str,
    mean: tuple[float, ...] | list[float],
    std: tuple[float, ...] | list[float],
    name: str,
) -> ImageTensors:
    """Pick ``split`` out of the raw splits (deriving train/test when only ``all`` exists)."""
    splits = raw.splits
    if split in splits:
        images, labels = splits[split]
    elif split == "all":
        order = sorted(splits, key=lambda s: (s != "train", s))  # train first, then test
        images = torch.cat([splits[s][0] for s in order])
        labels = torch.cat([splits[s][1] for s in order])
    elif "all" in splits:
        train_idx, test_idx = stratified_split(splits["all"][1], TEST_FRACTION)
        index = train_idx if split == "train" else test_idx
        images, labels = splits["all"][0][index], splits["all"][1][index]
    else:
        raise DataError(f"{name} has splits {sorted(splits)}, not {split!r}")
    return ImageTensors(
        images, labels, list(raw.classes), tuple(mean), tuple(std), f"{name}:{split}"
    )


def _read_source(layout: Layout, workers: int | None, progress: bool | None) -> RawData:
    if layout.kind == "tar":
        return read_tar(layout.root, workers=workers, progress=progress)
    if layout.kind == "folder":
        return read_folder(layout.root, workers=workers, progress=progress)
    return read_array_layout(layout)


def _needed_splits(split: str, available: dict[str, list[int]]) -> list[str]:
    if split in available:
        return [split]
    return ["all"] if "all" in available else sorted(available)


def load_dataset(
    source: str | os.PathLike[str] | DatasetSpec,
    split: str = "train",
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    progress: bool | None = None,
    refresh: bool = False,
) -> ImageTensors:
    """Load a dataset split as uint8 tensors, decoding image files once and caching the result.

    Args:
        source: a dataset spec (see :mod:`prunekit.data`): ``"digits"``,
            ``"cifar10:/path/cifar10-jpeg.tar.gz"``, ``"mnist:/path/MNIST"``, or a bare path.
        split: ``"train"``, ``"test"`` or ``"all"``. Sources without their own test split are
            split 80/20 per class, deterministically.
        cache_dir: cache folder; ``None`` = ``$PRUNEKIT_CACHE`` or ``~/.cache/prunekit/datasets``.
        workers: decoding processes; ``None`` = all cores (max 16), ``1`` = no pool.
        progress: progress bar while decoding; ``None`` = only on a terminal.
        refresh: ignore an existing cache entry and rebuild it.

    Returns:
        The split, with ``mean``/``std`` of the train split.

    Raises:
        DataError: the source is missing or malformed, or does not match a named kind.

    Example:
        >>> train = load_dataset("cifar10:../shared/data/cifar10-jpeg.tar.gz")  # doctest: +SKIP
        >>> train.images.shape
        torch.Size([50000, 3, 32, 32])
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    spec = parse_dataset_spec(source)
    if spec.kind == "digits":
        return _load_digits(split)
    assert spec.path is not None
    layout = detect_layout(spec.path)
    fp = fingerprint(layout)
    stem = entry_stem(layout, fp)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    name = f"{spec.kind}:{spec.path}" if spec.kind != "auto" else str(spec.path)
    hit = None if refresh else _from_cache(cache, stem, fp, split)
    if hit is not None:
        raw, mean, std = hit
    else:
        raw = _read_source(layout, workers, progress)
        _check_raw(raw, layout.root)
        mean, std = _train_stats(raw)
        tensors: dict[str, Tensor] = {}
        for s, (images, labels) in raw.splits.items():
            tensors[f"{s}.images"], tensors[f"{s}.labels"] = images, labels
        meta = {"classes": raw.classes, "mean": list(mean), "std": list(std), "fingerprint": fp}
        save_entry(cache, stem, tensors, meta)
    ds = _assemble(raw, split, mean, std, name)
    _check_kind(ds, spec)
    return ds


def _from_cache(
    cache: Path, stem: str, fp: dict[str, Any], split: str
) -> tuple[RawData, tuple[float, ...], tuple[float, ...]] | None:
    """Read the needed splits from the cache, or ``None`` on a miss."""
    meta_path = cache / f"{stem}.json"
    try:
        available = json.loads(meta_path.read_text()).get("splits", {})
    except (OSError, ValueError, AttributeError):
        return None
    hit = load_entry(cache, stem, fp, _needed_splits(split, available))
    if hit is None:
        return None
    meta, tensors = hit
    splits = {
        k.removesuffix(".images"): (v, tensors[k.replace(".images", ".labels")])
        for k, v in tensors.items()
        if k.endswith(".images")
    }
    return RawData(splits, meta.classes), tuple(meta.mean), tuple(meta.std)


def _check_raw(raw: RawData, root: Path) -> None:
    for split, (_, labels) in raw.splits.items():
        if labels.numel() and int(labels.max()) >= len(raw.classes):
            raise DataError(
                f"{root}: {split} labels reach {int(labels.max())} but only "
                f"{len(raw.classes)} class names were found"
            )


def _check_kind(ds: ImageTensors, spec: DatasetSpec) -> None:
    expected = KINDS.get(spec.kind)
    if expected is None:
        return
    classes, channels = expected
    if ds.num_classes != classes or ds.image_shape[0] != channels:
        raise DataError(
            f"{spec.path} holds {ds.num_classes} classes of {ds.image_shape[0]}-channel images, "
            f"but '{spec.kind}' expects {classes} classes with {channels} channel(s); "
            "check the path or drop the prefix"
        )
