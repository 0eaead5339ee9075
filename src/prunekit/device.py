"""Which device a run uses — one rule for the trainer, methods, recipes, data loaders and CLI."""

from __future__ import annotations

import torch

from prunekit.errors import ConfigError


def resolve_device(
    name: str | torch.device | None = None, *, local_rank: int | None = None
) -> torch.device:
    """The device for ``name``: ``None`` → CUDA when available, else CPU.

    ``"cuda"`` without an index becomes ``cuda:0``, or ``cuda:LOCAL_RANK`` for a rank of a
    distributed run (``local_rank``), so every rank of ``torchrun`` gets its own GPU.

    Raises:
        ConfigError: CUDA is asked for but not available.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {str(name)!r} requested but CUDA is not available; use 'cpu'")
        if local_rank is not None or dev.index is None:
            dev = torch.device("cuda", local_rank if local_rank is not None else 0)
    return dev
