"""bench/slimming_cpu.py (and the s-matching rule of bench/slimming.py): row keys, merging and
the report table."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cpu() -> ModuleType:
    sys.path.insert(0, str(REPO / "bench"))  # for ``import slimming`` / ``_common``
    spec = importlib.util.spec_from_file_location(
        "bench_slimming_cpu", REPO / "bench" / "slimming_cpu.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_slimming_cpu"] = module  # dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    return module


def test_sparsity_is_matched_to_the_papers_total_shrinkage(cpu: ModuleType) -> None:
    slimming = sys.modules["slimming"]  # bench/slimming.py, imported by slimming_cpu
    assert slimming.matched_sparsity(1e-4, 160, 782, 0.1, "step") == 1e-4  # the paper itself
    # A constant LR of 0.1 for 100 steps: Σ lr = 10, the paper's Σ lr = 782·(80·0.1 + 40·0.01
    # + 40·0.001) = 6600.08, so s = 1e-4 · 660.008.
    assert slimming.matched_sparsity(1e-4, 1, 100, 0.1, "constant") == pytest.approx(0.066)


def _row(tool: str, pct: float, **kw: object) -> dict:
    base = {"arch": "vgg11-narrow", "percent": pct, "tool": tool, "train_images": 50_000,
            "epochs": {"dense": 4, "sparse": 4, "finetune": 4}, "acc_dense": 0.8,
            "acc_finetuned": 0.8, "params": 500_000, "params_ratio": 0.5, "macs": 6e6,
            "macs_ratio": 0.5}  # fmt: skip
    return {**base, **kw}


def test_rows_merge_and_render_with_ratios_latency_and_collapse(cpu: ModuleType) -> None:
    results: dict = {"rows": []}
    lat = {"bs1": {"dense_ms": 2.0, "pruned_ms": 1.0, "speedup": 2.0},
           "bs64": {"dense_ms": 40.0, "pruned_ms": 25.0, "speedup": 1.6}}  # fmt: skip
    ref = _row("reference", 0.7, collapsed=True, collapsed_layers=["feature.1"], recovery=-0.01)
    cpu.merge_rows(results, [ref, _row("dense", 0.0), _row("prunekit", 0.7, latency=lat)])
    cpu.merge_rows(results, [_row("prunekit", 0.7, latency=lat, acc_finetuned=0.81)])
    assert [r["tool"] for r in results["rows"]] == ["dense", "prunekit", "reference"]
    assert results["rows"][1]["acc_finetuned"] == 0.81
    md = cpu.to_markdown(results)
    assert "| vgg11-narrow | 70% | prunekit | 4/4/4 |" in md
    assert "2.00 → 1.00 (×2.00) | 40.00 → 25.00 (×1.60)" in md
    assert "| 0.500M (0.500) | 6.00M (0.500) |" in md
    assert "| -1.00% |" in md and "| yes (1) |" in md
    assert "slimming_cpu_vgg11-narrow_channels.png" in md


def test_collapse_is_the_tools_own_rule_and_the_floor_is_reported(cpu: ModuleType) -> None:
    bns = [{"bn": "a", "size": 8, "kept": 2}, {"bn": "b", "size": 8, "kept": 1}]
    pk = cpu.collapse_fields("prunekit", ["b"], bns)  # the cut empties b; the floor kept it
    assert pk == {"collapsed": False, "collapsed_layers": [], "threshold_empties": ["b"]}
    assert cpu.collapse_fields("reference", ["b"], bns)["collapsed_layers"] == ["b"]
    gone = [*bns, {"bn": "c", "size": 8, "kept": 0}]
    assert cpu.collapse_fields("torch-pruning", [], gone)["collapsed_layers"] == ["c"]
    old = _row("prunekit", 0.7, collapsed=True, collapsed_layers=["b"], channels=bns)
    assert cpu.normalize_row(old)["collapsed"] is False
    assert "| no (floor held 1) |" in cpu.to_markdown({"rows": [cpu.normalize_row(old)]})
