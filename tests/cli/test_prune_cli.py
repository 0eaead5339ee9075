"""`prunekit prune` / `info` end to end, and one-line errors."""

from __future__ import annotations

import json

import pytest
import torch

import prunekit
from prunekit.cli import main


def test_prune_then_load_and_info(tmp_path, capsys):
    out = tmp_path / "r18"
    code = main(
        [
            "prune",
            "--model",
            "torchvision:resnet18",
            "--input-shape",
            "1,3,32,32",
            "--ratio",
            "0.5",
            "--criterion",
            "l2",
            "--out",
            str(out),
            "--no-latency",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "max_rel_diff" in text and "params" in text
    report = json.loads((out / "report.json").read_text())
    assert report["after"]["params"] < 0.5 * report["before"]["params"]
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model = prunekit.load(out)
    assert sum(p.numel() for p in model.parameters()) == report["after"]["params"]
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["channels_removed"] > 0 and info["model"] == "torchvision:resnet18"


def test_prune_from_saved_folder_chains_plans(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    args = ["--input-shape", "1,1,8,8", "--no-latency"]
    assert (
        main(["prune", "--model", "zoo:digits_cnn", "--ratio", "0.25", "--out", str(first), *args])
        == 0
    )
    assert (
        main(
            [
                "prune",
                "--from",
                str(first),
                "--ratio",
                "0.25",
                "--global",
                "--out",
                str(second),
                *args,
            ]
        )
        == 0
    )
    model = prunekit.load(second)
    assert len(prunekit.load_record(second).steps) == 2
    model(torch.randn(2, 1, 8, 8))


def test_slim_method_and_target(tmp_path):
    out = tmp_path / "s"
    assert (
        main(
            [
                "prune",
                "--model",
                "zoo:vgg11",
                "--input-shape",
                "1,3,32,32",
                "--method",
                "slim",
                "--percent",
                "0.5",
                "--round-to",
                "4",
                "--out",
                str(out),
                "--no-latency",
            ]
        )
        == 0
    )
    spec = json.loads((out / "plans.json").read_text())[0]["meta"]
    assert spec["criterion"] == "bn_scale" and spec["global"] is True
    out2 = tmp_path / "t"
    assert (
        main(
            [
                "prune",
                "--model",
                "zoo:vgg11",
                "--input-shape",
                "1,3,32,32",
                "--target-macs",
                "0.5",
                "--out",
                str(out2),
                "--no-latency",
            ]
        )
        == 0
    )


@pytest.mark.parametrize("criterion", ["taylor", "activation"])
def test_data_driven_criteria_from_cli(tmp_path, criterion):
    out = tmp_path / criterion
    assert (
        main(
            [
                "prune",
                "--model",
                "zoo:digits_cnn",
                "--input-shape",
                "1,1,8,8",
                "--criterion",
                criterion,
                "--data",
                "digits",
                "--calib-batches",
                "2",
                "--out",
                str(out),
                "--no-latency",
            ]
        )
        == 0
    )
    plans = json.loads((out / "plans.json").read_text())
    assert plans[0]["meta"]["criterion"] == criterion


@pytest.mark.parametrize(
    "argv,match",
    [
        (["--model", "torchvision:nope"], "unknown torchvision model 'nope'"),
        (["--model", "resnet18"], "no namespace"),
        (["--model", "torchvision:resnet18", "--ratio", "1.5"], "--ratio/--percent: must be in"),
        (["--model", "torchvision:resnet18", "--criterion", "l3"], "unknown criterion"),
        (["--from", "/nonexistent/dir"], "not a prunekit model folder"),
    ],
)
def test_errors_are_one_line(tmp_path, capsys, argv, match):
    code = main(["prune", *argv, "--input-shape", "1,3,32,32", "--out", str(tmp_path / "x")])
    assert code == 2
    out, err = capsys.readouterr()
    err = err.strip()
    assert err.count("\n") == 0 and err.startswith(("prunekit: error:", "prunekit prune: error:"))
    assert match in err
    assert "trace" not in out  # settings are checked before any work starts
    assert not (tmp_path / "x").exists()


def test_input_the_model_cannot_take_is_one_line(tmp_path, capsys):
    argv = ["--model", "torchvision:resnet18", "--input-shape", "1,3,32", "--out", str(tmp_path)]
    assert main(["prune", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("prunekit: error: ResNet does not run")
    assert "[(1, 3, 32)]" in err and "module 'conv1'" in err and "--input-shape" in err


def test_export_onnx(tmp_path):
    onnx = pytest.importorskip("onnx")
    out = tmp_path / "m"
    assert (
        main(
            [
                "prune",
                "--model",
                "zoo:digits_cnn",
                "--input-shape",
                "1,1,8,8",
                "--out",
                str(out),
                "--no-latency",
                "--no-verify",
            ]
        )
        == 0
    )
    assert (
        main(["export", str(out), "--onnx", str(tmp_path / "m.onnx"), "--input-shape", "1,1,8,8"])
        == 0
    )
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    convs = [n for n in graph.initializer if n.dims and len(n.dims) == 4]
    assert convs and convs[0].dims[0] == 16  # the pruned width, not the original 32
