"""``prunekit train`` / ``prunekit finetune`` end to end on the digits dataset.

``prunekit.io`` (the lead's model I/O) is replaced by a recording fake so these tests pin down
exactly what the CLI hands to ``io.save``; a second test uses the real module once it exists.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from trainutil import small_cnn

from prunekit.cli import main
from prunekit.models import FACTORIES
from prunekit.plan import PruningPlan
from prunekit.record import ModelRecord

pytest.importorskip("prunekit.data")  # the data layer (another module) provides "digits"


def _factory(name: str, kwargs: dict[str, Any]) -> nn.Module:
    torch.manual_seed(0)
    net = small_cnn()
    assert net[-1].out_features == kwargs["num_classes"]
    return net


FACTORIES.add("trainclitest", _factory, overwrite=True)


class _FakeIO(types.ModuleType):
    def __init__(self, loaded: nn.Module | None = None, record: Any = None) -> None:
        super().__init__("prunekit.io")
        self.saved: list[dict[str, Any]] = []
        self.loaded, self.record = loaded, record

    def save(self, model: nn.Module, out_dir: Path, spec: Any, steps: Any = None) -> Path:
        self.saved.append({"model": model, "out_dir": Path(out_dir), "spec": spec, "steps": steps})
        return Path(out_dir)

    def load(self, path: Path) -> nn.Module:
        assert self.loaded is not None
        return self.loaded

    def load_record(self, path: Path) -> Any:
        assert self.record is not None
        return self.record


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path_factory.mktemp("cache")))


def _args(out: Path, *extra: str) -> list[str]:
    return [
        "--data", "digits", "--epochs", "3", "--batch-size", "32", "--lr", "0.2",
        "--schedule", "onecycle", "--out", str(out), "--device", "cpu", "--no-progress", *extra,
    ]  # fmt: skip


def test_train_saves_model_spec_metrics_and_histogram(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    io = _FakeIO()
    monkeypatch.setitem(sys.modules, "prunekit.io", io)
    out = tmp_path / "run"
    rc = main(["train", "--model", "trainclitest:cnn", *_args(out, "--sparsity", "1e-4")])
    assert rc == 0
    (call,) = io.saved
    # written into a temp sibling, then renamed to run/model
    assert call["out_dir"].parent == out and (out / "model").is_dir()
    assert call["spec"] == ModelRecord("trainclitest:cnn", {"num_classes": 10})
    assert call["steps"] is None
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["epoch"] == 3 and summary["val_acc"] > 0.85
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3
    assert (out / "bn_gamma_hist.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "checkpoint" / "epoch-0003").is_dir()


def test_finetune_carries_the_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    pruned = small_cnn()
    plan = PruningPlan(groups={"1": {"size": 4, "keep": [0, 2]}})
    record = ModelRecord("zoo:x", {"num_classes": 10}, (plan,))
    io = _FakeIO(loaded=pruned, record=record)
    monkeypatch.setitem(sys.modules, "prunekit.io", io)
    rc = main(["finetune", str(tmp_path / "src"), *_args(tmp_path / "ft")])
    assert rc == 0
    (call,) = io.saved
    assert call["model"] is pruned
    assert call["spec"] == record  # the source's base spec and plans, unchanged


def test_one_line_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["finetune", str(tmp_path / "src"), *_args(tmp_path / "ft")]) == 2
    assert "is not a prunekit model folder" in capsys.readouterr().err
    bad = ["train", "--model", "trainclitest:cnn", "--model-kwargs", "{oops", *_args(tmp_path)]
    assert main(bad) == 2
    assert "--model-kwargs/--kwargs: expected a JSON object" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "prunekit.data", None)  # as if the module were missing
    assert main(["train", "--model", "trainclitest:cnn", *_args(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prunekit: error:") and "prunekit.data" in err and err.count("\n") == 1


def test_train_then_finetune_with_real_io(tmp_path: Path) -> None:
    io = pytest.importorskip("prunekit.io")
    assert main(["train", "--model", "trainclitest:cnn", *_args(tmp_path / "a")]) == 0
    trained = io.load(tmp_path / "a" / "model")
    assert io.load_record(tmp_path / "a" / "model").model == "trainclitest:cnn"
    assert main(["finetune", str(tmp_path / "a" / "model"), *_args(tmp_path / "b")]) == 0
    tuned = io.load(tmp_path / "b" / "model")
    before, after = trained.state_dict(), tuned.state_dict()
    assert before.keys() == after.keys()
    assert not torch.equal(before["0.weight"], after["0.weight"])  # it trained further


def test_finetune_a_slimmed_model_keeps_its_plans(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Network Slimming end to end: prune half the channels by |γ|, fine-tune via the CLI."""
    prunekit = pytest.importorskip("prunekit")
    io = pytest.importorskip("prunekit.io")
    model = _factory("cnn", {"num_classes": 10})
    graph = prunekit.trace(model, torch.randn(2, 1, 8, 8))
    plan = prunekit.make_plan(graph, prunekit.score(model, graph, "bn_scale"), ratio=0.5)
    prunekit.apply_plan(model, plan)
    spec = {"model": "trainclitest:cnn", "kwargs": {"num_classes": 10}}
    io.save(model, tmp_path / "pruned", spec, [plan])
    capsys.readouterr()
    assert (
        main(["finetune", str(tmp_path / "pruned"), *_args(tmp_path / "ft", "--epochs", "6")]) == 0
    )
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["val_acc"] > 0.85
    tuned = io.load(tmp_path / "ft" / "model")
    assert tuned[0].out_channels == 4 and tuned[3].out_channels == 8  # still pruned
    assert len(io.load_record(tmp_path / "ft" / "model").steps) == 1
