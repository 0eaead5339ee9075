"""ONNX export checked in onnxruntime, and the int8 hand-off on real data."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torchvision

pytest.importorskip("onnxruntime")

from prunekit import apply_plan, make_plan, score, trace
from prunekit.export import ort_latency, ort_outputs, ort_session, to_onnx
from prunekit.zoo import build

from .test_fold import trained_stats


def pruned(model, x, ratio=0.5):
    graph = trace(model, x)
    return apply_plan(copy.deepcopy(model), make_plan(graph, score(model, graph, "l2"),
                                                      ratio=ratio, round_to=8))  # fmt: skip


MODELS = {
    "digits_cnn": (lambda: build("digits_cnn"), (1, 1, 8, 8)),
    "vgg11_zoo": (lambda: build("vgg11"), (1, 3, 32, 32)),
    "resnet18": (lambda: torchvision.models.resnet18(), (1, 3, 32, 32)),
    "mobilenet_v2": (lambda: torchvision.models.mobilenet_v2(), (1, 3, 32, 32)),
}


@pytest.mark.parametrize("fold", [False, True])
@pytest.mark.parametrize("name", list(MODELS))
def test_ort_matches_pytorch_for_dense_and_pruned(tmp_path, name, fold):
    make, shape = MODELS[name]
    dense = trained_stats(make())
    x = torch.randn(*shape)
    for tag, model in (("dense", dense), ("pruned", pruned(dense, x))):
        check = to_onnx(model, x, tmp_path / f"{tag}.onnx", fold_bn=fold)
        assert check.max_rel_diff <= 1e-4, (tag, check.max_rel_diff)
        assert check.batch_sizes == [1, 3]  # the dynamic batch axis was exercised
        assert (check.fold is not None) == fold
        # independent of to_onnx's own check: another batch size, compared here
        xb = torch.randn(5, *shape[1:])
        got = ort_outputs(ort_session(check.path), xb)[0]
        with torch.no_grad():
            want = model.eval()(xb).numpy()
        assert np.abs(got - want).max() / np.abs(want).max() <= 1e-4
    assert not list(tmp_path.glob(".*.tmp"))  # atomic: no temp files left


def test_ort_latency_is_interleaved_stats(tmp_path):
    x = torch.randn(1, 1, 8, 8)
    p = to_onnx(build("digits_cnn").eval(), x, tmp_path / "m.onnx").path
    stats = ort_latency({"a": p, "b": p}, x)
    assert set(stats) == {"a", "b"} and all(s.device == "ort-cpu" and s.n == 30
                                            for s in stats.values())  # fmt: skip


def test_int8_keeps_accuracy_on_digits(tmp_path):
    """Real data (scikit-learn's digits scans): int8 within 1 point of fp32."""
    from prunekit.data import TensorLoader, load_dataset
    from prunekit.demo import train
    from prunekit.quantize import calibration_batches, ort_accuracy, quantize_int8

    model = build("digits_cnn")
    train(model, TensorLoader(load_dataset("digits", "train"), 64, shuffle=True), 6, 0.05)
    test = TensorLoader(load_dataset("digits", "test"), 128)
    x = next(iter(test))[0][:1]
    fp32 = to_onnx(model.eval(), x, tmp_path / "m.onnx", fold_bn=True).path
    int8 = quantize_int8(fp32, tmp_path / "m.int8.onnx", calibration_batches("digits", n=8))
    a32, a8 = ort_accuracy(fp32, test), ort_accuracy(int8, test)
    assert a32 >= 0.9, a32
    assert abs(a32 - a8) <= 0.01, (a32, a8)
    import onnx

    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops


@pytest.mark.parametrize("mode", ["spatial", "spatial+channel"])
def test_versatile_model_exports_as_plain_convolutions(tmp_path, mode):
    import onnx

    from prunekit.versatile import VersatileConfig, VersatileConv2d, versatilize

    model = build("vgg11").eval()
    versatilize(model, VersatileConfig(mode=mode, delta=8 if "channel" in mode else 0, g=8))
    x = torch.randn(2, 3, 32, 32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    check = to_onnx(model, x, tmp_path / "v.onnx")
    assert check.max_rel_diff <= 1e-4  # verified in onnxruntime against the versatile model
    ops = {n.op_type for n in onnx.load(str(tmp_path / "v.onnx")).graph.node}
    assert "Conv" in ops and not ops & {"Pad", "Concat", "Slice"}  # no weight-building graph
    assert sum(isinstance(m, VersatileConv2d) for m in model.modules()) > 0  # model unchanged
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
