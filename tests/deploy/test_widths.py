"""Hardware-aware default widths: ``PruneConfig(round_to=None)`` keeps multiples of the
device's preferred width in every group wide enough to matter; ``round_to=1`` is exact."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision

from prunekit.latency import widths
from prunekit.pipeline import PruneConfig, prune


@pytest.mark.parametrize(
    ("device", "capability", "want"),
    [("cuda", "AVX2", 8), ("cpu", "AVX512", 16), ("cpu", "AVX2", 8), ("cpu", "DEFAULT", 1),
     ("meta", "AVX2", 1)],
)  # fmt: skip
def test_hardware_multiple(
    device: str, capability: str, want: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert widths.hardware_multiple(device) == want


@pytest.mark.parametrize("multiple", [8, 16])
def test_default_widths_are_multiples_in_wide_groups(
    multiple: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(widths, "hardware_multiple", lambda device=None: multiple)
    monkeypatch.setattr("prunekit.pipeline.hardware_multiple", lambda device=None: multiple)
    result = prune(torchvision.models.resnet18().eval(), torch.randn(1, 3, 32, 32),
                   PruneConfig(ratio=0.3))  # fmt: skip
    sizes = {g.id: g.size for g in result.graph.groups}
    assert result.plan.meta["round_to"] == multiple
    for gid, entry in result.plan.groups.items():
        kept, size = len(entry["keep"]), sizes[gid]
        exact = size - math.floor(0.3 * size)
        if size >= widths.NARROW * multiple:
            assert kept % multiple == 0 and exact <= kept < exact + multiple, gid
        else:
            assert kept == exact, gid


def test_round_to_one_is_exact() -> None:
    result = prune(torchvision.models.resnet18().eval(), torch.randn(1, 3, 32, 32),
                   PruneConfig(ratio=0.3, round_to=1))  # fmt: skip
    sizes = {g.id: g.size for g in result.graph.groups}
    assert result.plan.meta["round_to"] is None
    for gid, entry in result.plan.groups.items():
        assert len(entry["keep"]) == sizes[gid] - math.floor(0.3 * sizes[gid])
