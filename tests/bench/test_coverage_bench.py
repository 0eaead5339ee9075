"""Tests of bench/coverage.py: one real worker run (prunekit on resnet18) and its bookkeeping."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cov() -> ModuleType:
    # Loaded under a unique name: "coverage" would clash with the coverage.py package.
    sys.path.insert(0, str(REPO / "bench"))  # for ``import _common``
    spec = importlib.util.spec_from_file_location("bench_coverage", REPO / "bench" / "coverage.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_coverage"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def resnet18_run(cov: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The driver run once on resnet18 at 64×64 (worker in a subprocess), results in a tmp dir."""
    out = tmp_path_factory.mktemp("cov")
    argv = ["--models", "resnet18", "--tools", "prunekit", "--input-size", "64",
            "--out-dir", str(out), "--timeout", "300"]  # fmt: skip
    assert cov.main(argv) == 0
    return out


@pytest.mark.slow  # a real worker subprocess: ~15 s idle, ~40 s on 2 busy cores
def test_worker_row_for_prunekit_resnet18(resnet18_run: Path) -> None:
    data = json.loads((resnet18_run / "coverage.json").read_text())
    assert data["meta"]["ratio"] == 0.5 and data["meta"]["criterion"] == "l2"
    assert data["meta"]["torch"] and data["meta"]["prunekit"]
    (row,) = data["rows"]
    assert (row["tool"], row["model"], row["input_shape"]) == (
        "prunekit",
        "resnet18",
        [1, 3, 64, 64],
    )
    assert row["ok"] is True and row["error"] is None
    assert row["forward_ok"] and row["out_shape_ok"]
    assert 0.0 <= row["max_rel_diff"] <= 1e-4
    assert row["params_before"] == 11_689_512  # torchvision resnet18
    assert row["params_after"] <= 0.7 * row["params_before"]
    assert 0 < row["macs_after"] < row["macs_before"]
    assert row["seconds"] > 0
    md = (resnet18_run / "coverage.md").read_text()
    assert "prunekit**: ok 1/1" in md and "| resnet18 | ok |" in md


@pytest.mark.slow  # shares the worker run above
def test_driver_resumes_without_rerunning(cov: ModuleType, resnet18_run: Path) -> None:
    before = json.loads((resnet18_run / "coverage.json").read_text())["rows"]
    # Same selection again: the existing row is kept as is, nothing is recomputed.
    assert (
        cov.main(["--models", "resnet18", "--tools", "prunekit", "--out-dir", str(resnet18_run)])
        == 0
    )
    after = json.loads((resnet18_run / "coverage.json").read_text())["rows"]
    assert after == before


def test_timeout_becomes_a_failed_row(cov: ModuleType) -> None:
    row = cov.spawn_worker("prunekit", "resnet18", timeout=0.5, size=32)
    assert row["ok"] is False and row["error"].startswith("timeout")
    assert set(cov.ROW_FIELDS) <= set(row)


def test_crash_messages_name_the_signal(cov: ModuleType) -> None:
    assert cov._crash_message(-9, "") == (
        "worker killed by SIGKILL (on Linux usually the out-of-memory killer; see dmesg)"
    )
    assert cov._crash_message(-11, "") == "worker killed by SIGSEGV"
    assert cov._crash_message(1, "ValueError: x") == "worker crashed (exit 1): ValueError: x"


def test_row_ok_rules(cov: ModuleType) -> None:
    good = {"tool": "prunekit", "error": None, "forward_ok": True, "out_shape_ok": True,
            "max_rel_diff": 1e-6, "params_before": 100, "params_after": 60}  # fmt: skip
    assert cov.row_ok(good)
    assert not cov.row_ok({**good, "max_rel_diff": 1e-3})  # not equivalent to the soft mask
    assert not cov.row_ok({**good, "params_after": 80})  # only 20% removed
    assert not cov.row_ok({**good, "max_rel_diff": None})
    tp = {**good, "tool": "torch-pruning", "max_rel_diff": None, "params_after": 95}
    assert cov.row_ok(tp)
    assert not cov.row_ok({**tp, "out_shape_ok": False})


def test_final_layers(cov: ModuleType) -> None:
    import torchvision

    sq = cov.build("squeezenet1_1")
    assert cov.final_layers(sq, "squeezenet1_1") == [sq.classifier[1]]
    lr = cov.build("lraspp_mobilenet_v3_large")
    assert cov.final_layers(lr, "lraspp_mobilenet_v3_large") == [
        lr.classifier.low_classifier,
        lr.classifier.high_classifier,
    ]
    m = torchvision.models.mobilenet_v3_small()
    assert cov.final_layers(m, "mobilenet_v3_small") == [m.classifier[3]]


def test_fill_zero_params_makes_vit_head_nonzero(cov: ModuleType) -> None:
    import torch

    lin = torch.nn.Linear(4, 3)
    torch.nn.init.zeros_(lin.weight)
    assert cov.fill_zero_params(lin) == 1  # the weight; the default bias is already random
    assert lin.weight.abs().sum() > 0


def test_timing_summary_and_markdown(cov: ModuleType) -> None:
    runs = {
        "prunekit": [{"seconds": s, "cpu_seconds": s, "ok": True} for s in (1.0, 3.0, 2.0)],
        "torch-pruning": [{"seconds": s, "cpu_seconds": s, "ok": True} for s in (4.0, 5.0, 6.0)],
    }
    t = cov.summarize_timing(runs)
    assert t["prunekit"]["median_s"] == 2.0 and t["torch-pruning"]["median_s"] == 5.0
    assert t["prunekit_over_tp"] == pytest.approx(0.4)
    assert t["within_limit"] and t["not_slower_than_tp"] and t["within_tp_ratio"]
    slow = cov.summarize_timing({**runs, "torch-pruning": runs["prunekit"]}, model="nf_resnet50")
    assert slow["model"] == "nf_resnet50" and slow["not_slower_than_tp"]
    assert not slow["within_tp_ratio"]  # equal times: 1.0 > the 0.6 goal
    rows = [
        {"tool": "prunekit", "model": "vgg11", "ok": True, "error": None, "max_rel_diff": 1e-7,
         "params_before": 10, "params_after": 3, "macs_before": 10, "macs_after": 4, "seconds": 1.0},
        {"tool": "torch-pruning", "model": "vgg11", "ok": False, "error": "prune: X: a|b",
         "params_before": 10, "params_after": None, "macs_before": 10, "macs_after": None,
         "seconds": None},
    ]  # fmt: skip
    md = cov.render_md({"meta": {}, "rows": rows, "timing": t})
    assert "**prunekit**: ok 1/1" in md and "**torch-pruning**: ok 0/1" in md
    assert "| vgg11 | ok | 1.0e-07 | 70% | 60% | 1.00 | **fail** |" in md
    assert "a\\|b" in md  # pipes in errors are escaped so the table stays intact
    assert "prunekit / torch-pruning = 0.40" in md
