"""Image-folder trees, on disk or inside a tar archive.

Accepted trees (``<class>`` folder names sorted give the label order)::

    root/train/<class>/*.jpg  root/test/<class>/*.jpg    (also training/testing, val, ...)
    root/<class>/*.png                                   (no splits: one split named "all")

A tar archive may wrap such a tree in one top folder. An archive without images (such as
torchvision's ``cifar-10-python.tar.gz``) is unpacked to a temporary folder and read as an
array layout.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
import tempfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

import torch

from prunekit.data.decode import ImageItem, decode_images
from prunekit.data.formats import RawData, _array_layout, read_array_layout
from prunekit.errors import DataError

__all__ = ["IMAGE_SUFFIXES", "SPLIT_ALIASES", "read_folder", "read_tar"]

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
# Folder names accepted for each canonical split name.
SPLIT_ALIASES = {
    "train": ("train", "training"),
    "test": ("test", "testing", "val", "valid", "validation"),
}
_SPLIT_OF = {alias: split for split, aliases in SPLIT_ALIASES.items() for alias in aliases}

# split -> class name -> [(name, bytes or path)]
Tree = dict[str, dict[str, list[ImageItem]]]


def _is_image(name: str) -> bool:
    base = PurePosixPath(name).name
    return not base.startswith(".") and PurePosixPath(base).suffix.lower() in IMAGE_SUFFIXES


def _visible_dirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan_classes(split_dir: Path) -> dict[str, list[ImageItem]]:
    classes: dict[str, list[ImageItem]] = {}
    for class_dir in _visible_dirs(split_dir):
        files = sorted(p for p in class_dir.iterdir() if p.is_file() and _is_image(p.name))
        classes[class_dir.name] = [(str(p), str(p)) for p in files]
    return classes


def read_folder(root: Path, *, workers: int | None = None, progress: bool | None = None) -> RawData:
    """Read an image-folder tree from disk (see the module docstring for the layouts)."""
    dirs = _visible_dirs(root)
    split_dirs = {_SPLIT_OF[d.name.lower()]: d for d in dirs if d.name.lower() in _SPLIT_OF}
    if split_dirs:
        tree = {split: _scan_classes(d) for split, d in split_dirs.items()}
        where = {split: str(d) for split, d in split_dirs.items()}
    else:
        tree, where = {"all": _scan_classes(root)}, {"all": str(root)}
    return _decode_tree(tree, where, workers=workers, progress=progress)


def _decode_tree(
    tree: Tree, where: dict[str, str], *, workers: int | None, progress: bool | None
) -> RawData:
    """Check the tree, then decode all splits in one parallel pass."""
    if "test" in tree and "train" not in tree:
        raise DataError(f"found {where['test']} but no train split next to it; expected train/")
    classes = sorted({c for split in tree.values() for c in split})
    if not classes:
        first = next(iter(where.values()))
        raise DataError(f"no class folders under {first}; expected {first}/<class>/*.jpg (or .png)")
    items: list[ImageItem] = []
    bounds: dict[str, tuple[int, int]] = {}
    labels: dict[str, list[int]] = {}
    for split, by_class in tree.items():
        start = len(items)
        labels[split] = []
        for label, name in enumerate(classes):
            files = by_class.get(name, [])
            items.extend(files)
            labels[split].extend([label] * len(files))
        if len(items) == start:
            raise DataError(
                f"no images under {where[split]}; expected {where[split]}/<class>/*.jpg (or .png)"
            )
        bounds[split] = (start, len(items))
    images = decode_images(items, workers=workers, progress=progress)
    splits = {
        split: (images[a:b], torch.tensor(labels[split], dtype=torch.int64))
        for split, (a, b) in bounds.items()
    }
    return RawData(splits, classes)


def _strip_common_top(names: list[PurePosixPath]) -> list[PurePosixPath]:
    """Drop a single wrapping folder (``cifar10/train/cat/1.jpg`` → ``train/cat/1.jpg``)."""
    while names and all(len(n.parts) >= 3 for n in names):
        top = {n.parts[0] for n in names}
        if len(top) != 1 or next(iter(top)).lower() in _SPLIT_OF:
            break
        names = [PurePosixPath(*n.parts[1:]) for n in names]
    return names


def _tar_tree(archive: Path, members: Iterable[tuple[str, bytes]]) -> tuple[Tree, dict[str, str]]:
    entries = list(members)
    rel = _strip_common_top([PurePosixPath(name) for name, _ in entries])
    tree: Tree = {}
    for (name, data), path in zip(entries, rel):
        parts = path.parts
        if len(parts) == 3 and parts[0].lower() in _SPLIT_OF:
            split, cls = _SPLIT_OF[parts[0].lower()], parts[1]
        elif len(parts) == 2:
            split, cls = "all", parts[0]
        else:
            raise DataError(
                f"{archive}: member {name} does not fit an image-folder tree; expected "
                "train/<class>/<image>, test/<class>/<image> or <class>/<image>"
            )
        tree.setdefault(split, {}).setdefault(cls, []).append((f"{archive}:{name}", data))
    for by_class in tree.values():
        for files in by_class.values():
            files.sort(key=lambda item: item[0])
    return tree, {split: f"{archive}:{split}/" for split in tree}


def _open_tar(archive: Path) -> tarfile.TarFile:
    """Open an archive; small ones are decompressed into memory first.

    Parsing an in-memory tar is ~2x faster than tarfile's seeking inside a gzip stream; big
    archives are streamed instead so memory stays bounded.
    """
    try:
        if archive.stat().st_size >= 2**30:
            return tarfile.open(archive, "r|*")
        raw = archive.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        elif raw[:3] == b"BZh":
            raw = bz2.decompress(raw)
        elif raw[:6] == b"\xfd7zXZ\x00":
            raw = lzma.decompress(raw)
        return tarfile.open(fileobj=io.BytesIO(raw), mode="r:")
    except (tarfile.TarError, OSError, EOFError, lzma.LZMAError) as exc:
        raise DataError(f"cannot read archive {archive}: {exc}") from None


def read_tar(archive: Path, *, workers: int | None = None, progress: bool | None = None) -> RawData:
    """Read an image-folder tree (or a CIFAR/MNIST array layout) from a tar archive."""
    images: list[tuple[str, bytes]] = []
    try:
        with _open_tar(archive) as tf:
            for member in tf:
                if member.isfile() and _is_image(member.name):
                    fh = tf.extractfile(member)
                    assert fh is not None
                    images.append((member.name, fh.read()))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"archive {archive} is truncated or corrupt: {exc}") from None
    if not images:
        return _read_unpacked(archive)
    tree, where = _tar_tree(archive, images)
    return _decode_tree(tree, where, workers=workers, progress=progress)


def _read_unpacked(archive: Path) -> RawData:
    """Unpack an archive without images into a temp folder and read its array layout."""
    with tempfile.TemporaryDirectory(prefix="prunekit-unpack-") as tmp:
        root = Path(tmp)
        with _open_tar(archive) as tf:
            for member in tf:
                rel = PurePosixPath(member.name)
                # Only plain files with relative, non-escaping names are written (no links).
                if not member.isfile() or rel.is_absolute() or ".." in rel.parts:
                    continue
                target = root.joinpath(*rel.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                fh = tf.extractfile(member)
                assert fh is not None
                target.write_bytes(fh.read())
        for candidate in [root, *sorted(p for p in root.rglob("*") if p.is_dir())]:
            layout = _array_layout(candidate)
            if layout is not None:
                return read_array_layout(layout)
    raise DataError(
        f"archive {archive} holds no images and no CIFAR/MNIST files; expected "
        "train/<class>/*.jpg, test/<class>/*.jpg or <class>/*.png inside"
    )
