"""Latency on the user's device: whole models, single layers, a cached per-device table, and a
latency-target allocator.

Example:
    >>> from prunekit.latency import LatencyConfig, compare_latency, latency_target_plan
    >>> stats = compare_latency({"dense": dense, "pruned": pruned}, x, LatencyConfig(threads=2))
    >>> result = latency_target_plan(graph, scores, model, x, target=0.5)
"""

from __future__ import annotations

from prunekit.latency.allocate import (
    LatencyTargetResult,
    latency_target_plan,
    parse_latency_target,
)
from prunekit.latency.measure import (
    LatencyConfig,
    LatencyStats,
    compare_latency,
    cpu_name,
    environment,
    model_latency,
    time_callable,
)
from prunekit.latency.table import (
    LAYER_KINDS,
    LatencyTable,
    LayerKind,
    kind_of,
    latency_cache_dir,
    layer_latency,
    register_layer_kind,
    resized_layer,
)

__all__ = [
    "LAYER_KINDS",
    "LatencyConfig",
    "LatencyStats",
    "LatencyTable",
    "LatencyTargetResult",
    "LayerKind",
    "compare_latency",
    "cpu_name",
    "environment",
    "kind_of",
    "latency_cache_dir",
    "latency_target_plan",
    "layer_latency",
    "model_latency",
    "parse_latency_target",
    "register_layer_kind",
    "resized_layer",
    "time_callable",
]
