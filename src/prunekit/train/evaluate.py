"""Model evaluation: top-1 (and top-5) accuracy and mean loss over a loader."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from prunekit.train.distributed import DistInfo, all_reduce_sum, shard

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _sum_loss(loss_fn: LossFn | None, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if loss_fn is None:
        return F.cross_entropy(logits.float(), y, reduction="sum")
    # A user loss is assumed to be a batch mean (PyTorch's default reduction).
    return loss_fn(logits.float(), y) * y.shape[0]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    device: str | torch.device | None = None,
    loss_fn: LossFn | None = None,
    bf16: bool = False,
    channels_last: bool = False,
    dist_info: DistInfo | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Top-1 accuracy, mean loss and (with ≥ 10 classes) top-5 accuracy of ``model``.

    Args:
        model: the model; put in eval mode for the call, its mode is restored afterwards.
        loader: re-iterable of ``(inputs, targets)`` batches (targets are class indices).
        device: where to run; ``None`` → the device of the model's first parameter.
        loss_fn: ``fn(logits, targets)`` returning a batch mean; default cross-entropy.
        bf16: run under bfloat16 autocast.
        channels_last: convert 4-D inputs to NHWC.
        dist_info: when distributed, each rank evaluates its slice and results are summed.
        progress: show a progress bar (only on a TTY).

    Returns:
        ``{"acc": float, "loss": float, "n": int}`` plus ``"top5"`` when there are ≥ 10 classes;
        accuracies are fractions in [0, 1].

    Example:
        >>> evaluate(model, test_loader)["acc"]
        0.97
    """
    info = dist_info or DistInfo()
    dev = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=dev)  # loss, top1, top5, n
    has_top5 = False
    show = progress and info.is_main and sys.stderr.isatty()
    try:
        for x, y in tqdm(loader, desc="eval", leave=False, disable=not show):
            x, y = shard(x, info).to(dev, non_blocking=True), shard(y, info).to(dev)
            if channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(x)
            has_top5 = logits.shape[1] >= 10
            sums += _batch_sums(logits, y, loss_fn, k=5 if has_top5 else 1).to(sums)
    finally:
        model.train(was_training)
    loss, top1, top5, total = all_reduce_sum(sums, info).tolist()
    n = max(total, 1.0)  # an empty loader reports zeros instead of dividing by zero
    out = {"acc": top1 / n, "loss": loss / n, "n": int(total)}
    if has_top5:
        out["top5"] = top5 / n
    return out


def _batch_sums(
    logits: torch.Tensor, y: torch.Tensor, loss_fn: LossFn | None, k: int
) -> torch.Tensor:
    """[summed loss, top-1 hits, top-k hits, count] of one batch, on the logits' device."""
    hits = logits.topk(k, dim=1).indices == y.unsqueeze(1)
    count = torch.full((), y.shape[0], dtype=torch.float64, device=logits.device)
    return torch.stack(
        [_sum_loss(loss_fn, logits, y).double(), hits[:, 0].sum(), hits.any(1).sum(), count]
    )


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")
