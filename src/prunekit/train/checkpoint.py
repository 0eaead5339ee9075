"""Pickle-free, atomic training checkpoints.

Layout of ``<dir>`` (usually ``out_dir/checkpoint``)::

    epoch-0007/
        tensors.safetensors   every tensor (model, optimizer state, RNG states)
        state.json            everything else; tensors appear as {"__tensor__": key}
    .tmp-epoch-0008-xxxx/     an interrupted write (ignored, cleaned up on the next save)

A checkpoint is written into a temp folder and renamed into place with ``os.replace`` (atomic),
so a complete ``epoch-NNNN`` folder is either fully there or absent; the newest complete one
wins. ``state.json`` records the SHA-256 of the tensor file so a damaged file is detected.
Nothing is ever unpickled.

Example:
    >>> save_checkpoint(ckpt_dir, epoch=3, state={"model": model.state_dict(), "epoch": 3})
    >>> state = load_checkpoint(ckpt_dir)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from prunekit._fileio import atomic_write_bytes, make_temp_dir
from prunekit.errors import CheckpointError

FORMAT = "prunekit-train-checkpoint/1"
TENSORS = "tensors.safetensors"
STATE = "state.json"
_EPOCH_DIR = re.compile(r"^epoch-(\d+)$")


def encode(obj: Any, tensors: dict[str, torch.Tensor], path: str = "") -> Any:
    """Turn a nested structure into JSON data, moving every tensor into ``tensors``.

    Dicts with non-string keys, tuples and numpy arrays get tagged objects so that
    :func:`decode` restores them exactly (``optimizer.state_dict()`` has int keys).
    """
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().cpu().contiguous()
        return {"__tensor__": path}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype), "shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        items = [(k, encode(v, tensors, f"{path}/{k}")) for k, v in obj.items()]
        if all(isinstance(k, str) and not k.startswith("__") for k, _ in items):
            return dict(items)
        if not all(isinstance(k, str | int) for k, _ in items):
            raise CheckpointError(f"cannot store dict keys of {path!r}: only str and int keys")
        return {"__dict__": [[k, v] for k, v in items]}
    if isinstance(obj, tuple):
        return {"__tuple__": [encode(v, tensors, f"{path}/{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode(v, tensors, f"{path}/{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    raise CheckpointError(
        f"cannot store {type(obj).__name__} at {path!r} in a checkpoint; use tensors or JSON data"
    )


def decode(data: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`encode`."""
    if isinstance(data, list):
        return [decode(v, tensors) for v in data]
    if not isinstance(data, dict):
        return data
    if "__tensor__" in data:
        return tensors[data["__tensor__"]]
    if "__ndarray__" in data:
        arr = np.asarray(data["__ndarray__"], dtype=np.dtype(data["dtype"]))
        return arr.reshape(data["shape"])
    if "__tuple__" in data:
        return tuple(decode(v, tensors) for v in data["__tuple__"])
    if "__dict__" in data:
        return {k: decode(v, tensors) for k, v in data["__dict__"]}
    return {k: decode(v, tensors) for k, v in data.items()}


def _unshare(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors sharing memory (tied weights, views); copy the repeats.
    seen: set[tuple[int, Any]] = set()
    out = {}
    for key, t in tensors.items():
        ident = (t.untyped_storage().data_ptr(), t.storage_offset()) if t.numel() else (0, -1)
        out[key] = t.clone() if ident in seen and t.numel() else t
        seen.add(ident)
    return out


def save_checkpoint(directory: str | os.PathLike[str], epoch: int, state: dict[str, Any]) -> Path:
    """Atomically write ``state`` as checkpoint ``epoch`` and drop older ones.

    Args:
        directory: checkpoint folder (created if needed).
        epoch: number of completed epochs; names the sub-folder.
        state: nested dicts/lists of tensors and JSON data.

    Returns:
        The folder of the new checkpoint.
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    body = encode(state, tensors)
    blob = safetensors_save(_unshare(tensors))
    meta = {"format": FORMAT, "epoch": epoch, "sha256": hashlib.sha256(blob).hexdigest()}
    tmp = make_temp_dir(root, f".tmp-epoch-{epoch:04d}-")
    try:
        atomic_write_bytes(tmp / TENSORS, blob)
        text = json.dumps({"meta": meta, "state": body}, indent=1)
        atomic_write_bytes(tmp / STATE, text.encode("utf-8"))
        final = root / f"epoch-{epoch:04d}"
        if final.exists():  # a re-run of the same epoch: move the stale copy out of the way
            os.replace(final, root / f".old-{final.name}-{os.getpid()}")
        os.replace(tmp, final)  # the commit point
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _prune_old(root, keep=final)
    return final


def _prune_old(root: Path, keep: Path) -> None:
    for child in root.iterdir():
        if child == keep:
            continue
        if _EPOCH_DIR.match(child.name) or child.name.startswith((".tmp-epoch-", ".old-")):
            shutil.rmtree(child, ignore_errors=True)


def latest_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """The newest complete ``epoch-NNNN`` folder in ``directory``, or ``None``."""
    root = Path(directory)
    if not root.is_dir():
        return None
    found = [(int(m.group(1)), c) for c in root.iterdir() if (m := _EPOCH_DIR.match(c.name))]
    return max(found)[1] if found else None


def load_checkpoint(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Load the newest checkpoint in ``directory`` (or a given ``epoch-NNNN`` folder).

    Returns:
        The ``state`` passed to :func:`save_checkpoint`, tensors on the CPU.

    Raises:
        CheckpointError: nothing there, or the files are damaged or of another format.
    """
    path = Path(directory)
    folder = path if _EPOCH_DIR.match(path.name) else latest_checkpoint(path)
    fix = f"delete {path} (or run without --resume) to start over"
    if folder is None or not folder.is_dir():
        raise CheckpointError(f"no checkpoint found in {path}; train without resume first")
    try:
        doc = json.loads((folder / STATE).read_text(encoding="utf-8"))
        blob = (folder / TENSORS).read_bytes()
        meta = doc["meta"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {folder} is unreadable ({exc}); {fix}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{folder} is not a {FORMAT} checkpoint; {fix}")
    if hashlib.sha256(blob).hexdigest() != meta.get("sha256"):
        raise CheckpointError(f"checkpoint {folder / TENSORS} is corrupt (checksum); {fix}")
    try:
        tensors = safetensors_load(blob)
        return dict(decode(doc["state"], tensors))
    except Exception as exc:  # safetensors raises its own types; wrap them all the same way
        raise CheckpointError(f"checkpoint {folder} is corrupt ({exc}); {fix}") from None
