"""CUDA paths: bf16 + channels_last defaults, whole-step CUDA-graph capture, reduce-overhead.
Skipped without a GPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from trainutil import BatchLoader, digits, small_cnn

from prunekit.train import BNL1Regularizer, TrainConfig, Trainer

pytestmark = pytest.mark.gpu


def _fit(out: Path, **cfg: Any) -> Trainer:
    xtr, ytr, xte, yte = digits()
    torch.manual_seed(0)
    trainer = Trainer(
        small_cnn(),
        BatchLoader(xtr, ytr, 64, True),  # 1437 % 64 != 0: the last batch is partial
        BatchLoader(xte, yte, 360, False),
        TrainConfig(**{"epochs": 6, "lr": 0.2, "schedule": "onecycle", "progress": False, **cfg}),
        regularizers=[BNL1Regularizer(1e-4)],
    )
    trainer.fit(out)
    return trainer


def test_cuda_defaults_bf16_channels_last(tmp_path: Path) -> None:
    t = _fit(tmp_path)
    assert t.device.type == "cuda" and t.bf16 and t.channels_last
    assert t.model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert t.evaluate()["acc"] > 0.9


def test_cuda_graphs_matches_eager(tmp_path: Path) -> None:
    eager = _fit(tmp_path / "eager", bf16=False, epochs=2)
    graphed = _fit(tmp_path / "graph", bf16=False, epochs=2, compile="cuda-graphs")
    a, b = eager.model.state_dict(), graphed.model.state_dict()
    for k in a:  # same math; only kernel choice/order differs
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-3, rtol=1e-3), k
    full = _fit(tmp_path / "graph-bf16", compile="cuda-graphs")
    assert full.evaluate()["acc"] > 0.9


class _Kill:
    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        if epoch == 1:
            raise KeyboardInterrupt


def test_cuda_graphs_resume(tmp_path: Path) -> None:
    def run(resume: bool, callbacks: tuple = ()) -> Trainer:
        xtr, ytr, xte, yte = digits()
        torch.manual_seed(0)
        t = Trainer(
            small_cnn(),
            BatchLoader(xtr, ytr, 64, True),
            BatchLoader(xte, yte, 360, False),
            TrainConfig(
                epochs=4, lr=0.2, schedule="onecycle", progress=False, compile="cuda-graphs"
            ),
            regularizers=[BNL1Regularizer(1e-4)],
            callbacks=callbacks,
        )
        t.fit(tmp_path, resume=resume)
        return t

    with pytest.raises(KeyboardInterrupt):
        run(False, (_Kill(),))
    t = run(True)  # momentum buffers restored from the checkpoint feed the captured step
    assert t.step == 4 * 23
    assert t.evaluate()["acc"] > 0.9


def test_reduce_overhead(tmp_path: Path) -> None:
    t = _fit(tmp_path, compile="reduce-overhead", epochs=4)
    assert t.evaluate()["acc"] > 0.85
