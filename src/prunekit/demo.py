"""The ``prunekit demo`` workflow: train, prune, fine-tune and measure, on real embedded data.

Uses scikit-learn's handwritten digits (1797 real 8×8 scans shipped inside the package, so no
network is needed) and the small :class:`~prunekit.zoo.small.DigitsCNN`. Runs on a CPU in well
under two minutes.
"""

from __future__ import annotations

import copy
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit._fileio import atomic_dir, check_output_dir
from prunekit.data import TensorLoader, load_dataset, stratified_subset
from prunekit.device import threads_set
from prunekit.errors import ConfigError
from prunekit.importance import needs_data
from prunekit.io import save
from prunekit.pipeline import PruneConfig, prune
from prunekit.report import compare
from prunekit.train import TrainConfig, Trainer
from prunekit.train.evaluate import evaluate
from prunekit.train.seed import seed_everything
from prunekit.verify import max_rel_diff, soft_copy
from prunekit.zoo import build


@dataclass
class DemoResult:
    """Numbers printed by the demo."""

    acc_dense: float
    acc_pruned: float
    acc_finetuned: float
    params: tuple[int, int]
    macs: tuple[int, int]
    latency_ms: tuple[float, float] | None
    max_rel_diff: float
    seconds: float


@dataclass(frozen=True)
class DemoConfig:
    """Settings of :func:`run_demo`, checked before any training starts.

    Attributes:
        epochs: dense training epochs (>= 1).
        finetune_epochs: epochs after pruning (>= 0).
        prune: the pruning step (ratio, criterion...; any criterion, data ones get
            calibration batches from the training split).
        out: folder to save the pruned model in (optional; must not hold anything unless
            ``overwrite``).
        overwrite: replace an existing ``out``.
        seed: random seed (python, numpy, torch), set before the model and data are built.
        latency: time dense vs pruned (interleaved, median and IQR).
        limit_train: use this many training images (class-balanced), ``None`` for all.
        limit_test: the same for the test images.
    """

    epochs: int = 20
    finetune_epochs: int = 8
    prune: PruneConfig = field(default_factory=lambda: PruneConfig(ratio=0.5, criterion="l2"))
    out: str | Path | None = None
    overwrite: bool = False
    seed: int = 0
    latency: bool = False
    limit_train: int | None = None
    limit_test: int | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"demo epochs must be >= 1, got {self.epochs}")
        if self.finetune_epochs < 0:
            raise ConfigError(f"demo finetune epochs must be >= 0, got {self.finetune_epochs}")
        for name in ("limit_train", "limit_test"):
            n = getattr(self, name)
            if n is not None and n < 10:  # digits has 10 classes: at least one image of each
                raise ConfigError(f"demo {name} must be >= 10 (one image per class), got {n}")
        if self.out is not None:
            check_output_dir(self.out, what="demo output folder", reuse=self.overwrite)


def accuracy(model: nn.Module, loader: TensorLoader) -> float:
    """Top-1 accuracy of ``model`` on ``loader`` (the library's evaluator)."""
    return float(evaluate(model, loader, device="cpu")["acc"])


def train(
    model: nn.Module,
    loader: TensorLoader,
    epochs: int,
    lr: float,
    *,
    test: TensorLoader | None = None,
    seed: int = 0,
) -> None:
    """A short SGD + one-cycle run (enough for 8×8 digits), through the library's Trainer."""
    cfg = TrainConfig(epochs=epochs, lr=lr, nesterov=True, weight_decay=5e-4, seed=seed,
                      schedule="onecycle", eval_every=epochs, device="cpu", progress=False,
                      tensorboard=False)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="prunekit-demo-") as run:
        Trainer(model, loader, test, cfg).fit(run)


