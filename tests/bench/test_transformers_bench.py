"""Tests of bench/transformers.py: its table says which tool cut more, and prunekit's exactness."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tf() -> ModuleType:
    sys.path.insert(0, str(REPO / "bench"))  # for ``import _common``
    spec = importlib.util.spec_from_file_location(
        "bench_transformers", REPO / "bench" / "transformers.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(tool: str, model: str, after: int, **kw: object) -> dict[str, object]:
    row = {"tool": tool, "model": model, "ok": True, "error": None, "params_before": 100,
           "params_after": after, "macs_before": 10, "macs_after": 3, "seconds": 1.0}  # fmt: skip
    row.update(kw)
    return row


def test_table_compares_cuts_and_reports_failures(tf: ModuleType) -> None:
    rows = [
        _row("prunekit", "vit_b_16", 25, max_rel_diff=1e-6),
        _row("torch-pruning", "vit_b_16", 25, ok=False, error="pruned forward: RuntimeError"),
        _row("prunekit", "swin_t", 30, max_rel_diff=2e-7),
        _row("torch-pruning", "swin_t", 20),
    ]
    md = tf.render_md({"meta": {"commit": "abc"}, "rows": rows})
    vit = next(line for line in md.splitlines() if line.startswith("| vit_b_16"))
    swin = next(line for line in md.splitlines() if line.startswith("| swin_t"))
    assert "75.0%" in vit and "| yes |" in vit and "**fail**" in vit and "RuntimeError" in vit
    assert "70.0%" in swin and "80.0%" in swin and "| **no** |" in swin
    assert "1.5e-06" not in md and "1.0e-06" in vit
    assert set(tf.MODELS) == {"vit_b_16", "swin_t", "convnext_tiny", "poolformer_s12"}
