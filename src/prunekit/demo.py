"""The ``prunekit demo`` workflow: train, prune, fine-tune and measure, on real embedded data.

Uses scikit-learn's handwritten digits (1797 real 8×8 scans shipped inside the package, so no
network is needed) and the small :class:`~prunekit.zoo.small.DigitsCNN`. Runs on a CPU in well
under two minutes.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.data import TensorLoader, load_dataset
from prunekit.io import save
from prunekit.pipeline import PruneConfig, prune
from prunekit.report import compare
from prunekit.train.evaluate import evaluate
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
    latency_ms: tuple[float, float]
    max_rel_diff: float
    seconds: float


def accuracy(model: nn.Module, loader: TensorLoader) -> float:
    """Top-1 accuracy of ``model`` on ``loader`` (the library's evaluator)."""
    return float(evaluate(model, loader, device="cpu")["acc"])


def train(model: nn.Module, loader: TensorLoader, epochs: int, lr: float) -> None:
    """A short SGD + one-cycle run (enough for 8×8 digits)."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * len(loader))
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
            sched.step()


def run_demo(
    *,
    epochs: int = 20,
    finetune_epochs: int = 8,
    ratio: float = 0.5,
    criterion: str = "l2",
    out: str | Path | None = None,
    seed: int = 0,
    log: Any = print,
) -> DemoResult:
    """Train the demo CNN on digits, prune ``ratio`` of its channels, fine-tune, measure.

    Args:
        epochs: dense training epochs.
        finetune_epochs: epochs after pruning.
        ratio: fraction of channels removed per layer.
        criterion: importance criterion.
        out: folder to save the pruned model in (optional).
        seed: random seed.
        log: where progress lines go.

    Returns:
        A :class:`DemoResult`.
    """
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    # An 8x8 CNN at batch 64 is too small to gain from intra-op threads; one thread also avoids
    # OpenMP spin-waiting on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(epochs, finetune_epochs, ratio, criterion, out, seed, log, t0)
    finally:
        torch.set_num_threads(threads)


def _run(
    epochs: int,
    finetune_epochs: int,
    ratio: float,
    criterion: str,
    out: str | Path | None,
    seed: int,
    log: Any,
    t0: float,
) -> DemoResult:
    train_ds, test_ds = load_dataset("digits", "train"), load_dataset("digits", "test")
    train_dl = TensorLoader(train_ds, 64, shuffle=True, augment="none", seed=seed)
    test_dl = TensorLoader(test_ds, 512, mean=train_ds.mean, std=train_ds.std)
    model = build("digits_cnn")
    log(f"digits: {len(train_ds)} train / {len(test_ds)} test images (scikit-learn, real scans)")
    train(model, train_dl, epochs, lr=0.1)
    acc_dense = accuracy(model, test_dl)
    log(f"dense   accuracy {acc_dense:.2%}")
    dense = copy.deepcopy(model).eval()
    x = torch.randn(1, 1, 8, 8)
    result = prune(model.eval(), x, PruneConfig(ratio=ratio, criterion=criterion))
    diff = max_rel_diff(soft_copy(dense, result.plan), model, x)
    acc_pruned = accuracy(model, test_dl)
    log(
        f"pruned  accuracy {acc_pruned:.2%}  ({result.plan.removed_units()} channels removed, "
        f"soft-vs-pruned max rel diff {diff:.1e})"
    )
    train(model, train_dl, finetune_epochs, lr=0.02)
    acc_ft = accuracy(model, test_dl)
    log(f"fine-tuned accuracy {acc_ft:.2%}")
    rep = compare(dense, model.eval(), torch.randn(64, 1, 8, 8))
    rep.extra.update({"acc dense": f"{acc_dense:.2%}", "acc final": f"{acc_ft:.2%}"})
    log(rep.to_table(max_layers=12))
    if out is not None:
        save(model, out, "zoo:digits_cnn", [result.plan])
        rep.plot(
            Path(out) / "report.png",
            title=f"prunekit demo: digits CNN, {ratio:.0%} of channels pruned",
        )
        log(f"saved pruned model and report.png to {out}")
    b, a = rep.before, rep.after
    return DemoResult(
        acc_dense,
        acc_pruned,
        acc_ft,
        (b.params, a.params),
        (b.macs, a.macs),
        (b.latency_ms or 0.0, a.latency_ms or 0.0),
        diff,
        time.perf_counter() - t0,
    )
