"""Decode many small JPEG/PNG images into one uint8 array, in parallel.

Decoding is the slow part of loading an image-folder dataset (60k CIFAR JPEGs take a few
seconds per core), so the work is cut into chunks and spread over a process pool; results come
back as numpy arrays in the original order. ``torchvision.io.decode_image`` (libjpeg-turbo,
libpng) is about 3x faster than PIL for 32×32 images; PIL is the fallback for other formats.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing as mp
import os
import sys
import warnings
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from prunekit.errors import DataError

__all__ = ["ImageItem", "decode_images", "default_workers"]

# One image to decode: (name for messages, raw file bytes or a path to read).
ImageItem = tuple[str, bytes | str]

CHUNK = 2048  # images per task: large enough to amortise pickling, small enough to balance
MIN_PARALLEL = 4096  # below this a pool's start-up costs more than it saves


def default_workers() -> int:
    """CPU cores this process may use (``PRUNEKIT_WORKERS`` overrides), capped at 16."""
    env = os.environ.get("PRUNEKIT_WORKERS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise DataError(f"PRUNEKIT_WORKERS must be an integer, got {env!r}") from None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        cores = os.cpu_count() or 1
    return max(1, min(cores, 16))


def _decode_one(name: str, payload: bytes | str) -> np.ndarray:
    """Decode one image to a ``C×H×W`` uint8 array with 1 or 3 channels."""
    data = Path(payload).read_bytes() if isinstance(payload, str) else payload
    try:
        from torchvision.io import ImageReadMode, decode_image

        # bytearray: torch.frombuffer warns on read-only buffers such as bytes.
        arr = decode_image(
            torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.UNCHANGED
        ).numpy()
    except Exception:  # unsupported by torchvision (e.g. BMP, some TIFF): use PIL
        arr = _decode_pil(name, data)
    if arr.shape[0] == 2:  # gray + alpha
        arr = arr[:1]
    elif arr.shape[0] == 4:  # RGBA
        arr = arr[:3]
    return np.ascontiguousarray(arr)


def _decode_pil(name: str, data: bytes) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            mode = "L" if img.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB"
            arr = np.asarray(img.convert(mode))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"cannot decode image {name}: {exc}") from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _to_rgb(arr: np.ndarray) -> np.ndarray:
    return np.repeat(arr, 3, axis=-3) if arr.shape[-3] == 1 else arr


def _decode_chunk(items: Sequence[ImageItem]) -> np.ndarray:
    """Decode a chunk into one ``n×C×H×W`` array; gray is promoted to RGB if the chunk mixes."""
    with warnings.catch_warnings():
        # torchvision >= 0.29 deprecates its image codecs in favour of TorchCodec; they still
        # work, and _decode_one falls back to PIL once they are gone.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
        arrays = [_decode_one(name, payload) for name, payload in items]
    if len({a.shape[0] for a in arrays}) > 1:
        arrays = [_to_rgb(a) for a in arrays]
    first = arrays[0].shape
    for (name, _), a in zip(items, arrays):
        if a.shape != first:
            raise DataError(
                f"image {name} is {a.shape[2]}x{a.shape[1]} but {items[0][0]} is "
                f"{first[2]}x{first[1]}; all images of a dataset must have the same size "
                "(resize them first)"
            )
    return np.stack(arrays)


def _pool_context() -> mp.context.BaseContext:
    # fork starts workers instantly and they inherit the imported torchvision; the workers only
    # decode bytes (no CUDA, no OpenMP), which is what makes forking a threaded parent safe.
    if sys.platform.startswith("linux"):
        return mp.get_context("fork")
    return mp.get_context("spawn")


def decode_images(
    items: Sequence[ImageItem], *, workers: int | None = None, progress: bool | None = None
) -> torch.Tensor:
    """Decode images into one ``uint8`` tensor ``N×C×H×W``, keeping the order of ``items``.

    Args:
        items: ``(name, bytes_or_path)`` pairs.
        workers: processes to use; ``None`` = :func:`default_workers`, ``1`` = in this process.
        progress: show a tqdm bar; ``None`` = only when stderr is a terminal.

    Returns:
        The images; grayscale sets have ``C == 1``, mixed gray/colour sets are promoted to RGB.

    Raises:
        DataError: an image cannot be decoded, or sizes differ.
    """
    if not items:
        raise DataError("no images to decode")
    # Import the decoder here, once: forked workers inherit it instead of each paying the
    # seconds-long torchvision import on their first image.
    with contextlib.suppress(ImportError):
        import torchvision.io  # noqa: F401
    from tqdm.auto import tqdm

    workers = default_workers() if workers is None else max(1, workers)
    chunks = [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]
    disable = (not sys.stderr.isatty()) if progress is None else not progress
    bar = tqdm(total=len(items), desc="decoding images", unit="img", disable=disable)
    parts: list[np.ndarray] = []
    try:
        if workers == 1 or len(items) < MIN_PARALLEL:
            for chunk in chunks:
                parts.append(_decode_chunk(chunk))
                bar.update(len(chunk))
        else:
            with ProcessPoolExecutor(min(workers, len(chunks)), mp_context=_pool_context()) as ex:
                futures: list[Future[np.ndarray]] = [ex.submit(_decode_chunk, c) for c in chunks]
                for fut, chunk in zip(futures, chunks):
                    parts.append(fut.result())
                    bar.update(len(chunk))
    finally:
        bar.close()
    return _concat(parts, items)


def _concat(parts: list[np.ndarray], items: Sequence[ImageItem]) -> torch.Tensor:
    if len({p.shape[1] for p in parts}) > 1:
        parts = [_to_rgb(p) for p in parts]
    shapes = {p.shape[1:] for p in parts}
    if len(shapes) > 1:
        raise DataError(
            f"images under {Path(items[0][0]).parent} have different sizes {sorted(shapes)}; "
            "all images of a dataset must have the same size (resize them first)"
        )
    return torch.from_numpy(np.concatenate(parts))
