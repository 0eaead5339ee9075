"""Wall-clock latency of a model (or any callable) on the user's device, with its spread.

Timing rules, shared by every measurement in prunekit:

* **warm-up** runs first (allocator, oneDNN primitive cache, cuDNN autotuning), then many
  timed repeats; the result is the **median** and the inter-quartile range (IQR), which a few
  preempted runs do not move, rather than a mean;
* **CPU** runs with a stated intra-op thread count (set for the call, restored afterwards);
* **CUDA** is timed with CUDA events around each run; when ``cuda_graphs`` is on the forward is
  captured once in a CUDA graph and replayed (no launch overhead — how a latency-critical
  deployment runs at batch 1), and the stats say which mode was used;
* **several models are compared interleaved** (A B A B ...), so background load and frequency
  changes hit every model alike instead of whichever ran last.

Example:
    >>> stats = model_latency(model, torch.randn(1, 3, 224, 224), LatencyConfig(threads=2))
    >>> print(stats)             # 12.31 ms (IQR 0.40 ms, n=30, cpu, 2 threads)
    >>> compare_latency({"dense": dense, "pruned": pruned}, x)
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit.device import threads_set
from prunekit.errors import ConfigError
from prunekit.graph.tracer import iter_tensors

__all__ = [
    "LatencyConfig",
    "LatencyStats",
    "compare_latency",
    "cpu_name",
    "environment",
    "model_latency",
    "time_callable",
]


@dataclass(frozen=True)
class LatencyConfig:
    """How to time (``None`` means the default).

    Attributes:
        warmup: untimed runs before timing.
        repeats: timed runs (the median and IQR are over these).
        threads: CPU intra-op threads for the measurement (``None``: torch's current setting).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; ``None``: where the inputs are.
        cuda_graphs: on CUDA, capture the forward in a CUDA graph and time its replays.
        min_seconds: keep repeating (beyond ``repeats``) until this much time was timed, so
            sub-millisecond layers get enough samples.
    """

    warmup: int = 5
    repeats: int = 30
    threads: int | None = None
    device: str | None = None
    cuda_graphs: bool = True
    min_seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.repeats < 1:
            raise ConfigError(
                f"latency needs warmup >= 0 and repeats >= 1, got {self.warmup}, {self.repeats}"
            )
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")


@dataclass
class LatencyStats:
    """Summary of timed runs, in milliseconds.

    Attributes:
        median_ms: median time of one run.
        iqr_ms: inter-quartile range (q3 - q1), the spread.
        q1_ms, q3_ms, min_ms: quartiles and fastest run.
        n: number of timed runs.
        device: where it ran (``"cpu"``, ``"cuda:0"``, ``"ort-cpu"``...).
        threads: CPU intra-op threads (``None`` on CUDA).
        mode: ``"wall"`` (CPU, perf_counter), ``"cuda-events"`` or ``"cuda-graph"``.
    """

    median_ms: float
    iqr_ms: float
    q1_ms: float
    q3_ms: float
    min_ms: float
    n: int
    device: str = "cpu"
    threads: int | None = None
    mode: str = "wall"

    @classmethod
    def of(cls, times_ms: list[float], **info: Any) -> LatencyStats:
        """Stats of a list of run times (ms)."""
        if not times_ms:
            raise ConfigError("no timed runs to summarise")
        q = statistics.quantiles(times_ms, n=4) if len(times_ms) > 1 else [times_ms[0]] * 3
        return cls(
            median_ms=statistics.median(times_ms),
            iqr_ms=q[2] - q[0],
            q1_ms=q[0],
            q3_ms=q[2],
            min_ms=min(times_ms),
            n=len(times_ms),
            **info,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    def __str__(self) -> str:
        where = f"{self.device}, {self.threads} threads" if self.threads else self.device
        return f"{self.median_ms:.2f} ms (IQR {self.iqr_ms:.2f} ms, n={self.n}, {where})"


def cpu_name() -> str:
    """The CPU model name (``/proc/cpuinfo`` on Linux, else the platform's answer)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def environment(config: LatencyConfig | None = None) -> dict[str, Any]:
    """What a latency depends on: versions, CPU, threads, GPU, and the load right now.

    Returns:
        JSON-ready dict (``loadavg`` is the 1/5/15-minute load average, ``None`` off POSIX).
    """
    cfg = config or LatencyConfig()
    env: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": cfg.threads or torch.get_num_threads(),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    with contextlib.suppress(ImportError):
        import onnxruntime

        env["onnxruntime"] = onnxruntime.__version__
    return env


def _device_of(inputs: Any, config: LatencyConfig) -> torch.device:
    if config.device is not None:
        return torch.device(config.device)
    for t in iter_tensors(inputs):
        return t.device
    return torch.device("cpu")


class _Timer:
    """One way of timing one run: wall clock, CUDA events, or CUDA graph replays."""

    def __init__(self, fn: Callable[[], Any], device: torch.device, cuda_graphs: bool) -> None:
        self.fn, self.device = fn, device
        self.mode = "wall" if device.type != "cuda" else "cuda-events"
        self.graph: Any = None
        if device.type == "cuda" and cuda_graphs:
            self.graph = _capture(fn, device)
            self.mode = "cuda-graph" if self.graph is not None else "cuda-events"

    def run(self) -> None:
        """One untimed run."""
        if self.graph is not None:
            self.graph.replay()
        else:
            self.fn()

    def time_ms(self) -> float:
        """One timed run, in milliseconds."""
        if self.device.type != "cuda":
            t0 = time.perf_counter()
            self.fn()
            return (time.perf_counter() - t0) * 1000.0
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        self.run()
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end))

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _capture(fn: Callable[[], Any], device: torch.device) -> Any:
    """A CUDA graph of ``fn`` (warmed up on a side stream, as PyTorch requires), or ``None``
    when the forward cannot be captured (CPU syncs, dynamic shapes): events are used then."""
    try:
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for _ in range(3):
                fn()
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        return graph
    except RuntimeError:
        return None


