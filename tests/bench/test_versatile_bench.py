"""bench/versatile.py: the speed rows, a study row on real-size bookkeeping, the report."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from prunekit.data import load_dataset
from prunekit.versatile import VersatileConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def vb() -> ModuleType:
    sys.path.insert(0, str(REPO / "bench"))
    spec = importlib.util.spec_from_file_location(
        "bench_versatile", REPO / "bench" / "versatile.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_versatile"] = module
    spec.loader.exec_module(module)
    return module


def test_vgg16_layer_table_has_13_layers(vb: ModuleType) -> None:
    assert sum(k for *_, k in vb.VGG16_LAYERS) == 13


def test_layer_speed_row_settings(vb: ModuleType) -> None:
    row = vb._layer_speed(16, 16, 4, True, repeats=1)
    assert (row["delta"], row["g"], row["s"], row["n"]) == (6, 2, 2, 4)
    assert row["ratio"] == pytest.approx(row["naive_ms"] / row["one_conv_ms"])
    first = vb._layer_speed(3, 8, 4, True, repeats=1)  # too few inputs: spatial only
    assert (first["delta"], first["n"]) == (0, 1)


def test_study_rows_and_report(vb: ModuleType, tmp_path: Path) -> None:
    data = (load_dataset("digits", "train"), load_dataset("digits", "test"))
    args = argparse.Namespace(work=str(tmp_path / "w"), batch_size=64)
    train = vb.TrainConfig(epochs=1, lr=0.05, device="cpu", progress=False)
    model = {"model": "zoo:digits_cnn", "model_kwargs": {}, "augment": "none"}
    rows = {"dense": None, "spatial": VersatileConfig(mode="spatial")}
    study = vb._study(args, "digits", model, rows, train, data)
    dense, spatial = study["rows"]
    assert dense["conv_fraction"] == 1.0 and dense["macs_paper"] == dense["macs_executed"]
    assert spatial["dense_conv_params"] == dense["conv_params"]
    assert spatial["conv_fraction"] < 0.8 and spatial["macs_paper"] < spatial["macs_executed"]
    assert spatial["macs_executed"] == dense["macs_executed"]
    meta = {"date": "d", "commit": "c", "hardware": "h", "cpu": "x", "threads": 2,
            "loadavg": [1], "torch": "t", "command": "c"}  # fmt: skip
    study["meta"] = meta
    speed = {"variants": {"spatial": {"layers": [vb._layer_speed(8, 8, 4, False, 1) | {"count": 1}],
             "one_conv_ms": 1.0, "naive_ms": 2.0, "ratio": 2.0}}, "meta": meta}  # fmt: skip
    vb.write({"speed": speed, "mnist": study}, tmp_path / "v.json")
    md = (tmp_path / "v.md").read_text()
    assert "| **spatial** | **VGG-16 total (13 layers)** |" in md and "| spatial |" in md
    assert json.loads((tmp_path / "v.json").read_text())["mnist"]["rows"][1]["row"] == "spatial"
