"""Tests of bench/speed.py's bookkeeping: summary checks, failures reported, never 'ok'."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def speed() -> ModuleType:
    sys.path.insert(0, str(REPO / "bench"))  # for ``import _common``
    spec = importlib.util.spec_from_file_location("bench_speed", REPO / "bench" / "speed.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_speed"] = module
    spec.loader.exec_module(module)
    return module


def _row(variant: str, macs_ratio: float, eager_ms: float, ort_ms: float) -> dict:
    dense = 10.0
    return {"variant": variant, "ratio": 0.5, "macs_ratio": macs_ratio, "speedup_eager": dense / eager_ms,
            "efficiency_eager": dense / eager_ms / macs_ratio, "speedup_ort": dense / ort_ms,
            "efficiency_ort": dense / ort_ms / macs_ratio}  # fmt: skip


def test_summary_medians_and_slower_than_dense(speed: ModuleType) -> None:
    results = [
        {"model": "a", "rows": [_row("prunekit", 4.0, 5.0, 2.5)]},  # efficiency 0.5 / 1.0
        {"model": "b", "rows": [_row("prunekit", 2.0, 12.5, 5.0)]},  # slower than dense eager
        {"model": "c", "rows": [_row("prunekit", 2.0, 10.0 / 1.8, 10.0 / 1.8)]},
    ]
    s = speed.summarize(results)
    assert s["prunekit@0.5/eager"] == pytest.approx(0.5)  # median of 0.5, 0.4, 0.9
    assert s["prunekit@0.5/ort"] == pytest.approx(1.0)
    assert s["slower_than_dense"] == ["b prunekit@0.5 eager"]
    assert s["targets_within_10pct"] is None  # no target rows: no claim


def test_failures_are_listed_in_the_report(speed: ModuleType) -> None:
    state = {
        "meta": {},
        "results": [
            {"model": "vit", "rows": [_row("prunekit", 4.0, 5.0, 2.5)],
             "errors": {"torch-pruning@0.5": "pruned forward: RuntimeError: shape '[1, 768]'"}},
            {"model": "vgg", "error": "worker killed (SIGKILL, most likely out of memory)"},
        ],
    }  # fmt: skip
    md = speed.render_md(state)
    assert "## Failures (not timed)" in md
    assert "- vit torch-pruning@0.5: pruned forward: RuntimeError" in md
    assert "- vgg: worker killed (SIGKILL, most likely out of memory)" in md


@pytest.mark.parametrize(
    ("code", "stderr", "expect"),
    [(-9, "", "most likely out of memory"), (1, "Traceback\nValueError: bad", "ValueError: bad"),
     (3, "", "worker exited with status 3")],
)  # fmt: skip
def test_a_worker_without_result_is_never_ok(speed: ModuleType, code, stderr, expect) -> None:
    proc = subprocess.CompletedProcess(["x"], code, stdout="", stderr=stderr)
    msg = speed._worker_failure(proc)
    assert msg and expect in msg