def time_callable(
    fn: Callable[[], Any], config: LatencyConfig | None = None, *, device: str | None = None
) -> LatencyStats:
    """Time ``fn()`` (any zero-argument callable: a model call, an onnxruntime session run).

    Args:
        fn: what to time.
        config: timing settings.
        device: overrides ``config.device`` (``"cpu"`` or a CUDA device).

    Returns:
        The :class:`LatencyStats`.

    Example:
        >>> time_callable(lambda: session.run(None, feeds), LatencyConfig(repeats=50))
    """
    cfg = config or LatencyConfig()
    dev = torch.device(device or cfg.device or "cpu")
    with threads_set(cfg.threads), torch.no_grad():
        timer = _Timer(fn, dev, cfg.cuda_graphs)
        for _ in range(cfg.warmup):
            timer.run()
        timer.sync()
        times: list[float] = []
        t_end = time.perf_counter() + cfg.min_seconds
        while len(times) < cfg.repeats or time.perf_counter() < t_end:
            times.append(timer.time_ms())
    threads = None if dev.type == "cuda" else (cfg.threads or torch.get_num_threads())
    return LatencyStats.of(times, device=str(dev), threads=threads, mode=timer.mode)


def _call(model: nn.Module, inputs: Any) -> Callable[[], Any]:
    if isinstance(inputs, dict):
        return lambda: model(**inputs)
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    return lambda: model(*args)


@contextlib.contextmanager
def _eval(models: Mapping[str, nn.Module]) -> Iterator[None]:
    modes = {k: m.training for k, m in models.items()}
    for m in models.values():
        m.eval()
    try:
        yield
    finally:
        for k, m in models.items():
            m.train(modes[k])


def model_latency(
    model: nn.Module, inputs: Any, config: LatencyConfig | None = None
) -> LatencyStats:
    """Latency of one eval-mode forward pass of ``model`` on ``inputs`` (no grad).

    Args:
        model: the model (its train/eval mode is restored afterwards).
        inputs: a tensor, a tuple of positional inputs or a dict of keyword inputs, already on
            the device to time on.
        config: timing settings.

    Returns:
        The :class:`LatencyStats`.
    """
    cfg = config or LatencyConfig()
    with _eval({"m": model}):
        return time_callable(_call(model, inputs), cfg, device=str(_device_of(inputs, cfg)))


def compare_latency(
    models: Mapping[str, nn.Module | Callable[[], Any]],
    inputs: Any = None,
    config: LatencyConfig | None = None,
) -> dict[str, LatencyStats]:
    """Time several models interleaved — A B C A B C ... — on the same inputs.

    Args:
        models: name -> model (called on ``inputs``) or zero-argument callable (e.g. an
            onnxruntime session run).
        inputs: inputs for the models (not needed when all entries are callables).
        config: timing settings; ``repeats`` rounds, each running every model once.

    Returns:
        name -> :class:`LatencyStats`.

    Example:
        >>> s = compare_latency({"dense": dense, "pruned": pruned}, x, LatencyConfig(threads=2))
        >>> s["dense"].median_ms / s["pruned"].median_ms   # the measured speed-up
    """
    cfg = config or LatencyConfig()
    dev = _device_of(inputs, cfg)
    mods = {k: m for k, m in models.items() if isinstance(m, nn.Module)}
    fns = {k: (_call(m, inputs) if isinstance(m, nn.Module) else m) for k, m in models.items()}
    with _eval(mods), threads_set(cfg.threads), torch.no_grad():
        timers = {k: _Timer(fn, dev, cfg.cuda_graphs) for k, fn in fns.items()}
        for t in timers.values():
            for _ in range(cfg.warmup):
                t.run()
            t.sync()
        times: dict[str, list[float]] = {k: [] for k in timers}
        for _ in range(cfg.repeats):
            for k, t in timers.items():
                times[k].append(t.time_ms())
    threads = None if dev.type == "cuda" else (cfg.threads or torch.get_num_threads())
    return {
        k: LatencyStats.of(v, device=str(dev), threads=threads, mode=timers[k].mode)
        for k, v in times.items()
    }
