"""Trainer on real data (scikit-learn digits): accuracy, metrics JSONL, exact resume,
checkpoint validation, hooks, regularizers and distillation wiring."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from trainutil import BatchLoader, digits, mlp, small_cnn

from prunekit.errors import CheckpointError, ConfigError
from prunekit.train import (
    BNL1Regularizer,
    DistillationLoss,
    LRSchedule,
    TrainConfig,
    Trainer,
    bn_scales,
    evaluate,
)

ROW_KEYS = {"epoch", "lr", "train_loss", "train_acc", "val_acc", "val_loss", "img_per_s", "seconds"}


def _loaders(batch: int = 32) -> tuple[BatchLoader, BatchLoader]:
    xtr, ytr, xte, yte = digits()
    return BatchLoader(xtr, ytr, batch, shuffle=True), BatchLoader(xte, yte, 360, shuffle=False)


def _cfg(**kw: Any) -> TrainConfig:
    base = {"epochs": 3, "lr": 0.1, "schedule": "onecycle", "device": "cpu", "progress": False}
    return TrainConfig(**{**base, **kw})


def test_digits_reach_90_percent_and_metrics_jsonl(tmp_path: Path) -> None:
    train, test = _loaders()
    torch.manual_seed(0)
    start = time.perf_counter()
    result = Trainer(small_cnn(), train, test, _cfg(epochs=5, lr=0.2)).fit(tmp_path)
    elapsed = time.perf_counter() - start
    acc = evaluate(result.model, test)
    assert acc["acc"] > 0.90, acc
    assert 0.98 < acc["top5"] <= 1.0 and acc["n"] == 360
    assert elapsed < 30
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]
    assert all(set(r) >= ROW_KEYS for r in rows)
    assert rows == result.history
    assert rows[-1]["val_acc"] == pytest.approx(acc["acc"])
    assert rows[-1]["val_loss"] == pytest.approx(acc["loss"], rel=1e-5)
    assert rows[-1]["train_acc"] > rows[0]["train_acc"]
    sched = LRSchedule("onecycle", 0.2, 5, len(train))
    assert [r["lr"] for r in rows] == pytest.approx(
        [sched.lr(len(train) * e - 1) for e in range(1, 6)]
    )
    assert all(r["img_per_s"] > 0 and r["seconds"] > 0 for r in rows)
    assert train.epochs_seen == [0, 1, 2, 3, 4]
    assert result.best_val_acc == max(r["val_acc"] for r in rows)


class _Kill:
    """Simulates the process dying at the start of an epoch (after the previous checkpoint)."""

    def __init__(self, at_epoch: int) -> None:
        self.at_epoch = at_epoch

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        if epoch == self.at_epoch:
            raise KeyboardInterrupt


def _resume_run(tmp_path: Path, make_loader, **cfg: Any) -> None:
    def run(out: Path, resume: bool, callbacks=()) -> Trainer:
        torch.manual_seed(123)  # identical fresh model every time
        xte, yte = digits()[2:]
        trainer = Trainer(
            small_cnn(dropout=0.3),
            make_loader(),
            BatchLoader(xte, yte, 360, False),
            _cfg(schedule="step", **cfg),
            regularizers=[BNL1Regularizer(1e-3)],
            callbacks=callbacks,
        )
        trainer.fit(out, resume=resume)
        return trainer

    straight = run(tmp_path / "a", resume=False)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", resume=False, callbacks=[_Kill(at_epoch=2)])
    assert json.loads((tmp_path / "b/checkpoint/epoch-0002/state.json").read_text())["meta"]
    resumed = run(tmp_path / "b", resume=True)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "resume must be bit-identical"
    sa, sb = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i])
    rows_a = [json.loads(x) for x in (tmp_path / "a/metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(x) for x in (tmp_path / "b/metrics.jsonl").read_text().splitlines()]
    drop = ("seconds", "img_per_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows_a] == [
        {k: v for k, v in r.items() if k not in drop} for r in rows_b
    ]


def test_resume_is_bit_identical_with_set_epoch_loader(tmp_path: Path) -> None:
    xtr, ytr = digits()[:2]
    _resume_run(tmp_path, lambda: BatchLoader(xtr[:640], ytr[:640], 64, True))


def test_resume_is_bit_identical_with_torch_dataloader(tmp_path: Path) -> None:
    xtr, ytr = digits()[:2]
    ds = torch.utils.data.TensorDataset(xtr[:640], ytr[:640])

    def make() -> torch.utils.data.DataLoader:  # generator state is checkpointed
        return torch.utils.data.DataLoader(
            ds, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(5)
        )

    _resume_run(tmp_path, make, optimizer="adamw", lr=0.01, max_grad_norm=1.0)


def test_resume_is_bit_identical_with_prunekit_tensor_loader(tmp_path: Path) -> None:
    data = pytest.importorskip("prunekit.data")
    xtr, ytr = digits()[:2]
    images = (xtr[:640] * 255).to(torch.uint8)

    def make() -> Any:  # shuffle + random crop/flip drawn from (seed, epoch)
        return data.TensorLoader(
            (images, ytr[:640]), 64, shuffle=True, augment={"crop_padding": 1}, seed=3,
            mean=[0.5], std=[0.5],
        )  # fmt: skip

    _resume_run(tmp_path, make)


def _trained(tmp_path: Path, **cfg: Any) -> Path:
    xtr, ytr = digits()[:2]
    Trainer(mlp(), BatchLoader(xtr[:256], ytr[:256], 64, True), None, _cfg(epochs=2, **cfg)).fit(
        tmp_path
    )
    return tmp_path


def test_corrupt_checkpoint_on_resume(tmp_path: Path) -> None:
    out = _trained(tmp_path)
    f = out / "checkpoint/epoch-0002/tensors.safetensors"
    f.write_bytes(f.read_bytes()[:-7])
    xtr, ytr = digits()[:2]
    trainer = Trainer(mlp(), BatchLoader(xtr[:256], ytr[:256], 64, True), None, _cfg(epochs=3))
    with pytest.raises(CheckpointError, match=r"epoch-0002.*corrupt.*delete"):
        trainer.fit(out, resume=True)


@pytest.mark.parametrize(
    ("model", "cfg", "n", "match"),
    [
        (lambda: mlp(hidden=32), {"epochs": 2}, 256, "does not fit"),
        (mlp, {"epochs": 5}, 256, "different settings .*epochs"),
        (mlp, {"epochs": 2}, 128, "batches per epoch"),
    ],
)
def test_mismatched_checkpoint(tmp_path: Path, model, cfg: dict, n: int, match: str) -> None:
    out = _trained(tmp_path)
    xtr, ytr = digits()[:2]
    trainer = Trainer(model(), BatchLoader(xtr[:n], ytr[:n], 64, True), None, _cfg(**cfg))
    with pytest.raises(CheckpointError, match=match) as err:
        trainer.fit(out, resume=True)
    assert "resume=False" in str(err.value) and "--overwrite" in str(err.value)


def test_fresh_run_discards_old_checkpoint_and_resume_of_finished_run(tmp_path: Path) -> None:
    out = _trained(tmp_path)
    xtr, ytr = digits()[:2]
    loader = BatchLoader(xtr[:256], ytr[:256], 64, True)
    done = Trainer(mlp(), loader, None, _cfg(epochs=2)).fit(out, resume=True)
    assert done.start_epoch == 2 and len(done.history) == 2  # nothing left to do
    (out / "checkpoint" / "epoch-0009").mkdir()  # stale state of an older run
    Trainer(mlp(), loader, None, _cfg(epochs=1)).fit(out, resume=False)
    assert [p.name for p in (out / "checkpoint").iterdir()] == ["epoch-0001"]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


class _Counter:
    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def _bump(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def after_backward(self, model: nn.Module) -> None:
        self._bump("after_backward")
        assert all(p.grad is not None for p in model.parameters())

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        self._bump("on_epoch_start")

    def on_step_end(self, trainer: Trainer, step: int) -> None:
        self._bump("on_step_end")

    def on_epoch_end(self, trainer: Trainer, epoch: int, row: dict) -> None:
        self._bump("on_epoch_end")

    def on_train_end(self, trainer: Trainer, result: Any) -> None:
        self._bump("on_train_end")


def test_hooks_and_regularizers_are_called(tmp_path: Path) -> None:
    xtr, ytr = digits()[:2]
    loader = BatchLoader(xtr[:256], ytr[:256], 64, True)
    c = _Counter()
    Trainer(mlp(), loader, None, _cfg(epochs=2), regularizers=[c], callbacks=[c]).fit(tmp_path)
    assert c.calls == {
        "after_backward": 8,
        "on_step_end": 8,
        "on_epoch_start": 2,
        "on_epoch_end": 2,
        "on_train_end": 1,
    }


class _StepCount:
    """A stateful callback: counts optimizer steps; its count survives a resume."""

    def __init__(self, refuse: bool = False) -> None:
        self.steps, self.refuse = 0, refuse

    def on_step_end(self, trainer: Trainer, step: int) -> None:
        self.steps += 1

    def state_dict(self) -> dict:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        if self.refuse:
            raise CheckpointError("not my checkpoint")
        self.steps = state["steps"]


class _Table:
    """An external LR schedule: a different LR in every iteration."""

    def __init__(self, n: int) -> None:
        self.total_steps = n

    def lr(self, step: int) -> float:
        return 0.01 * (step + 1)


def test_callback_state_is_checkpointed_and_external_lr_is_used(tmp_path: Path) -> None:
    xtr, ytr = digits()[:2]
    loader = BatchLoader(xtr[:256], ytr[:256], 64, True)  # 4 batches
    counter = _StepCount()
    first = Trainer(
        mlp(), loader, None, _cfg(epochs=2), callbacks=[counter], lr_schedule=_Table(12)
    )
    history = first.fit(tmp_path).history
    assert [r["lr"] for r in history] == pytest.approx([0.04, 0.08])  # last batch of each epoch
    longer = _StepCount()
    resumed = Trainer(
        mlp(), loader, None, _cfg(epochs=3), callbacks=[longer], lr_schedule=_Table(12)
    )
    with pytest.raises(CheckpointError, match="different settings"):
        resumed.fit(tmp_path, resume=True)  # epochs changed
    assert longer.steps == 8  # restored before the settings were compared
    again = Trainer(mlp(), loader, None, _cfg(epochs=2), callbacks=[_StepCount(refuse=True)])
    with pytest.raises(CheckpointError, match="not my checkpoint"):
        again.fit(tmp_path, resume=True)
    with pytest.raises(ConfigError, match="covers 5 iterations"):
        Trainer(mlp(), loader, None, _cfg(epochs=2), lr_schedule=_Table(5)).fit(tmp_path)
    bare = Trainer(mlp(), loader, None, _cfg(epochs=2))
    with pytest.raises(CheckpointError, match="state of 1 callback"):
        bare.fit(tmp_path, resume=True)


def test_bn_l1_training_shrinks_gammas(tmp_path: Path) -> None:
    xtr, ytr = digits()[:2]
    train = BatchLoader(xtr, ytr, 64, True)
    mean_abs = {}
    for s in (0.0, 3e-2):
        torch.manual_seed(0)
        cfg = _cfg(epochs=2, weight_decay=0.0)
        result = Trainer(small_cnn(), train, None, cfg, regularizers=[BNL1Regularizer(s)]).fit(
            tmp_path / str(s)
        )
        mean_abs[s] = float(torch.cat(list(bn_scales(result.model).values())).abs().mean())
    # 46 steps of the extra push s·sign(γ) pull every γ towards 0 (they start at 1).
    assert mean_abs[3e-2] < 0.7 * mean_abs[0.0], mean_abs


def test_distillation_is_used(tmp_path: Path) -> None:
    train, test = _loaders()
    torch.manual_seed(0)
    teacher = Trainer(small_cnn(), train, None, _cfg(epochs=4, lr=0.2)).fit(tmp_path / "t").model
    calls = []
    teacher.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    kd = DistillationLoss(teacher, temperature=4.0, alpha=0.9)
    student = Trainer(mlp(), train, test, _cfg(epochs=3), distillation=kd).fit(tmp_path / "s")
    assert sum(calls) == 3 * 1437  # one teacher forward per training sample per epoch
    assert not teacher.training
    assert student.final["val_acc"] > 0.9


def test_evaluate_counts() -> None:
    x = torch.eye(10).repeat(3, 1)  # 30 samples; logits = one-hot of the true class
    y = torch.arange(10).repeat(3)
    y_wrong = (y + 1) % 10
    loader = [(x[:16], y[:16]), (x[16:], y[16:])]
    res = evaluate(nn.Identity(), loader)
    assert res["acc"] == 1.0 and res["top5"] == 1.0 and res["n"] == 30
    second = x * 2 + torch.roll(torch.eye(10), 1, dims=1).repeat(3, 1)  # true class ranks 2nd
    res = evaluate(nn.Identity(), [(second, y_wrong)])
    assert res["acc"] == 0.0 and res["top5"] == 1.0
    three = evaluate(nn.Identity(), [(torch.eye(3), torch.tensor([0, 2, 2]))])
    assert three["acc"] == pytest.approx(2 / 3) and "top5" not in three


def test_config_errors() -> None:
    xtr, ytr = digits()[:2]
    loader = BatchLoader(xtr[:64], ytr[:64], 64, True)
    with pytest.raises(ConfigError, match="needs CUDA"):
        Trainer(mlp(), loader, None, _cfg(compile="cuda-graphs"))
    with pytest.raises(ConfigError, match="__len__"):
        Trainer(mlp(), iter([]), None, _cfg())
    with pytest.raises(ConfigError, match="no loader"):
        Trainer(mlp(), loader, None, _cfg()).evaluate()
