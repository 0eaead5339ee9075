"""The Network Slimming pipeline on real data (scikit-learn digits): stages, resume, CLI."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from slimutil import TINY_VGG

import prunekit
from prunekit.cli import main
from prunekit.data import load_dataset
from prunekit.errors import ConfigError
from prunekit.methods import NetworkSlimming, SlimmingConfig, StageInterrupted
from prunekit.verify import max_rel_diff


@pytest.fixture(scope="module")
def digits() -> dict[str, Any]:
    return {
        "train_data": load_dataset("digits", "train"),
        "test_data": load_dataset("digits", "test"),
    }


def _slim(digits: dict[str, Any], **over: Any) -> NetworkSlimming:
    cfg = {
        "model": "zoo:vgg",
        "model_kwargs": TINY_VGG,
        "sparsity": 1e-2,
        "percent": 0.5,
        "epochs": 3,
        "finetune_epochs": 2,
        "lr": 0.1,
        "schedule": "onecycle",
        "batch_size": 32,
        "progress": False,
        "device": "cpu",
        **over,
    }
    return NetworkSlimming(SlimmingConfig.from_dict(cfg), **digits)


def test_run_writes_loadable_stages_and_skips_them_on_rerun(
    tmp_path: Path, digits: dict[str, Any]
) -> None:
    result = _slim(digits, dense_epochs=2).run(tmp_path)
    assert list(result.stages) == ["dense", "sparse", "pruned", "finetuned"]
    s = {k: v.summary for k, v in result.stages.items()}
    assert s["dense"]["acc"] > 0.8 and s["sparse"]["acc"] > 0.8  # real digits, 2-3 epochs
    assert s["pruned"]["params"] < 0.6 * s["sparse"]["params"]
    assert s["pruned"]["macs"] < s["sparse"]["macs"]
    assert s["finetuned"]["params"] == s["pruned"]["params"]
    assert s["finetuned"]["acc"] > max(0.8, s["pruned"]["acc"] - 0.05)
    report = s["pruned"]["report"]
    assert report["method"] == "prunekit" and report["removed"] > 0
    assert sum(r["kept"] for r in report["bns"]) < sum(r["size"] for r in report["bns"])
    x = torch.randn(16, 1, 8, 8)
    for name, stage in result.stages.items():
        loaded = prunekit.load(tmp_path / name)
        assert max_rel_diff(stage.model.cpu(), loaded, x) == 0.0
        assert not (tmp_path / name / "checkpoint").exists()  # dropped once the stage is done
    assert (tmp_path / "sparse" / "bn_gamma_hist.png").exists()
    assert json.loads((tmp_path / "summary.json").read_text())["finetuned"]["acc"] == pytest.approx(
        s["finetuned"]["acc"]
    )
    again = _slim(digits, dense_epochs=2).run(tmp_path)
    assert all(st.skipped for st in again.stages.values())
    assert again.stages["finetuned"].summary == result.stages["finetuned"].summary
    with pytest.raises(ConfigError, match=r"different settings.*sparsity"):
        _slim(digits, dense_epochs=2, sparsity=1e-3).run(tmp_path)


def test_killed_after_sparse_stage_rerun_skips_it(tmp_path: Path, digits: dict[str, Any]) -> None:
    slim = _slim(digits)
    slim.train_sparse(tmp_path / "sparse")  # the process "dies" here
    weights = tmp_path / "sparse" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    result = _slim(digits).run(tmp_path)
    assert result.stages["sparse"].skipped and not result.stages["pruned"].skipped
    assert weights.stat().st_mtime_ns == stamp
    assert result.stages["finetuned"].summary["acc"] > 0.8


def test_deadline_stops_at_an_epoch_boundary_and_resume_is_exact(
    tmp_path: Path, digits: dict[str, Any]
) -> None:
    with pytest.raises(StageInterrupted):
        _slim(digits).train_sparse(tmp_path / "cut", deadline=time.monotonic() - 1)
    stage = json.loads((tmp_path / "cut" / "stage.json").read_text())
    assert stage["done"] is False
    assert len((tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()) == 1
    resumed = _slim(digits).train_sparse(tmp_path / "cut")
    assert not resumed.skipped and resumed.summary["epochs"] == 3
    _slim(digits).train_sparse(tmp_path / "straight")
    a = load_file(str(tmp_path / "cut" / "model.safetensors"))
    b = load_file(str(tmp_path / "straight" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_cli_slim_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    args = [
        "slim",
        "--model",
        "zoo:vgg",
        "--model-kwargs",
        json.dumps(TINY_VGG),
        "--data",
        "digits",
        "--percent",
        "0.5",
        "--sparsity",
        "1e-2",
        "--finetune-lr",
        "0.05",
        "--epochs",
        "3",
        "--finetune-epochs",
        "2",
        "--schedule",
        "onecycle",
        "--batch-size",
        "32",
        "--device",
        "cpu",
        "--threshold",
        "reference",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    lines = {line.split()[0]: line for line in text.splitlines() if line}
    assert {"sparse", "pruned", "finetuned", "threshold"} <= set(lines)
    assert "params" in lines["pruned"] and "MACs" in lines["pruned"]
    model = prunekit.load(out / "finetuned")
    acc = json.loads((out / "finetuned" / "stage.json").read_text())["summary"]["acc"]
    assert acc > 0.7
    assert f"acc {acc:.4f}" in lines["finetuned"]
    assert sum(p.numel() for p in model.parameters()) < 25_154  # the dense tiny VGG
    assert main(args) == 2  # out exists: refuse without --resume
    assert "--resume" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0
    assert "skipped" in capsys.readouterr().out


@pytest.mark.gpu
def test_pipeline_on_cuda_with_cuda_graphs(tmp_path: Path, digits: dict[str, Any]) -> None:
    # BN-L1 inside the captured train step, bf16 evaluation, surgery on a CUDA model.
    result = _slim(digits, device="cuda", compile="cuda-graphs").run(tmp_path)
    s = {k: v.summary for k, v in result.stages.items()}
    assert s["sparse"]["acc"] > 0.8 and s["finetuned"]["acc"] > 0.8
    assert s["pruned"]["params"] < s["sparse"]["params"]
    loaded = prunekit.load(tmp_path / "finetuned")
    x = torch.randn(8, 1, 8, 8)
    assert max_rel_diff(result.stages["finetuned"].model.float().cpu(), loaded, x) <= 1e-4
