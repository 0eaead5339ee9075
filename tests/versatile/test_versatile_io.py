"""prunekit.save/load keep the versatile structure (spec + safetensors) and round-trip exactly."""

from __future__ import annotations

import json

import pytest
import torch

import prunekit
from prunekit.models import build_model
from prunekit.record import ModelRecord
from prunekit.versatile import VersatileConfig, VersatileConv2d, to_dense, versatilize


def test_save_load_round_trip(tmp_path):
    kwargs = {"num_classes": 10}
    model = build_model("zoo:vgg16", **kwargs)
    report = versatilize(model, VersatileConfig(mode="spatial+channel", delta=16))
    record = ModelRecord("zoo:vgg16", kwargs).then(report.conversion())
    prunekit.save(model, tmp_path / "m", record)
    steps = json.loads((tmp_path / "m" / "plans.json").read_text())
    assert steps[0]["kind"] == "versatile" and steps[0]["module"] == "prunekit.versatile.convert"
    loaded = prunekit.load(tmp_path / "m")
    assert isinstance(loaded.feature[3], VersatileConv2d) and loaded.feature[3].delta == 16
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded(x))


def test_save_load_after_to_dense(tmp_path):
    model = build_model("zoo:vgg11", num_classes=10)
    record = ModelRecord("zoo:vgg11", {"num_classes": 10}).then(versatilize(model).conversion())
    record = record.then(to_dense(model))
    prunekit.save(model, tmp_path / "d", record)
    loaded = prunekit.load(tmp_path / "d")
    assert not any(isinstance(m, VersatileConv2d) for m in loaded.modules())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded(x))


def test_to_dense_exports_to_onnx_and_runs_in_onnxruntime(tmp_path):
    pytest.importorskip("onnxruntime")
    from prunekit.export import to_onnx

    model = build_model("zoo:vgg11", num_classes=10)
    versatilize(model, VersatileConfig(mode="spatial+channel", delta=16))
    to_dense(model.eval())
    check = to_onnx(model, torch.randn(1, 3, 32, 32), tmp_path / "m.onnx", verify=True)
    assert check.max_rel_diff <= 1e-4
