"""Atomic file writes shared by the whole package.

Every result file is written to a temp file in the destination folder, flushed to disk
(``fsync``), given ordinary permissions and moved into place with ``os.replace``. A crash or
Ctrl-C mid-write therefore never leaves a half-written file behind, and readers never see a
partial one (``os.replace`` is atomic on POSIX and Windows within one volume; the temp file sits
in the same folder so the rename never crosses a file-system boundary).

Example:
    >>> atomic_write_text("runs/x/metrics.json", "{}")
    >>> with atomic_path("runs/x/plot.png") as tmp:
    ...     fig.savefig(tmp, format="png")
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "make_temp_dir"]


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: the umask can only be read by setting it, which is not thread-safe.
_UMASK = _read_umask()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    """Persist a rename (POSIX); folders cannot be opened this way on Windows, so skip there."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems (e.g. certain network mounts) refuse; the data is safe
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path next to ``path``; on success it replaces ``path``, on error it is removed.

    The caller writes the temp file by any means (``fig.savefig``, ``save_file``, ...); on
    leaving the block it is fsync'd, given the permissions a plain ``open`` would give
    (``0o666 & ~umask``; ``mkstemp`` makes ``0o600``) and renamed over ``path``.

    Args:
        path: final destination; its parent folder is created if needed.

    Returns:
        A context manager yielding the temp :class:`~pathlib.Path`.

    Example:
        >>> with atomic_path("out/model.safetensors") as tmp:
        ...     save_file(tensors, str(tmp))
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        # After the writer, not before: some writers (safetensors' save_file) replace the temp
        # file with a new 0o600 one of their own.
        os.chmod(tmp, 0o666 & ~_UMASK)
        _fsync_file(tmp)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`).

    Example:
        >>> atomic_write_bytes("out/weights.bin", b"...")
    """
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_path`).

    Example:
        >>> atomic_write_text("out/report.md", "# Report\\n")
    """
    atomic_write_bytes(path, text.encode("utf-8"))


def make_temp_dir(parent: str | os.PathLike[str], prefix: str) -> Path:
    """A new folder in ``parent`` with ordinary permissions (``mkdtemp`` alone makes 0o700).

    Used to build a multi-file result (e.g. a checkpoint) before renaming it into place.

    Args:
        parent: existing folder that will hold the temp folder.
        prefix: name prefix of the temp folder.

    Returns:
        The new folder's path.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(path, 0o777 & ~_UMASK)
    return path
