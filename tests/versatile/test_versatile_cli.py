"""`--versatile/--delta/--g` wherever a model is built, costs in `info` and the prune report."""

from __future__ import annotations

import json

import pytest
import torch

import prunekit
from prunekit.cli import main
from prunekit.methods import TrainSpec, Workbench, WorkbenchConfig, train_stage
from prunekit.recipes import Recipe
from prunekit.recipes.executor import Executor
from prunekit.train import TrainConfig
from prunekit.versatile import VersatileConv2d


def test_train_versatile_then_info(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--model", "zoo:digits_cnn", "--data", "digits", "--epochs", "1",
            "--versatile", "spatial", "--out", str(out), "--no-progress", "--seed", "0"]  # fmt: skip
    assert main(argv) == 0
    model = prunekit.load(out / "model")
    assert any(isinstance(m, VersatileConv2d) for m in model.modules())
    capsys.readouterr()
    assert main(["info", str(out / "model"), "--input-shape", "1,1,8,8", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["conversions"] == ["versatile"]
    v = info["versatile"]
    assert v["conv_params"] < v["dense_conv_params"] and v["macs_paper"] < v["macs_executed"]
    assert v["macs_executed"] == info["macs"]


def test_prune_versatile_model_reports_costs(tmp_path, capsys):
    out = tmp_path / "p"
    argv = ["prune", "--model", "zoo:vgg11", "--versatile", "spatial+channel", "--delta", "16",
            "--input-shape", "1,3,32,32", "--ratio", "0.5", "--no-latency", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "versatile convs" in text and "max_rel_diff" in text
    model = prunekit.load(out)
    assert model.feature[4].delta == 16


def test_versatile_flag_errors(tmp_path, capsys):
    argv = ["prune", "--model", "zoo:vgg11", "--delta", "4", "--input-shape", "1,3,32,32",
            "--out", str(tmp_path / "x")]  # fmt: skip
    assert main(argv) == 2
    assert "--delta/--g need --versatile" in capsys.readouterr().err
    argv[3:5] = ["--versatile", "spatial+channel"]
    assert main(argv) == 2
    assert "needs delta > 0" in capsys.readouterr().err


def test_recipe_model_section_builds_versatile():
    recipe = Recipe.model_validate(
        {"model": {"spec": "zoo:vgg11", "versatile": {"mode": "spatial"}}, "data": {"dataset": "x"}}
    )
    model = Executor(recipe)._build_model()
    assert sum(isinstance(m, VersatileConv2d) for m in model.modules()) == 8
    assert recipe.model.record().steps[0].kind == "versatile"
    with pytest.raises(Exception, match="checkpoint"):
        Recipe.model_validate(
            {"model": {"spec": "zoo:vgg11", "checkpoint": "d", "versatile": {"mode": "spatial"}}}
        )


def test_workbench_trains_a_versatile_model(tmp_path):
    train = TrainConfig(epochs=1, lr=0.05, device="cpu", progress=False, seed=0)
    config = WorkbenchConfig(model="zoo:digits_cnn", data="digits", versatile={"mode": "spatial"})
    bench = Workbench(config, train)
    stage = train_stage(bench, "v", tmp_path / "v", None, TrainSpec(train), fingerprint={"e": 1})
    assert stage.record.steps[0].kind == "versatile"
    reloaded = prunekit.load(tmp_path / "v")
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(stage.model.eval().cpu()(x), reloaded(x))
