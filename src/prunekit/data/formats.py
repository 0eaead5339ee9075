"""Readers for the classic array formats: CIFAR python/binary batches and MNIST idx files.

Each reader returns a :class:`RawData` holding every split the source has. Layout detection
(:func:`detect_layout`) decides which reader a path needs.
"""

from __future__ import annotations

import gzip
import struct
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from prunekit.data.safe_pickle import safe_load_pickle
from prunekit.errors import DataError

__all__ = ["Layout", "RawData", "detect_layout", "read_array_layout"]

CIFAR10_PY = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"]
CIFAR10_BIN = [f"{name}.bin" for name in CIFAR10_PY]
MNIST_IDX = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


@dataclass
class RawData:
    """Every split of a source as uint8 images and int64 labels, before normalisation stats."""

    splits: dict[str, tuple[Tensor, Tensor]]
    classes: list[str]


@dataclass
class Layout:
    """A detected on-disk layout.

    Args:
        kind: ``cifar10-python``, ``cifar100-python``, ``cifar10-binary``, ``cifar100-binary``,
            ``mnist-idx``, ``folder`` or ``tar``.
        root: the directory (or archive) holding the files.
        files: the files whose size and mtime identify the data (for the cache fingerprint).
    """

    kind: str
    root: Path
    files: list[Path] = field(default_factory=list)


def _is_tar(path: Path) -> bool:
    return path.name.lower().endswith(TAR_SUFFIXES) or tarfile.is_tarfile(path)


