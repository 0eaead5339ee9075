"""Pausing Python's cyclic garbage collector around allocation-heavy, cycle-free work."""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


@contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic GC for the block (nesting-safe; restores the previous state).

    Why: tracing creates ~10^5 short-lived objects. In a process that has imported torch the
    heap holds millions of long-lived objects, and a full (generation-2) collection that those
    allocations happen to trigger scans all of them — 0.25 s of a 0.5 s ResNet-50 trace on a
    2-core CPU. The objects created here free themselves by reference counting; nothing is
    leaked by deferring the collector until the block ends.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def with_gc_paused(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorator form of :func:`gc_paused`."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with gc_paused():
            return fn(*args, **kwargs)

    return wrapper
