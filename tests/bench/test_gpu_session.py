"""bench/gpu_session.{sh,py}: unit choice within the time left, tool skips, merging, and the
whole CPU path (``--quick``) on a tiny real CIFAR-10 subset, so the GPU script cannot break
silently between GPU windows."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gs() -> ModuleType:
    sys.path.insert(0, str(REPO / "bench"))  # for ``import slimming`` / ``_common``
    spec = importlib.util.spec_from_file_location(
        "bench_gpu_session", REPO / "bench" / "gpu_session.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu_session"] = module
    spec.loader.exec_module(module)
    return module


def _row(arch: str, pct: float, tool: str, epochs: int) -> dict:
    return {"arch": arch, "dataset": "cifar10", "percent": pct, "tool": tool, "epochs": epochs,
            "train_images": 50_000, "params": 1, "macs": 1, "acc_finetuned": 0.9}  # fmt: skip


def _args(**kw: object) -> argparse.Namespace:
    return argparse.Namespace(**{"epochs": None, "train_images": 50_000, **kw})


def test_unit_takes_the_longest_schedule_that_fits(gs: ModuleType) -> None:
    results: dict = {"rows": []}
    tools = ["prunekit", "reference"]
    # 100k img/s: 160 epochs of dense + sparse + 2 fine-tunes ≈ 160·3.5·0.5 s·1.2 ≈ 336 s.
    epochs, todo, est = gs.choose_unit(results, "vgg19", (0.7,), tools, 1e5, 400.0, _args())
    assert (epochs, todo) == (160, [0.7]) and 300 < est <= 400
    # Less time: a shorter schedule for the whole architecture.
    assert gs.choose_unit(results, "vgg19", (0.7,), tools, 1e5, 200.0, _args())[0] == 80
    # Two percents share one sparse model; only the first fits: it runs alone.
    epochs, todo, _ = gs.choose_unit(results, "densenet40", (0.4, 0.6), tools, 1e5, 190.0, _args())
    assert (epochs, todo) == (80, [0.4])
    # A 0.2 s checkpoint per epoch (VGG-19's weights + momentum) costs 160·4·0.2 = 128 s more.
    assert gs.choose_unit(results, "vgg19", (0.7,), tools, 1e5, 400.0, _args(), 0.2)[0] == 80
    why = gs.choose_unit(results, "vgg19", (0.7,), tools, 1e5, 5.0, _args())
    assert why.startswith("does not fit: 20 epochs")
    assert gs.choose_unit(results, "vgg19", (0.7,), tools, None, 500.0, _args()).startswith(
        "no training rate"
    )


def test_existing_rows_fix_the_epochs_and_are_skipped(gs: ModuleType) -> None:
    results = {"rows": [_row("densenet40", 0.4, t, 40) for t in ("dense", "prunekit", "reference")]}
    tools = ["prunekit", "reference"]
    epochs, todo, _ = gs.choose_unit(results, "densenet40", (0.4, 0.6), tools, 1e5, 500.0, _args())
    assert (epochs, todo) == (40, [0.6])  # never 160 beside the 40-epoch rows
    results["rows"] += [_row("densenet40", 0.6, t, 40) for t in tools]
    assert gs.choose_unit(results, "densenet40", (0.4, 0.6), tools, 1e5, 500.0, _args()) == (
        "done at 40 epochs"
    )
    results["rows"].append(_row("densenet40", 0.4, "prunekit", 20))
    why = gs.choose_unit(results, "densenet40", (0.4, 0.6), tools, 1e5, 500.0, _args())
    assert "mixed epochs [20, 40]" in why


def test_torch_pruning_is_skipped_with_a_reason_when_absent(
    gs: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        gs.importlib.util, "find_spec", lambda n: None if n == "torch_pruning" else real(n)
    )
    run, skipped = gs.tool_plan(["prunekit", "reference", "torch-pruning"])
    assert run == ["prunekit", "reference"]
    assert "not installed" in skipped["torch-pruning"]


def test_selected_units_keep_the_priority_order(gs: ModuleType) -> None:
    assert [n for n, _ in gs.selected_units(None)] == ["vgg19", "densenet40", "preresnet164"]
    assert gs.selected_units(["preresnet164:0.6", "vgg19"]) == [
        ("vgg19", (0.7,)),
        ("preresnet164", (0.6,)),
    ]
    with pytest.raises(SystemExit, match="unknown arch"):
        gs.selected_units(["resnet50"])


@pytest.mark.data
def test_quick_session_on_cpu_writes_merged_results_and_merges_back(
    gs: ModuleType, tiny_cifar: Callable[[int], Path], tmp_path: Path
) -> None:
    out, target = tmp_path / "out", tmp_path / "results" / "slimming.json"
    target.parent.mkdir()
    earlier = {"rows": [_row("densenet40", 0.4, "prunekit", 40)], "sessions": []}
    target.write_text(json.dumps(earlier))
    cmd = [str(REPO / "bench" / "gpu_session.sh"), str(tiny_cifar(2)), str(out), "--quick",
           "--only", "vgg19", "--tools", "prunekit", "--results", str(target),
           "--work", str(tmp_path / "work"), "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    session = json.loads((out / "gpu_session.json").read_text())
    assert session["smoke"]["verdict"] == "ok"
    assert all(r["epoch_overhead_s"] >= 0 for r in session["smoke"]["paths"]["vgg19"].values())
    assert set(session["smoke"]["paths"]["vgg19"]) == {"none/plain", "none/bn-l1"}
    assert session["rows_added"] == 2 and session["units"][0]["percents"] == [0.7]
    returned = json.loads((out / "slimming.json").read_text())
    # The checkout's rows travel on: the returned file is the merged one.
    assert [(r["arch"], r["tool"]) for r in returned["rows"]] == [
        ("vgg19", "dense"), ("vgg19", "prunekit"), ("densenet40", "prunekit")]  # fmt: skip
    dense, pk = returned["rows"][:2]
    assert pk["epochs"] == 1 and pk["params"] < dense["params"] == 20_035_018
    assert pk["params_ratio"] == pytest.approx(pk["params"] / pk["params_dense"])
    assert "gpu_session.log" in os.listdir(out) and len(os.listdir(out)) <= 8
    assert "| vgg19 | 70% | prunekit | 1 |" in (out / "slimming.md").read_text()
    # Back here: --merge adds the session's rows, its record and plots to the results folder.
    assert gs.main(["--merge", str(out / "slimming.json"), "--results", str(target)]) == 0
    merged = json.loads(target.read_text())
    assert len(merged["rows"]) == 3 and merged["sessions"][-1]["id"] == session["id"]
    assert (target.parent / "slimming_vgg19_gamma.png").exists()
    assert "## GPU sessions" in target.with_suffix(".md").read_text()