def _idx_file(root: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    return None


def _array_layout(root: Path) -> Layout | None:
    """The array format stored directly in ``root``, if any."""
    if all((root / n).is_file() for n in [*CIFAR10_PY, "test_batch", "batches.meta"]):
        files = [root / n for n in [*CIFAR10_PY, "test_batch", "batches.meta"]]
        return Layout("cifar10-python", root, files)
    if all((root / n).is_file() for n in ("train", "test", "meta")):
        return Layout("cifar100-python", root, [root / n for n in ("train", "test", "meta")])
    if all((root / n).is_file() for n in [*CIFAR10_BIN, "test_batch.bin"]):
        return Layout("cifar10-binary", root, [root / n for n in [*CIFAR10_BIN, "test_batch.bin"]])
    if all((root / n).is_file() for n in ("train.bin", "test.bin")):
        return Layout("cifar100-binary", root, [root / "train.bin", root / "test.bin"])
    idx = [_idx_file(root, stem) for pair in MNIST_IDX.values() for stem in pair]
    if all(p is not None for p in idx):
        return Layout("mnist-idx", root, [p for p in idx if p is not None])
    return None


def detect_layout(path: Path) -> Layout:
    """Work out which format ``path`` holds.

    Args:
        path: a ``.tar[.gz]`` archive, a CIFAR/MNIST folder (or a parent of torchvision's
            ``cifar-10-batches-py``/``MNIST/raw`` folders), or an image-folder tree.

    Returns:
        The :class:`Layout`; anything that is a directory but no array format is ``folder``.
    """
    if not path.exists():
        raise DataError(f"dataset path {path} does not exist")
    if path.is_file():
        if _is_tar(path):
            return Layout("tar", path, [path])
        raise DataError(
            f"{path} is a file but not a tar archive; expected a .tar.gz of an image-folder tree, "
            "or a folder"
        )
    subdirs = [
        "cifar-10-batches-py",
        "cifar-100-python",
        "cifar-10-batches-bin",
        "cifar-100-binary",
        "MNIST/raw",
        "raw",
    ]
    for candidate in [path, *(path / s for s in subdirs)]:
        if candidate.is_dir():
            layout = _array_layout(candidate)
            if layout is not None:
                return layout
    return Layout("folder", path, [path])


def read_array_layout(layout: Layout) -> RawData:
    """Read a CIFAR or MNIST array layout (everything but ``folder``/``tar``)."""
    readers = {
        "cifar10-python": _read_cifar10_python,
        "cifar100-python": _read_cifar100_python,
        "cifar10-binary": lambda root: _read_cifar_binary(root, fine=False),
        "cifar100-binary": lambda root: _read_cifar_binary(root, fine=True),
        "mnist-idx": _read_mnist_idx,
    }
    if layout.kind not in readers:
        raise DataError(f"no array reader for layout {layout.kind!r} at {layout.root}")
    return readers[layout.kind](layout.root)


def _cifar_batch(path: Path, label_key: bytes) -> tuple[Tensor, Tensor]:
    obj = safe_load_pickle(path)
    if not isinstance(obj, dict) or b"data" not in obj or label_key not in obj:
        raise DataError(
            f"{path} is not a CIFAR batch: expected a dict with keys b'data' and {label_key!r}"
        )
    data = np.asarray(obj[b"data"], dtype=np.uint8)
    labels = np.asarray(obj[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != labels.shape[0]:
        raise DataError(
            f"{path}: expected data of shape N×3072 and N labels, got {data.shape} and "
            f"{labels.shape}"
        )
    # Each row holds the 1024 red, then green, then blue values of one image in row-major order.
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return images, torch.from_numpy(labels)


def _label_names(path: Path, key: bytes) -> list[str]:
    meta = safe_load_pickle(path)
    if not isinstance(meta, dict) or key not in meta:
        raise DataError(f"{path} has no {key!r} entry; expected CIFAR metadata")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in meta[key]]


def _read_cifar10_python(root: Path) -> RawData:
    parts = [_cifar_batch(root / name, b"labels") for name in CIFAR10_PY]
    train = (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
    test = _cifar_batch(root / "test_batch", b"labels")
    classes = _label_names(root / "batches.meta", b"label_names")
    return RawData({"train": train, "test": test}, classes)


def _read_cifar100_python(root: Path) -> RawData:
    train = _cifar_batch(root / "train", b"fine_labels")
    test = _cifar_batch(root / "test", b"fine_labels")
    classes = _label_names(root / "meta", b"fine_label_names")
    return RawData({"train": train, "test": test}, classes)


def _read_cifar_binary(root: Path, *, fine: bool) -> RawData:
    """CIFAR binary records: label byte(s) then 3072 pixel bytes (CIFAR-100: coarse, fine)."""
    head = 2 if fine else 1
    names = {"train": ["train.bin"], "test": ["test.bin"]}
    if not fine:
        names = {"train": CIFAR10_BIN, "test": ["test_batch.bin"]}
    splits: dict[str, tuple[Tensor, Tensor]] = {}
    for split, files in names.items():
        chunks = []
        for name in files:
            raw = np.fromfile(root / name, dtype=np.uint8)
            if raw.size % (head + 3072):
                raise DataError(f"{root / name} is not a multiple of {head + 3072}-byte records")
            chunks.append(raw.reshape(-1, head + 3072))
        rec = np.concatenate(chunks)
        images = torch.from_numpy(rec[:, head:].reshape(-1, 3, 32, 32).copy())
        splits[split] = (images, torch.from_numpy(rec[:, head - 1].astype(np.int64)))
    meta = root / ("fine_label_names.txt" if fine else "batches.meta.txt")
    if meta.is_file():
        classes = [ln.strip() for ln in meta.read_text().splitlines() if ln.strip()]
    else:
        classes = [str(i) for i in range(int(splits["train"][1].max()) + 1)]
    return RawData(splits, classes)


def _read_idx(path: Path) -> np.ndarray:
    """An idx file (LeCun's MNIST format): magic ``00 00 08 ndim``, big-endian dims, bytes."""
    raw = path.read_bytes()
    try:
        data = gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError) as exc:
        raise DataError(f"{path} is not a valid gzip file: {exc}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte idx file (bad magic number)")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise DataError(f"{path} holds {arr.size} values but its header says {dims}")
    return arr.reshape(dims)


def _read_mnist_idx(root: Path) -> RawData:
    splits: dict[str, tuple[Tensor, Tensor]] = {}
    for split, (img_stem, lab_stem) in MNIST_IDX.items():
        img_path, lab_path = _idx_file(root, img_stem), _idx_file(root, lab_stem)
        assert img_path is not None and lab_path is not None  # guaranteed by detect_layout
        images, labels = _read_idx(img_path), _read_idx(lab_path)
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise DataError(
                f"{img_path} / {lab_path}: expected N×H×W images and N labels, got "
                f"{images.shape} and {labels.shape}"
            )
        splits[split] = (
            torch.from_numpy(images[:, None].copy()),
            torch.from_numpy(labels.astype(np.int64)),
        )
    classes = [str(i) for i in range(int(splits["train"][1].max()) + 1)]
    return RawData(splits, classes)
