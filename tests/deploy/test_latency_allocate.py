"""The latency-target allocator, on a deterministic device: the table and the confirming
measurements are replaced by MACs-proportional fakes, so the test checks the algorithm (greedy
pricing, rounding, correction by measurement, target vs achieved), not this machine's timing."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import prunekit.latency.allocate as alloc
from prunekit import apply_plan, score, trace
from prunekit.errors import ConfigError
from prunekit.latency import (
    LatencyTable,
    latency_target_plan,
    parse_latency_target,
    resized_layer,
)
from prunekit.report import count_macs


class MacsTable(LatencyTable):
    """A 'device' where a layer costs 1 ms per million MACs, plus a penalty for widths that are
    not a multiple of 8 (like vector units)."""

    def lookup(self, module, input_shape):
        ms = count_macs(module, torch.randn(*input_shape)) / 1e6
        w = module.weight.shape[0]
        return ms * (1.0 if w % 8 == 0 else 1.5)

    def lookup_many(self, module, input_shape, weight_shapes):
        out = []
        for ws in weight_shapes:
            small = resized_layer(module, ws)
            c_in = small.in_features if isinstance(small, nn.Linear) else small.in_channels
            shape = list(input_shape)
            shape[-1 if isinstance(small, nn.Linear) else 1] = c_in
            out.append(self.lookup(small, tuple(shape)))
        return out


def fake_measure(model, inputs, plan, config):
    """True latency = 1.3 x the table's MACs cost + 0.2 ms overhead (the table is off by a
    factor the allocator must correct by measuring)."""
    pruned = apply_plan(copy.deepcopy(model), plan)
    true = lambda m: 1.3 * count_macs(m, inputs) / 1e6 + 0.2  # noqa: E731
    return true(model), true(pruned)


def net():
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    ).eval()  # fmt: skip


@pytest.fixture
def setup(monkeypatch, tmp_path):
    monkeypatch.setattr(alloc, "_measure", fake_measure)
    model = net()
    x = torch.randn(1, 3, 16, 16)
    graph = trace(model, x, ignored_layers=["11"])
    return model, x, graph, score(model, graph, "l2"), MacsTable(tmp_path / "t.json")


@pytest.mark.parametrize("target", [0.5, 0.7])
def test_reaches_a_fraction_target_by_measuring(setup, target):
    model, x, graph, scores, table = setup
    state = copy.deepcopy(model.state_dict())
    res = latency_target_plan(graph, scores, model, x, target=target, table=table, round_to=8)
    assert abs(res.achieved_ms / res.target_ms - 1) <= 0.10
    assert res.target_ms == pytest.approx(target * res.dense_ms)
    assert res.trials and res.plan.meta["allocator"] == "latency"
    assert res.plan.meta["achieved_ms"] == pytest.approx(res.achieved_ms)
    for gid, g in res.plan.groups.items():  # multiples of round_to or the full width
        n = len(g["keep"])
        assert n % 8 == 0 or n == g["size"], (gid, n)
    # the plan keeps the top-scored units, and the user's model is untouched
    for gid, g in res.plan.groups.items():
        s = scores[gid]
        kept = set(g["keep"])
        if len(kept) < g["size"]:
            assert min(s[list(kept)]) >= max(s[[i for i in range(g["size"]) if i not in kept]])
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    pruned = apply_plan(copy.deepcopy(model), res.plan)
    assert fake_measure(model, x, res.plan, None)[1] == pytest.approx(res.achieved_ms, rel=1e-6)
    assert pruned(x).shape == (1, 10)


def test_millisecond_target_and_macs_comparison(setup):
    model, x, graph, scores, table = setup
    dense = fake_measure(model, x, alloc.make_plan(graph, scores, ratio=0.0), None)[0]
    want = f"{0.6 * dense:.4f}ms"
    res = latency_target_plan(graph, scores, model, x, target=want, table=table, round_to=8,
                              compare_macs=True)  # fmt: skip
    assert res.target_ms == pytest.approx(0.6 * dense, rel=1e-3)
    assert abs(res.error) <= 0.10
    c = res.macs_comparison
    assert c is not None and {"importance_kept", "macs_kept", "params_kept"} <= set(c["macs"])
    assert abs(c["macs"]["measured_ms"] / res.achieved_ms - 1) <= 0.10
    assert "MACs plan at" in res.summary()


def test_odd_widths_are_avoided_without_round_to(setup):
    """The table makes widths that are not multiples of 8 slower; the greedy never buys them."""
    model, x, graph, scores, table = setup
    res = latency_target_plan(graph, scores, model, x, target=0.6, table=table, steps=32)
    widths = [len(g["keep"]) for g in res.plan.groups.values()]
    assert all(w % 8 == 0 for w in widths), widths


def test_bad_targets_are_clear_errors():
    assert parse_latency_target("12.5 ms") == ("ms", 12.5)
    assert parse_latency_target(0.4) == ("fraction", 0.4)
    for bad in (1.5, 0.0, "fast", "0ms", True):
        with pytest.raises(ConfigError):
            parse_latency_target(bad)
