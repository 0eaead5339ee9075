"""prunekit.latency: statistics, interleaving, thread handling, the on-disk table."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.latency import (
    LatencyConfig,
    LatencyStats,
    LatencyTable,
    compare_latency,
    environment,
    layer_latency,
    model_latency,
    resized_layer,
    time_callable,
)

FAST = LatencyConfig(warmup=1, repeats=3)


def test_stats_median_and_iqr():
    s = LatencyStats.of([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s.median_ms == 3.0 and s.min_ms == 1.0 and s.n == 5
    assert s.q1_ms == pytest.approx(1.5) and s.q3_ms == pytest.approx(52.0)
    assert s.iqr_ms == pytest.approx(s.q3_ms - s.q1_ms)
    with pytest.raises(ConfigError):
        LatencyStats.of([])


def test_bad_config_is_one_clear_error():
    with pytest.raises(ConfigError, match="repeats"):
        LatencyConfig(repeats=0)
    with pytest.raises(ConfigError, match="threads"):
        LatencyConfig(threads=0)


def test_threads_are_set_for_the_call_and_restored():
    before = torch.get_num_threads()
    seen = []
    s = time_callable(lambda: seen.append(torch.get_num_threads()), LatencyConfig(
        warmup=0, repeats=2, threads=1))  # fmt: skip
    assert set(seen) == {1} and s.threads == 1 and s.mode == "wall"
    assert torch.get_num_threads() == before


def test_compare_is_interleaved_and_restores_mode():
    order = []
    m = nn.Linear(4, 4).train()
    stats = compare_latency(
        {"a": lambda: order.append("a"), "b": lambda: order.append("b"), "m": m},
        torch.randn(2, 4),
        LatencyConfig(warmup=0, repeats=3),
    )
    assert order == ["a", "b"] * 3
    assert set(stats) == {"a", "b", "m"} and all(s.n == 3 for s in stats.values())
    assert m.training  # eval only while timed


def test_model_latency_and_environment():
    s = model_latency(nn.Sequential(nn.Linear(8, 8), nn.ReLU()), torch.randn(1, 8), FAST)
    assert s.median_ms > 0 and s.device == "cpu"
    env = environment(FAST)
    for k in ("torch", "cpu", "threads", "loadavg", "cpu_count"):
        assert k in env


def test_resized_layer_uses_surgery_attributes():
    conv = nn.Conv2d(16, 32, 3, padding=1)
    small = resized_layer(conv, (24, 12, 3, 3))
    assert (small.in_channels, small.out_channels) == (12, 24) and small.bias.shape == (24,)
    dw = nn.Conv2d(16, 16, 3, groups=16)
    small = resized_layer(dw, (8, 1, 3, 3))
    assert (small.in_channels, small.out_channels, small.groups) == (8, 8, 8)
    assert conv.weight.shape == (32, 16, 3, 3)  # the original is untouched


def test_table_is_cached_on_disk_and_reused(tmp_path):
    path = tmp_path / "table.json"
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))
    x = torch.randn(1, 3, 8, 8)
    t1 = LatencyTable(path, config=FAST)
    ms = t1.lookup_many(model[0], (1, 3, 8, 8), [(4, 3, 3, 3), (6, 3, 3, 3)])
    per_layer = layer_latency(model, x, t1)
    assert list(per_layer) == ["0", "3"] and all(v > 0 for v in per_layer.values())
    assert t1.measured == 4  # two widths, the dense conv (their reference) and the linear
    t1.save()
    data = json.loads(path.read_text())
    assert data["format"] == "prunekit.latency-table/1" and len(data["entries"]) == 4
    t2 = LatencyTable(path, config=FAST)
    assert t2.lookup_many(model[0], (1, 3, 8, 8), [(4, 3, 3, 3), (6, 3, 3, 3)]) == ms
    assert layer_latency(model, x, t2) == per_layer and t2.measured == 0


def test_corrupt_table_is_rebuilt(tmp_path):
    path = tmp_path / "table.json"
    path.write_text("{not json")
    t = LatencyTable(path, config=FAST)
    assert t.entries == {}
    t.lookup(nn.Linear(4, 4), (1, 4))
    t.save()
    assert len(json.loads(path.read_text())["entries"]) == 1


def test_default_table_lives_in_the_prunekit_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path))
    t = LatencyTable(config=LatencyConfig(threads=1))
    assert t.path.parent == tmp_path / "latency" and "-t1-" in t.path.name


@pytest.mark.gpu
def test_cuda_uses_graphs_or_events():
    m = nn.Linear(64, 64).cuda()
    s = model_latency(m, torch.randn(8, 64, device="cuda"), FAST)
    assert s.mode == "cuda-graph" and s.device.startswith("cuda") and s.threads is None
    s = model_latency(m, torch.randn(8, 64, device="cuda"), LatencyConfig(
        warmup=1, repeats=3, cuda_graphs=False))  # fmt: skip
    assert s.mode == "cuda-events"
