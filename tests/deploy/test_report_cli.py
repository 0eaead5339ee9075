"""`prunekit prune` writes one self-contained HTML report that renders in headless Chromium;
`prunekit export` verifies in onnxruntime and hands off int8."""

from __future__ import annotations

import json
import re

import pytest

from prunekit.cli import main

from .chromium import chromium, render


def test_prune_report_renders_with_every_plot(tmp_path):
    out = tmp_path / "r18"
    assert main(["prune", "--model", "torchvision:resnet18", "--input-shape", "1,3,32,32",
                 "--ratio", "0.5", "--out", str(out)]) == 0  # fmt: skip
    page = (out / "report.html").read_text()
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing loaded from outside
    n_plots = page.count('<img class="plot"')
    assert n_plots >= 1 and "params" in page and "layer1.0.conv1" in page
    if chromium() is None:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    seen = render(out / "report.html")
    assert seen["errors"] == [] and seen["console"] == []
    assert len(seen["images"]) == n_plots
    assert all(i["ok"] and i["w"] > 200 for i in seen["images"]), seen["images"]


def test_export_verifies_and_makes_int8(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "d"
    assert main(["prune", "--model", "zoo:digits_cnn", "--input-shape", "1,1,8,8", "--ratio",
                 "0.5", "--out", str(out), "--no-latency"]) == 0  # fmt: skip
    onnx_path = tmp_path / "d.onnx"
    assert main(["export", str(out), "--onnx", str(onnx_path), "--input-shape", "1,1,8,8",
                 "--fold-bn", "--int8", "--calib", "digits", "--threads", "1", "--latency"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "max rel diff" in text and "speed-up pruned vs dense" in text
    res = json.loads((tmp_path / "d.export.json").read_text())
    assert res["max_rel_diff"] <= 1e-4 and res["batch_sizes"] == [1, 3]
    assert set(res["ort_ms"]) == {"dense", "pruned", "int8"}
    assert set(res["accuracy"]) == {"fp32", "int8"} and (tmp_path / "d.int8.onnx").exists()
    assert res["env"]["threads"] == 1 and "loadavg" in res["env"]


def test_int8_without_calibration_is_one_clear_error(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--onnx", str(tmp_path / "x.onnx"), "--input-shape",
                 "1,1,8,8", "--int8"]) == 2  # fmt: skip
    assert "--calib" in capsys.readouterr().err
