"""Real CLI runs on the embedded digits: same seed → identical weights, an existing run is never
overwritten by accident (its checkpoint stays byte-identical), --resume/--overwrite do what they
say, --limit-train/--limit-test slice the data, --latency is opt-in and interleaved."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

import prunekit
from prunekit.cli import main

QUICK = ["--data", "digits", "--epochs", "1", "--batch-size", "64", "--no-progress",
         "--device", "cpu", "--limit-train", "200", "--limit-test", "100"]  # fmt: skip


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))


def _state(folder: Path) -> dict[str, torch.Tensor]:
    return prunekit.load(folder).state_dict()


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _train(out: Path, *extra: str) -> int:
    return main(["train", "--model", "zoo:digits_cnn", *QUICK, "--out", str(out), *extra])


def test_train_and_finetune_with_the_same_seed_are_bit_identical(tmp_path: Path) -> None:
    for name in ("a", "b"):
        assert _train(tmp_path / name, "--seed", "7") == 0
    assert _same(_state(tmp_path / "a" / "model"), _state(tmp_path / "b" / "model"))
    rows = [(tmp_path / n / "metrics.jsonl").read_text().splitlines() for n in ("a", "b")]
    loss = [json.loads(r[-1])["train_loss"] for r in rows]
    assert loss[0] == loss[1]  # the losses the issue saw differ (2.3032 vs 2.3008) now agree
    assert _train(tmp_path / "c", "--seed", "8") == 0
    assert not _same(_state(tmp_path / "a" / "model"), _state(tmp_path / "c" / "model"))
    for name in ("fa", "fb"):
        argv = ["finetune", str(tmp_path / "a" / "model"), *QUICK, "--seed", "3"]
        assert main([*argv, "--out", str(tmp_path / name)]) == 0
    assert _same(_state(tmp_path / "fa" / "model"), _state(tmp_path / "fb" / "model"))


def test_rerun_is_refused_and_the_checkpoint_stays_intact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert _train(run, "--seed", "1") == 0
    before = _digest(run)
    assert any(k.startswith("checkpoint/") for k in before)
    capsys.readouterr()
    assert _train(run, "--seed", "1") == 2  # the issue: this used to delete the checkpoint
    assert "pass --resume to continue it, --overwrite to start over" in capsys.readouterr().err
    assert _digest(run) == before
    assert main(["finetune", str(run / "model"), *QUICK, "--out", str(run)]) == 2
    assert _digest(run) == before
    first = _state(run / "model")
    assert _train(run, "--seed", "1", "--resume") == 0  # finished already: nothing retrained
    assert _same(_state(run / "model"), first)
    assert _train(run, "--seed", "2", "--overwrite") == 0  # starts over, with another seed
    assert not _same(_state(run / "model"), first)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "run"] or sorted(
        p.name for p in tmp_path.iterdir()
    ) == ["run"]  # no temp or replaced folders left beside it


def test_prune_refuses_an_existing_model_and_overwrite_replaces_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m"
    argv = ["prune", "--model", "zoo:digits_cnn", "--input-shape", "1,1,8,8", "--out", str(out)]
    assert main([*argv, "--ratio", "0.25"]) == 0
    first = _digest(out)
    assert main([*argv, "--ratio", "0.5"]) == 2
    assert "already exists and is not empty; pass --overwrite" in capsys.readouterr().err
    assert _digest(out) == first
    assert main([*argv, "--ratio", "0.5", "--overwrite"]) == 0
    plans = json.loads((out / "plans.json").read_text())
    assert plans[0]["meta"]["ratio"] == 0.5
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == ["m"]


def test_latency_is_opt_in_and_interleaved(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["prune", "--model", "zoo:digits_cnn", "--input-shape", "1,1,8,8", "--no-verify"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert "latency ms" not in capsys.readouterr().out
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["before"]["latency_ms"] is None
    assert main([*argv, "--latency", "--out", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "interleaved runs" in out and "±" in out
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["before"]["latency_iqr_ms"] is not None
    assert report["after"]["latency_ms"] > 0


def test_demo_same_seed_same_model_and_limits_slice_the_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["demo", "--epochs", "2", "--finetune-epochs", "1", "--limit-train", "300",
            "--limit-test", "100", "--criterion", "taylor", "--seed", "5"]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    text = capsys.readouterr().out
    assert "300 train / 100 test images" in text  # 30 and 10 per class
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    assert _same(_state(tmp_path / "a"), _state(tmp_path / "b"))
    plans = json.loads((tmp_path / "a" / "plans.json").read_text())
    assert plans[0]["meta"]["criterion"] == "taylor"  # demo accepts data criteria


def test_slim_same_seed_is_bit_identical(tmp_path: Path) -> None:
    argv = ["slim", "--model", "zoo:digits_cnn", *QUICK, "--finetune-epochs", "1",
            "--percent", "0.5", "--seed", "4"]  # fmt: skip
    for name in ("a", "b"):
        assert main([*argv, "--out", str(tmp_path / name)]) == 0
    folders = [sorted((tmp_path / n / "finetuned").rglob("model.safetensors")) for n in "ab"]
    assert folders[0] and len(folders[0]) == len(folders[1])
    for fa, fb in zip(*folders):
        assert _same(_state(fa.parent), _state(fb.parent))


@pytest.mark.slow
def test_run_same_seed_is_bit_identical(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "version: 1\nmodel: {spec: 'zoo:digits_cnn', input_shape: [1, 1, 8, 8]}\n"
        "data: {dataset: digits, batch_size: 64}\ntraining: {epochs: 2, lr: 0.05, seed: 3}\n"
        "pruners:\n  p: {method: magnitude, schedule: agp, initial_sparsity: 0.1, "
        "final_sparsity: 0.5}\npolicies:\n  - {pruner: p, starting_epoch: 0, ending_epoch: 2, "
        "frequency: 1}\n"
    )
    for name in ("a", "b"):
        argv = ["run", str(recipe), "--out", str(tmp_path / name), "--no-progress"]
        assert main([*argv, "--device", "cpu"]) == 0
    assert _same(_state(tmp_path / "a" / "model"), _state(tmp_path / "b" / "model"))
