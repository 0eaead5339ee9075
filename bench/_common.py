"""Shared helpers for the benchmark scripts: run metadata and atomic result files.

Benchmarks record *where* and *with what* they ran (CPU, threads, library versions, load) next
to their numbers, because timings and even coverage change with the machine and the versions.

Example:
    >>> from _common import atomic_write_json, env_meta
    >>> atomic_write_json("bench/results/x.json", {"meta": env_meta(), "rows": []})
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.metadata
import json
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"


def ensure_src_on_path() -> None:
    """Make ``import prunekit`` work from a plain checkout (the package need not be installed)."""
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))


def child_env(threads: int | None = None) -> dict[str, str]:
    """Environment for a worker subprocess: ``src`` on ``PYTHONPATH``, optional thread cap.

    Args:
        threads: intra-op threads for the child (``None``: torch's default, one per core).

    Returns:
        A copy of ``os.environ`` with the changes.
    """
    env = dict(os.environ)
    parts = [str(SRC)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    # Passive OpenMP waiting: spinning threads make runs much slower when cores are shared.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
        env["MKL_NUM_THREADS"] = str(threads)
    return env


ensure_src_on_path()
# One atomic writer for the whole repository (temp file, fsync, ordinary permissions, rename).
from prunekit._fileio import atomic_write_text  # noqa: E402


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (NaN/inf are written as null)."""
    atomic_write_text(path, json.dumps(_finite(obj), indent=1) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Parsed JSON from ``path``, or ``None`` when the file does not exist."""
    p = Path(path)
    if not p.exists():
        return None
    return json.loads(p.read_text(encoding="utf-8"))


def _finite(obj: Any) -> Any:
    # Strict JSON has no NaN/Infinity; a non-finite number means "no value" in our results.
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _mem_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    return None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def env_meta(packages: Sequence[str] = ("torch", "torchvision")) -> dict[str, Any]:
    """Hardware, versions, date and command of this run.

    Args:
        packages: distributions whose versions to record (prunekit is always recorded).

    Returns:
        A JSON-ready dict.
    """
    import torch

    ensure_src_on_path()
    import prunekit

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    cores = os.cpu_count()
    meta: dict[str, Any] = {
        "hardware": f"{cores}-core CPU, {_mem_gib()} GiB RAM, "
        + (f"GPU {gpu}" if gpu else "no GPU"),
        "cpu": _cpu_name(),
        "cpu_count": cores,
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "prunekit": prunekit.__version__,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    for name in packages:
        meta[name.replace("-", "_")] = _version(name)
    return meta