def run_demo(
    *,
    epochs: int = 20,
    finetune_epochs: int = 8,
    ratio: float = 0.5,
    criterion: str = "l2",
    out: str | Path | None = None,
    seed: int = 0,
    log: Any = print,
    config: DemoConfig | None = None,
) -> DemoResult:
    """Train the demo CNN on digits, prune ``ratio`` of its channels, fine-tune, measure.

    Every setting is checked before training starts (a wrong ratio costs no training time).

    Args:
        epochs: dense training epochs.
        finetune_epochs: epochs after pruning.
        ratio: fraction of channels removed per layer.
        criterion: importance criterion (any registered one).
        out: folder to save the pruned model in (optional).
        seed: random seed.
        log: where progress lines go.
        config: all settings at once (then the keyword settings above are ignored).

    Returns:
        A :class:`DemoResult`.

    Raises:
        ConfigError: a setting is invalid or ``out`` already holds something.

    Example:
        >>> r = run_demo(config=DemoConfig(epochs=5, prune=PruneConfig(ratio=0.3)))
    """
    t0 = time.perf_counter()
    cfg = config or DemoConfig(epochs=epochs, finetune_epochs=finetune_epochs, out=out,
                               prune=PruneConfig(ratio=ratio, criterion=criterion), seed=seed)  # fmt: skip
    seed_everything(cfg.seed)
    # An 8x8 CNN at batch 64 is too small to gain from intra-op threads; one thread also avoids
    # OpenMP spin-waiting on a busy machine.
    with threads_set(1):
        return _run(cfg, log, t0)


def _data(cfg: DemoConfig) -> tuple[TensorLoader, TensorLoader, int, int]:
    """Train/test loaders of digits (sliced as asked) and the numbers of images in each."""
    train_ds, test_ds = load_dataset("digits", "train"), load_dataset("digits", "test")
    if cfg.limit_train is not None and cfg.limit_train < len(train_ds):
        train_ds = stratified_subset(train_ds, cfg.limit_train // train_ds.num_classes, cfg.seed)
    if cfg.limit_test is not None and cfg.limit_test < len(test_ds):
        test_ds = stratified_subset(test_ds, cfg.limit_test // test_ds.num_classes, cfg.seed)
    train_dl = TensorLoader(train_ds, 64, shuffle=True, augment="none", seed=cfg.seed)
    test_dl = TensorLoader(test_ds, 512, mean=train_ds.mean, std=train_ds.std)
    return train_dl, test_dl, len(train_ds), len(test_ds)


def _run(cfg: DemoConfig, log: Any, t0: float) -> DemoResult:
    train_dl, test_dl, n_train, n_test = _data(cfg)
    model = build("digits_cnn")
    log(f"digits: {n_train} train / {n_test} test images (scikit-learn, real scans)")
    train(model, train_dl, cfg.epochs, lr=0.1, test=test_dl, seed=cfg.seed)
    acc_dense = accuracy(model, test_dl)
    log(f"dense   accuracy {acc_dense:.2%}")
    dense = copy.deepcopy(model).eval()
    x = torch.randn(1, 1, 8, 8)
    # data criteria (taylor, activation, apoz) score on a few real training batches
    data_criterion = needs_data(cfg.prune.criterion or "l2") is not None
    batches = [b for _, b in zip(range(4), train_dl)] if data_criterion else None
    result = prune(model.eval(), x, cfg.prune, batches=batches)
    diff = max_rel_diff(soft_copy(dense, result.plan), model, x)
    acc_pruned = accuracy(model, test_dl)
    log(
        f"pruned  accuracy {acc_pruned:.2%}  ({result.plan.removed_units()} channels removed, "
        f"soft-vs-pruned max rel diff {diff:.1e})"
    )
    if cfg.finetune_epochs:
        train(model, train_dl, cfg.finetune_epochs, lr=0.02, test=test_dl, seed=cfg.seed)
    acc_ft = accuracy(model, test_dl)
    log(f"fine-tuned accuracy {acc_ft:.2%}")
    rep = compare(dense, model.eval(), torch.randn(64, 1, 8, 8), latency=cfg.latency)
    rep.extra.update({"acc dense": f"{acc_dense:.2%}", "acc final": f"{acc_ft:.2%}"})
    log(rep.to_table(max_layers=12))
    if cfg.out is not None:
        with atomic_dir(cfg.out, replace=cfg.overwrite) as tmp:
            save(model, tmp, "zoo:digits_cnn", [result.plan])
            rep.plot(
                tmp / "report.png",
                title=f"prunekit demo: digits CNN, {cfg.prune.ratio:.0%} of channels pruned",
            )
        log(f"saved pruned model and report.png to {cfg.out}")
    b, a = rep.before, rep.after
    return DemoResult(
        acc_dense,
        acc_pruned,
        acc_ft,
        (b.params, a.params),
        (b.macs, a.macs),
        None if b.latency_ms is None or a.latency_ms is None else (b.latency_ms, a.latency_ms),
        diff,
        time.perf_counter() - t0,
    )
