"""Seeding and capture/restore of every random-number generator a training run touches."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> int:
    """Seed python ``random``, numpy and torch (CPU and all CUDA devices).

    Args:
        seed: any integer; numpy needs it reduced to 32 bits, which is done here.

    Returns:
        The seed, for logging.

    Example:
        >>> seed_everything(0)
        0
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return seed


def get_rng_state(loader: Any = None) -> dict[str, Any]:
    """Snapshot of python, numpy, torch CPU/CUDA and (if any) the loader's generator state.

    The loader's state is taken from ``loader.state_dict()`` when it has one, else from a
    ``loader.generator`` ``torch.Generator`` (as on ``torch.utils.data.DataLoader``).
    """
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(legacy=False),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if loader is not None:
        if callable(getattr(loader, "state_dict", None)):
            state["loader"] = loader.state_dict()
        elif isinstance(getattr(loader, "generator", None), torch.Generator):
            state["loader_generator"] = loader.generator.get_state()
    return state


def set_rng_state(state: dict[str, Any], loader: Any = None) -> None:
    """Restore a snapshot taken by :func:`get_rng_state`."""
    random.setstate(_as_tuple(state["python"]))
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if loader is not None:
        if "loader" in state and callable(getattr(loader, "load_state_dict", None)):
            loader.load_state_dict(state["loader"])
        elif "loader_generator" in state and isinstance(
            getattr(loader, "generator", None), torch.Generator
        ):
            loader.generator.set_state(state["loader_generator"])


def _as_tuple(obj: Any) -> Any:
    # random.setstate wants nested tuples; a JSON round trip may hand back lists.
    if isinstance(obj, list | tuple):
        return tuple(_as_tuple(o) for o in obj)
    return obj
