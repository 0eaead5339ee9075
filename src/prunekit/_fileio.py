"""Atomic file writes shared by the whole package.

Every result file is written to a temp file in the destination folder, flushed to disk
(``fsync``), given ordinary permissions and moved into place with ``os.replace``. A crash or
Ctrl-C mid-write therefore never leaves a half-written file behind, and readers never see a
partial one (``os.replace`` is atomic on POSIX and Windows within one volume; the temp file sits
in the same folder so the rename never crosses a file-system boundary).

Folders get the same treatment: :func:`atomic_dir` builds a result folder in a temp sibling
and renames it into place only when everything in it was written; :func:`run_dir` guards a
resumable run folder; :func:`check_output_dir` refuses, before any work starts, an output path
that cannot be written or that already holds results.

Example:
    >>> atomic_write_text("runs/x/metrics.json", "{}")
    >>> with atomic_path("runs/x/plot.png") as tmp:
    ...     fig.savefig(tmp, format="png")
    >>> check_output_dir("out/model", what="--out")
    >>> with atomic_dir("out/model") as tmp:
    ...     save(model, tmp, spec)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from prunekit.errors import ConfigError

__all__ = [
    "atomic_dir",
    "atomic_files",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_output_dir",
    "check_output_file",
    "check_writable",
    "make_temp_dir",
    "run_dir",
]


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


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (``lexists``: a dangling link counts)."""
    here = Path(os.path.abspath(path))
    while not os.path.lexists(here) and here.parent != here:
        here = here.parent
    return here


def check_writable(path: str | os.PathLike[str], *, what: str = "output") -> Path:
    """Fail now, not after the work, when ``path`` (a file or folder to make) cannot be created.

    Walks up to the closest existing ancestor: it must be a folder (not a regular file) in
    which a file can actually be created (probed with a temp file, removed at once; permission
    bits alone do not tell, e.g. for root or a read-only mount).

    Args:
        path: the output path (need not exist).
        what: how to name it in the error (e.g. ``"--out"``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ConfigError: a regular file is in the way, or the folder is not writable.
    """
    target = Path(path)
    base = _nearest_existing(target)
    if base != Path(os.path.abspath(target)) and not base.is_dir():
        raise ConfigError(
            f"{what} {target}: {base} is a file, not a folder; choose a path outside it"
        )
    probe_dir = base if base.is_dir() else base.parent
    try:
        fd, probe = tempfile.mkstemp(prefix=".prunekit-probe-", dir=probe_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(
            f"{what} {target}: cannot write in {probe_dir} ({exc.strerror or exc}); "
            "choose a writable location"
        ) from None
    return target


def check_output_dir(
    path: str | os.PathLike[str],
    *,
    what: str = "output folder",
    reuse: bool = False,
    fix: str = "pass --overwrite to replace it",
) -> bool:
    """Check, before any work, that ``path`` can become a result folder without losing one.

    Args:
        path: the folder to write.
        what: how to name it in errors (e.g. ``"--out"``).
        reuse: the caller was told to reuse or replace an existing folder (``--resume`` /
            ``--overwrite``); a non-empty folder is then fine.
        fix: what the error tells the user to do about an existing non-empty folder.

    Returns:
        Whether ``path`` already exists as a non-empty folder.

    Raises:
        ConfigError: ``path`` is a file, sits under a file, is not writable, or is a non-empty
            folder and ``reuse`` is false.

    Example:
        >>> check_output_dir(args.out, what="--out", reuse=args.overwrite)
    """
    target = Path(path)
    # Refusals first: they must not touch anything (the write probe below changes an mtime).
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{what} {target} is a file, not a folder; choose another {what}")
    taken = target.is_dir() and any(target.iterdir())
    if taken and not reuse:
        raise ConfigError(
            f"{what} {target} already exists and is not empty; {fix}, or choose another {what}"
        )
    check_writable(target, what=what)
    return taken


def check_output_file(
    path: str | os.PathLike[str], *, what: str = "output file", replace: bool = False
) -> Path:
    """:func:`check_output_dir` for a single file: writable, not a folder, not clobbered.

    Raises:
        ConfigError: ``path`` cannot be written, is a folder, or exists and ``replace`` is false.
    """
    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"{what} {target} is a folder; give a file name")
    if target.exists() and not replace:
        raise ConfigError(
            f"{what} {target} already exists; pass --overwrite to replace it, or choose another "
            "name"
        )
    return check_writable(target, what=what)


