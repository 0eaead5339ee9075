"""Saved models: safetensors + JSON, rebuilt in a fresh process, clear errors on bad files."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import prunekit
from prunekit.errors import CheckpointError
from prunekit.models import build_model
from prunekit.pipeline import PruneConfig, prune

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def saved(tmp_path):
    torch.manual_seed(0)
    model = build_model("torchvision:resnet18", num_classes=7).eval()
    first = prune(model, torch.randn(1, 3, 32, 32), PruneConfig(ratio=0.5)).plan
    second = prune(model, torch.randn(1, 3, 32, 32), PruneConfig(ratio=0.25, criterion="l1")).plan
    spec = {"model": "torchvision:resnet18", "kwargs": {"num_classes": 7}}
    out = prunekit.save(model, tmp_path / "m", spec, [first, second])
    return model, out


def test_round_trip_in_fresh_process(saved, tmp_path):
    model, out = saved
    x = torch.randn(2, 3, 32, 32)
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        want = model(x)
    code = (
        "import sys, torch, prunekit\n"
        f"m = prunekit.load({str(out)!r})\n"
        f"x = torch.load({str(tmp_path / 'x.pt')!r}, weights_only=True)\n"
        f"torch.save(m(x).detach(), {str(tmp_path / 'y.pt')!r})\n"
    )
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
    got = torch.load(tmp_path / "y.pt", weights_only=True)
    assert torch.equal(got, want)


def test_two_plans_replayed_and_files_are_plain(saved):
    model, out = saved
    assert len(json.loads((out / "plans.json").read_text())) == 2
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", "plans.json", "spec.json"]
    again = prunekit.load(out)
    assert [p.shape for p in again.parameters()] == [p.shape for p in model.parameters()]
    assert not again.training


def test_saved_files_get_ordinary_permissions(saved):
    # safetensors writes its file 0o600; a saved model must be as readable as any plain file
    _, out = saved
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert modes == dict.fromkeys(modes, 0o666 & ~umask)


def test_corrupt_weights_detected(saved):
    _, out = saved
    data = bytearray((out / "model.safetensors").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (out / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        prunekit.load(out)


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda d: (d / "spec.json").unlink(), "not a prunekit model folder"),
        (lambda d: (d / "spec.json").write_text("{"), "corrupt"),
        (lambda d: (d / "model.safetensors").unlink(), "missing"),
        (lambda d: (d / "plans.json").write_text("[{}]"), "not a prunekit plan"),
        (lambda d: (d / "plans.json").write_text("[]"), "does not fit"),
    ],
)
def test_bad_folders_give_one_clear_error(saved, mutate, match):
    _, out = saved
    mutate(out)
    with pytest.raises(CheckpointError, match=match):
        prunekit.load(out)


def test_spec_for_wrong_model(saved):
    _, out = saved
    spec = json.loads((out / "spec.json").read_text())
    spec["model"] = "torchvision:resnet34"
    (out / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(CheckpointError, match=r"does not fit|plan"):
        prunekit.load(out)


def test_record_round_trips_and_chains(saved, tmp_path):
    model, out = saved
    record = prunekit.load_record(out)
    assert record.model == "torchvision:resnet18" and len(record.steps) == 2
    again = prunekit.save(model, tmp_path / "again", record)  # a loaded record re-saves as is
    assert prunekit.load_record(again) == record
    rebuilt = record.build()
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in model.parameters()]


def test_save_refuses_a_folder_that_would_not_load(tmp_path):
    model = build_model("torchvision:resnet18", num_classes=7).eval()
    prune(model, torch.randn(1, 3, 32, 32), PruneConfig(ratio=0.5))
    spec = {"model": "torchvision:resnet18", "kwargs": {"num_classes": 7}}
    with pytest.raises(CheckpointError, match=r"0 recorded step\(s\): conv1.weight has shape"):
        prunekit.save(model, tmp_path / "m", spec)  # the plan was left out
    assert not (tmp_path / "m").exists()  # nothing written


def test_conversions_are_recorded_and_replayed(tmp_path):
    from prunekit.record import CONVERSIONS, Conversion

    def widen_head(model, data):  # a toy structural step: replace the classifier
        model.fc = torch.nn.Linear(model.fc.in_features, int(data["classes"]))

    CONVERSIONS.add("test-widen-head", widen_head)
    try:
        model = build_model("torchvision:resnet18", num_classes=7).eval()
        step = Conversion("test-widen-head", {"classes": 3})
        step.apply(model)
        out = prunekit.save(model, tmp_path / "m", "torchvision:resnet18", [step])
        loaded = prunekit.load(out)
        assert loaded.fc.out_features == 3
        x = torch.randn(1, 3, 32, 32)
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x))
    finally:
        CONVERSIONS.remove("test-widen-head")


def test_no_pickle_in_sources():
    for path in (REPO / "src").rglob("*.py"):
        text = path.read_text()
        for line in text.splitlines():
            if re.search(r"(?<![\w.])torch\.load\(", line):
                assert "weights_only=True" in line, f"{path}: {line}"
