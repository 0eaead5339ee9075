"""Decode-once cache: decoded uint8 tensors in safetensors plus a JSON sidecar.

A cache entry is ``<name>-<key>.safetensors`` (tensors ``<split>.images`` / ``<split>.labels``)
and ``<name>-<key>.json`` (classes, train mean/std, split sizes, the data file's byte size and the
source fingerprint). ``key`` hashes the fingerprint: the source's absolute path plus the size and
mtime of its files (for folders: the mtime of every split and class folder, which changes when
files are added, removed or renamed). Both files are written atomically, data first, so a sidecar
only ever points at a complete data file. An entry that fails any check is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from prunekit._fileio import atomic_path
from prunekit.data.formats import Layout

__all__ = ["CacheMeta", "default_cache_dir", "fingerprint", "load_entry", "save_entry"]

FORMAT_VERSION = 1
log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$PRUNEKIT_CACHE`` if set, else ``~/.cache/prunekit/datasets``."""
    env = os.environ.get("PRUNEKIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "prunekit" / "datasets"


def _stat(path: Path, root: Path) -> list[Any]:
    st = path.stat()
    rel = "." if path == root else path.relative_to(root).as_posix()
    return [rel, st.st_size if path.is_file() else 0, st.st_mtime_ns]


def fingerprint(layout: Layout) -> dict[str, Any]:
    """Identify a source's content cheaply (no file hashing).

    Args:
        layout: the detected layout.

    Returns:
        JSON-able dict: layout kind, absolute root, and ``[relative name, size, mtime_ns]`` of
        its files (for folders: of the root, split and class folders).
    """
    root = layout.root.resolve()
    if layout.kind == "folder":
        paths = [root]
        for child in sorted(p for p in root.iterdir() if p.is_dir()):
            paths.append(child)
            paths.extend(sorted(p for p in child.iterdir() if p.is_dir()))
    else:
        paths = [f.resolve() for f in layout.files]
    base = root if layout.root.is_dir() else root.parent
    return {
        "kind": layout.kind,
        "root": str(root),
        "files": [_stat(p, base) for p in paths],
        "format": FORMAT_VERSION,
    }


def entry_stem(layout: Layout, fp: dict[str, Any]) -> str:
    """``<readable name>-<16 hex digits of the fingerprint hash>``."""
    digest = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]
    name = layout.root.resolve().name or "dataset"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    return f"{name}-{digest}"


@dataclass
class CacheMeta:
    """Sidecar contents: what the data file holds."""

    classes: list[str]
    mean: list[float]
    std: list[float]
    splits: dict[str, list[int]]  # split -> images shape N,C,H,W
    data_bytes: int
    fingerprint: dict[str, Any]


def save_entry(
    cache_dir: Path, stem: str, tensors: dict[str, Tensor], meta_fields: dict[str, Any]
) -> Path | None:
    """Write a cache entry atomically; returns the data path, or ``None`` if unwritable.

    Args:
        cache_dir: the cache folder (created if needed).
        stem: file stem from :func:`entry_stem`.
        tensors: ``<split>.images`` / ``<split>.labels`` tensors.
        meta_fields: ``classes``, ``mean``, ``std``, ``fingerprint``.
    """
    from safetensors.torch import save_file

    data_path = cache_dir / f"{stem}.safetensors"
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(data_path) as tmp:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
        splits = {
            k.removesuffix(".images"): list(v.shape)
            for k, v in tensors.items()
            if k.endswith(".images")
        }
        meta = {**meta_fields, "splits": splits, "data_bytes": data_path.stat().st_size}
        with atomic_path(cache_dir / f"{stem}.json") as tmp:
            tmp.write_text(json.dumps(meta, indent=1))
    except OSError as exc:
        # A read-only or full disk must not stop training; the data is simply decoded again.
        log.warning(
            "could not write dataset cache in %s (%s); continuing without it", cache_dir, exc
        )
        return None
    return data_path


def load_entry(
    cache_dir: Path, stem: str, fp: dict[str, Any], splits: list[str]
) -> tuple[CacheMeta, dict[str, Tensor]] | None:
    """Load ``splits`` from a cache entry, or ``None`` if it is missing, stale or corrupt."""
    meta_path, data_path = cache_dir / f"{stem}.json", cache_dir / f"{stem}.safetensors"
    if not meta_path.is_file() or not data_path.is_file():
        return None
    try:
        meta = CacheMeta(**json.loads(meta_path.read_text()))
        if meta.fingerprint != fp:
            return None
        if data_path.stat().st_size != meta.data_bytes:
            raise ValueError(f"size {data_path.stat().st_size} != recorded {meta.data_bytes}")
        if any(s not in meta.splits for s in splits):
            raise ValueError(f"splits {sorted(meta.splits)} lack one of {splits}")
        tensors = _read_tensors(data_path, meta, splits)
    except Exception as exc:  # any damage (bad JSON, bad header, wrong shapes) → rebuild
        log.warning("dataset cache %s is corrupt (%s); rebuilding it", data_path, exc)
        return None
    return meta, tensors


def _read_tensors(path: Path, meta: CacheMeta, splits: list[str]) -> dict[str, Tensor]:
    import torch
    from safetensors import safe_open

    out: dict[str, Tensor] = {}
    with safe_open(str(path), framework="pt") as f:
        for split in splits:
            images, labels = f.get_tensor(f"{split}.images"), f.get_tensor(f"{split}.labels")
            shape = meta.splits[split]
            if list(images.shape) != shape or images.dtype != torch.uint8:
                raise ValueError(f"{split}.images is {images.dtype}{list(images.shape)}")
            if labels.shape != (shape[0],) or labels.dtype != torch.int64:
                raise ValueError(f"{split}.labels is {labels.dtype}{list(labels.shape)}")
            out[f"{split}.images"], out[f"{split}.labels"] = images, labels
    return out
