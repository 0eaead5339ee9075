"""A small name → object registry used for layer handlers, criteria, models and methods.

Example:
    >>> CRITERIA = Registry("criterion")
    >>> @CRITERIA.register("l1")
    ... def l1(weight): ...
    >>> CRITERIA.get("l1")
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from prunekit.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects; unknown names raise :class:`ConfigError` listing close matches.

    Args:
        kind: what the registry holds, used in error messages (e.g. ``"criterion"``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, *, overwrite: bool = False) -> Callable[[T], T]:
        """Decorator registering an object under ``name``."""

        def deco(obj: T) -> T:
            self.add(name, obj, overwrite=overwrite)
            return obj

        return deco

    def add(self, name: str, obj: T, *, overwrite: bool = False) -> None:
        """Register ``obj`` under ``name`` (error if taken, unless ``overwrite``)."""
        if name in self._items and not overwrite:
            raise ConfigError(f"{self.kind} {name!r} is already registered; pass overwrite=True")
        self._items[name] = obj

    def remove(self, name: str) -> T:
        """Unregister ``name`` and return its object (e.g. a test's temporary entry)."""
        obj = self.get(name)  # unknown names: the usual error with close matches
        del self._items[name]
        return obj

    def get(self, name: str) -> T:
        """Return the object registered as ``name``."""
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._items), n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            known = ", ".join(sorted(self._items))
            raise ConfigError(f"unknown {self.kind} {name!r}.{hint} Known: {known}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self._items)


def for_class(table: Mapping[type | str, T], obj: object) -> T | None:
    """The entry of ``obj``'s class or of its nearest base class in a class-keyed table.

    A class may also be keyed by its dotted name ``"module.QualName"``, so that a handler can
    be registered for a third-party class without importing its package.

    Example:
        >>> for_class({int: "int"}, True)  # bool is an int
        'int'
    """
    for cls in type(obj).__mro__:
        entry = table.get(cls) or table.get(f"{cls.__module__}.{cls.__qualname__}")
        if entry is not None:
            return entry
    return None