def _aside(path: Path, tag: str) -> Path:
    """A free hidden sibling name for ``path`` (``.NAME.TAG-XXXX``)."""
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.{tag}-", dir=path.parent))


def _swap_in(tmp: Path, target: Path, replace: bool) -> None:
    """Rename the finished folder ``tmp`` to ``target``; an old ``target`` goes only if asked."""
    old = None
    if os.path.lexists(target):
        if not replace:
            raise ConfigError(f"{target} appeared while it was being written; nothing replaced")
        old = _aside(target, "old")
        os.replace(target, old)  # onto the empty placeholder folder: atomic on POSIX
    os.replace(tmp, target)
    _fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], *, replace: bool = False) -> Iterator[Path]:
    """Yield an empty temp folder beside ``path``; on success it becomes ``path``.

    Whatever fails inside the block (an exception, Ctrl-C), the temp folder is removed and an
    existing ``path`` is untouched, so no half-written result folder is ever visible.

    Args:
        path: the final folder (its parent is created if needed).
        replace: replace an existing ``path`` (else finding one at the end is an error).

    Returns:
        A context manager yielding the temp folder's :class:`~pathlib.Path`.

    Example:
        >>> with atomic_dir("out/resnet18-p50", replace=args.overwrite) as tmp:
        ...     save(model, tmp, spec)
        ...     report.plot(tmp / "report.png")
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(target.parent, f".{target.name}.tmp-")
    try:
        yield tmp
        _swap_in(tmp, target, replace)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_files(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp folder inside ``folder``; on success its files are moved into ``folder``.

    For results made of sibling files (``model.onnx`` + ``model.export.json``): nothing is
    moved unless the whole block succeeded, and each move is an atomic rename.

    Example:
        >>> with atomic_files("exports") as tmp:
        ...     export_model(model, x, tmp / "m.onnx")
    """
    dest = Path(folder)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(dest, ".prunekit-tmp-")
    try:
        yield tmp
        for f in sorted(tmp.iterdir()):
            os.replace(f, dest / f.name)
        _fsync_dir(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _holds_weights(path: Path) -> bool:
    return path.is_dir() and any(path.rglob("*.safetensors"))


@contextlib.contextmanager
def run_dir(
    path: str | os.PathLike[str],
    *,
    replace: bool = False,
    resumable: Callable[[Path], bool] = _holds_weights,
) -> Iterator[Path]:
    """Guard a run folder that is written as the run goes (checkpoints, metrics).

    Such a folder cannot be built aside and renamed: ``--resume`` after a kill must find it. So:

    * ``replace``: an existing folder is moved to a hidden sibling first and deleted only when
      the run succeeds or has written resumable state of its own;
    * on an error before the run wrote anything resumable (``resumable(path)`` false, by
      default: no ``.safetensors`` file), a folder this call created is removed again and a
      replaced one restored — a failed start leaves the file system as it was.

    Args:
        path: the run folder.
        replace: start over in an existing folder (``--overwrite``).
        resumable: whether a folder holds state worth keeping after an error.

    Returns:
        A context manager yielding ``path``.
    """
    target = Path(path)
    old = None
    if replace and os.path.lexists(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        old = _aside(target, "old")
        os.replace(target, old)
    fresh = not os.path.lexists(target)
    try:
        yield target
    except BaseException:
        if fresh and not resumable(target):
            shutil.rmtree(target, ignore_errors=True)
            if old is not None:
                os.replace(old, target)
                old = None
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
