"""``prunekit sensitivity`` end to end on a small trained model and real digits."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from prunekit.cli import main
from prunekit.data import TensorLoader, load_dataset
from prunekit.demo import train as demo_train
from prunekit.io import save
from prunekit.zoo import build


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convs: threads only add sync cost on a shared machine
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """zoo:digits_cnn trained briefly on real digits, saved with prunekit.io."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = build("digits_cnn")
        loader = TensorLoader(load_dataset("digits", "train"), 64, shuffle=True, seed=0)
        demo_train(model, loader, epochs=4, lr=0.1)
    finally:
        torch.set_num_threads(before)
    out = tmp_path_factory.mktemp("digits") / "model"
    save(model.eval(), out, {"model": "zoo:digits_cnn", "kwargs": {}})
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_structured_cli_writes_csv_plot_and_ratios(saved_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "sens"
    argv = ["sensitivity", "--from", str(saved_model), "--data", "digits", "--levels", "0.5,0.9"]
    assert main([*argv, "--structured", "--max-drop", "0.02", "--out", str(out)]) == 0
    rows = _rows(out / "sensitivity.csv")
    targets = list(dict.fromkeys(r["target"] for r in rows))
    # digits_cnn: stem (+ residual), block mid, branch a, branch b, fc1 hidden
    assert targets == [
        "stem.0.weight:0",
        "block.0.0.weight:0",
        "branch_a.0.weight:0",
        "branch_b.0.weight:0",
        "fc1.weight:0",
    ]
    assert len(rows) == 5 * 3 and {r["level"] for r in rows} == {"0.0", "0.5", "0.9"}
    base = {float(r["metric"]) for r in rows if r["level"] == "0.0"}
    assert len(base) == 1 and base.pop() > 0.9  # trained model on the 360 real test digits
    assert (out / "sensitivity.png").read_bytes()[:4] == b"\x89PNG"
    info = json.loads((out / "ratios.json").read_text())
    assert info["mode"] == "structured" and info["max_drop"] == 0.02
    assert list(info["ratios"]) == targets
    for target, level in info["ratios"].items():
        curve = {float(r["level"]): float(r["metric"]) for r in rows if r["target"] == target}
        assert level in (0.0, 0.5, 0.9)
        assert all(curve[lv] >= info["baseline"] - 0.02 for lv in curve if lv <= level)
    assert sorted(p.name for p in out.iterdir()) == [
        "ratios.json",
        "sensitivity.csv",
        "sensitivity.png",
    ]


def test_unstructured_cli_with_model_spec_and_max_batches(tmp_path: Path) -> None:
    out = tmp_path / "u"
    argv = ["sensitivity", "--model", "zoo:digits_cnn", "--data", "digits", "--unstructured"]
    argv += ["--levels", "0.3", "--max-batches", "1", "--batch-size", "50", "--out", str(out)]
    assert main(argv) == 0
    rows = _rows(out / "sensitivity.csv")
    targets = list(dict.fromkeys(r["target"] for r in rows))
    assert "fc1.weight" in targets and "stem.0.weight" in targets
    assert len(rows) == 2 * len(targets)
    for r in rows:  # one batch of 50 images: every accuracy is a multiple of 1/50
        assert float(r["metric"]) * 50 == pytest.approx(round(float(r["metric"]) * 50))
    assert json.loads((out / "ratios.json").read_text())["mode"] == "unstructured"


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["sensitivity", "--model", "zoo:digits_cnn", "--data", "digits", "--out", str(tmp_path)]
    assert main([*base, "--max-batches", "0"]) == 2
    assert "--max-batches: must be >= 1" in capsys.readouterr().err
    assert main([*base, "--levels", "0.5,1.5"]) == 2
    assert "--levels must be numbers in [0, 1]" in capsys.readouterr().err
    assert main([*base, "--unstructured", "--criterion", "l2", "--levels", "0.5"]) == 2
    assert "not an unstructured criterion" in capsys.readouterr().err


@pytest.mark.gpu
def test_structured_cli_on_cuda(saved_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "gpu"
    argv = ["sensitivity", "--from", str(saved_model), "--data", "digits", "--levels", "0.5"]
    assert main([*argv, "--device", "cuda", "--out", str(out)]) == 0
    assert len(_rows(out / "sensitivity.csv")) == 5 * 2
