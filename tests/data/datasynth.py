"""Builders for small synthetic datasets in every supported on-disk format (test helpers)."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def make_pixels(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def write_png(path: Path, chw: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = chw[0] if chw.shape[0] == 1 else chw.transpose(1, 2, 0)
    Image.fromarray(img).save(path)


def png_bytes(chw: np.ndarray) -> bytes:
    buf = io.BytesIO()
    img = chw[0] if chw.shape[0] == 1 else chw.transpose(1, 2, 0)
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def write_image_tree(
    root: Path, splits: dict[str, dict[str, np.ndarray]]
) -> dict[str, dict[str, np.ndarray]]:
    """Write ``root/<split>/<class>/<i>.png`` (``split == ""`` = no split folder)."""
    for split, by_class in splits.items():
        for cls, images in by_class.items():
            for i, chw in enumerate(images):
                write_png(root / split / cls / f"{i:04d}.png", chw)
    return splits


def write_cifar10_python(root: Path, per_batch: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """A miniature ``cifar-10-batches-py`` written like the real (Python 2 style) pickles."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {"train_x": [], "train_y": [], "test_x": [], "test_y": []}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=per_batch).tolist()
        batch = {b"batch_label": b"x", b"data": data, b"labels": labels}
        (root / name).write_bytes(pickle.dumps(batch, protocol=2))
        key = "test" if name == "test_batch" else "train"
        out[f"{key}_x"].append(data)
        out[f"{key}_y"].append(np.array(labels))
    names = [f"class{i}".encode() for i in range(10)]
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))
    return {k: np.concatenate(v) for k, v in out.items()}


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    data = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if compress else data)
