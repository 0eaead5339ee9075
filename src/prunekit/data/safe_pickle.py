"""Read the CIFAR "python version" pickles without executing arbitrary code.

``pickle.load`` can run any callable named in the file. The CIFAR batches only need numpy's
array/dtype reconstruction (and ``_codecs.encode``, which Python 3 writes for bytes at protocol 2),
so :class:`RestrictedUnpickler` resolves exactly those globals and refuses everything else.
"""

from __future__ import annotations

import importlib
import io
import pickle
from pathlib import Path
from typing import Any

from prunekit.errors import DataError

__all__ = ["RestrictedUnpickler", "safe_load_pickle"]

# (module, name) pairs a CIFAR pickle may reference. numpy 2 renamed ``numpy.core`` to
# ``numpy._core``; files written by either version name one of them.
_ALLOWED: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that only resolves the globals needed for plain numpy arrays.

    Args:
        file: a binary file object.
        source: the file's name, used in error messages.
    """

    def __init__(self, file: io.BufferedIOBase | io.BytesIO, source: str) -> None:
        # The CIFAR files were written by Python 2; "bytes" keeps str payloads as raw bytes.
        super().__init__(file, encoding="bytes")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise DataError(
                f"{self.source}: refusing to unpickle {module}.{name}; only numpy arrays are "
                "allowed in dataset pickles (the file is not a CIFAR batch, or was tampered with)"
            )
        if module.startswith("numpy.core"):
            module = _numpy_core_module(module)
        return getattr(importlib.import_module(module), name)


def _numpy_core_module(module: str) -> str:
    """Map ``numpy.core.*`` to ``numpy._core.*`` on numpy 2 (avoids its deprecation shim)."""
    try:
        importlib.import_module("numpy._core.multiarray")
    except ImportError:
        return module
    return module.replace("numpy.core", "numpy._core", 1)


def safe_load_pickle(path: Path) -> Any:
    """Load a dataset pickle with :class:`RestrictedUnpickler`.

    Args:
        path: the pickle file.

    Returns:
        The unpickled object (for CIFAR: a dict with ``bytes`` keys).

    Raises:
        DataError: the file is missing, truncated, or references a forbidden global.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return RestrictedUnpickler(io.BytesIO(data), str(path)).load()
    except DataError:
        raise
    except Exception as exc:  # pickle raises many types on corrupt input
        raise DataError(f"{path} is not a readable pickle ({type(exc).__name__}: {exc})") from None
