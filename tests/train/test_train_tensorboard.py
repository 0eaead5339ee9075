"""Epoch metrics also go to TensorBoard: the event file holds every metrics.jsonl column, and a
resumed run shows each epoch once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from trainutil import BatchLoader, digits, mlp

from prunekit.errors import ConfigError
from prunekit.train import TrainConfig, Trainer
from prunekit.train import tensorboard as tb

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import (
    EventAccumulator,
)


def _fit(out: Path, epochs: int, resume: bool = False, **kw: object) -> list[dict]:
    xtr, ytr, xte, yte = digits()
    cfg = TrainConfig(epochs=epochs, lr=0.1, progress=False, device="cpu", **kw)
    loaders = BatchLoader(xtr, ytr, 64, shuffle=True), BatchLoader(xte, yte, 360, shuffle=False)
    Trainer(mlp(), *loaders, cfg).fit(out, resume=resume)
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _scalars(out: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(out / tb.LOG_DIR))
    acc.Reload()
    return {k: [(e.step, e.value) for e in acc.Scalars(k)] for k in acc.Tags()["scalars"]}


def test_every_metrics_column_is_a_scalar_per_epoch(tmp_path: Path) -> None:
    rows = _fit(tmp_path, 3)
    scalars = _scalars(tmp_path)
    for key in ("train_loss", "train_acc", "val_acc", "val_loss", "lr"):
        want = [(r["epoch"], r[key]) for r in rows]
        assert [s for s, _ in scalars[key]] == [1, 2, 3]
        assert [v for _, v in scalars[key]] == pytest.approx([v for _, v in want], rel=1e-6)


def test_resume_purges_events_after_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prunekit.train import trainer

    real = trainer.save_checkpoint

    def killed_at_epoch_3(directory: Path, epoch: int, state: dict) -> None:
        if epoch == 3:  # epoch 3 is logged, its checkpoint never written: a kill
            raise KeyboardInterrupt
        real(directory, epoch, state)

    monkeypatch.setattr(trainer, "save_checkpoint", killed_at_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path, 4)
    assert [s for s, _ in _scalars(tmp_path)["train_loss"]] == [1, 2, 3]
    monkeypatch.setattr(trainer, "save_checkpoint", real)
    rows = _fit(tmp_path, 4, resume=True)
    logged = _scalars(tmp_path)["train_loss"]
    assert [s for s, _ in logged] == [1, 2, 3, 4]  # epoch 3 once: the stale event is purged
    assert [v for _, v in logged] == pytest.approx([r["train_loss"] for r in rows], rel=1e-6)


def test_off_and_required(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fit(tmp_path / "off", 1, tensorboard=False)
    assert not (tmp_path / "off" / tb.LOG_DIR).exists()
    monkeypatch.setattr(tb, "tensorboard_available", lambda: False)
    _fit(tmp_path / "auto", 1)  # None: on only when installed
    assert not (tmp_path / "auto" / tb.LOG_DIR).exists()
    with pytest.raises(ConfigError, match=r"prunekit\[tensorboard\]"):
        _fit(tmp_path / "required", 1, tensorboard=True)
