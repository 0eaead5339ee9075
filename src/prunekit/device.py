"""Which device a run uses — one rule for the trainer, methods, recipes, data loaders and CLI."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TypeVar

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


_T = TypeVar("_T")


@contextlib.contextmanager
def temporarily(get: Callable[[], _T], set: Callable[[_T], None], value: _T) -> Iterator[None]:
    """Run the block with a process-wide setting at ``value``, restored afterwards (also on error).

    Example:
        >>> with temporarily(torch.get_num_threads, torch.set_num_threads, 1):
        ...     pass
    """
    before = get()
    set(value)
    try:
        yield
    finally:
        set(before)


def threads_set(threads: int | None) -> contextlib.AbstractContextManager[None]:
    """Run the block with ``threads`` intra-op CPU threads (``None``: leave as is).

    Example:
        >>> with threads_set(1):  # many small ops: OpenMP threads cost more than they give
        ...     pass
    """
    if threads is None:
        return contextlib.nullcontext()
    return temporarily(torch.get_num_threads, torch.set_num_threads, threads)
