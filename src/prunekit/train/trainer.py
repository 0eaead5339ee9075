"""The training loop: SGD/AdamW, per-iteration LR schedule, regularizers, distillation,
bf16/channels_last/CUDA graphs on GPU, DDP under ``torchrun``, JSONL metrics and atomic,
pickle-free checkpoints with bit-exact resume.

Example:
    >>> cfg = TrainConfig(epochs=160, lr=0.1, schedule="step")
    >>> trainer = Trainer(model, train_loader, test_loader, cfg,
    ...                   regularizers=[BNL1Regularizer(1e-4)])
    >>> result = trainer.fit("runs/vgg19-sparse", resume=True)
    >>> result.final["val_acc"]
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from prunekit._fileio import atomic_write_text
from prunekit.device import resolve_device
from prunekit.errors import CheckpointError, ConfigError
from prunekit.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from prunekit.train.config import TrainConfig
from prunekit.train.cuda_graphs import GraphedSGDStep
from prunekit.train.distill import DistillationLoss
from prunekit.train.distributed import (
    all_reduce_sum,
    setup_distributed,
    shard,
)
from prunekit.train.evaluate import evaluate
from prunekit.train.lr_schedule import LRSchedule
from prunekit.train.regularizers import Regularizer
from prunekit.train.seed import get_rng_state, seed_everything, set_rng_state
from prunekit.train.tensorboard import open_tensorboard

StepFn = Callable[[torch.Tensor, torch.Tensor, float], tuple[torch.Tensor, torch.Tensor]]
LOG = logging.getLogger(__name__)
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoint"


@dataclass
class TrainResult:
    """Outcome of :meth:`Trainer.fit`.

    Attributes:
        model: the trained model (unwrapped from DDP/compile), on the training device.
        history: one metrics row per completed epoch (the rows of ``metrics.jsonl``).
        out_dir: the run folder.
        start_epoch: epochs already done when ``fit`` started (> 0 after a resume).
    """

    model: nn.Module
    history: list[dict[str, Any]] = field(default_factory=list)
    out_dir: Path = Path(".")
    start_epoch: int = 0

    @property
    def final(self) -> dict[str, Any]:
        """Metrics of the last epoch (empty when no epoch ran)."""
        return self.history[-1] if self.history else {}

    @property
    def best_val_acc(self) -> float | None:
        """Best validation top-1 over the run, ``None`` when never evaluated."""
        accs = [r["val_acc"] for r in self.history if r.get("val_acc") is not None]
        return max(accs) if accs else None


def _format_row(row: dict[str, Any], epochs: int) -> str:
    text = (
        f"epoch {row['epoch']}/{epochs} lr {row['lr']:.4g} train loss {row['train_loss']:.4f} "
        f"acc {row['train_acc']:.4f}"
    )
    if row.get("val_acc") is not None:
        text += f" | val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}"
    return text + f" | {row['img_per_s']:.0f} img/s {row['seconds']:.1f}s"


class LRFunction(Protocol):
    """What the trainer needs of a learning-rate schedule (e.g. :class:`LRSchedule`)."""

    total_steps: int

    def lr(self, step: int) -> float:
        """Learning rate at iteration ``step`` (0-based)."""
        ...


def _call(callbacks: Sequence[Any], hook: str, *args: Any) -> None:
    # Callbacks are duck-typed: any object with some of on_epoch_start(trainer, epoch),
    # on_step_end(trainer, step), on_epoch_end(trainer, epoch, row), on_train_end(trainer, result);
    # with state_dict() / load_state_dict(state), their state is checkpointed with the run's.
    for cb in callbacks:
        fn = getattr(cb, hook, None)
        if fn is not None:
            fn(*args)


class Trainer:
    """Train a classifier on ``(inputs, targets)`` batches.

    Args:
        model: the network (moved to the training device).
        train_loader: re-iterable of batches with ``__len__``; ``set_epoch(e)`` is called when
            present (e.g. ``prunekit.data.TensorLoader`` or a torch ``DataLoader``).
        val_loader: optional loader evaluated every ``config.eval_every`` epochs.
        config: a :class:`TrainConfig` or a mapping of its fields; ``None`` → defaults.
        loss_fn: ``fn(logits, targets)``; default cross-entropy with label smoothing.
        regularizers: objects with ``after_backward(model)`` (e.g. :class:`BNL1Regularizer`).
        distillation: a :class:`DistillationLoss`; replaces ``loss_fn`` for training.
        callbacks: objects with optional ``on_epoch_start``/``on_step_end``/``on_epoch_end``/
            ``on_train_end`` hooks; those with ``state_dict()``/``load_state_dict(state)`` are
            saved in every checkpoint and restored on resume (before anything else, so a
            callback can refuse a checkpoint with a :class:`CheckpointError` of its own).
        lr_schedule: learning rate per iteration, replacing ``config.schedule``/``lr``/
            ``warmup`` (e.g. a recipe's table); must cover ``epochs × len(train_loader)``.

    Example:
        >>> Trainer(model, train, test, {"epochs": 30, "lr": 0.05}).fit("runs/x").final
    """

    def __init__(
        self,
        model: nn.Module,
        train_loader: Iterable[Any],
        val_loader: Iterable[Any] | None = None,
        config: TrainConfig | dict[str, Any] | None = None,
        *,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        regularizers: Sequence[Regularizer] = (),
        distillation: DistillationLoss | None = None,
        callbacks: Sequence[Any] = (),
        lr_schedule: LRFunction | None = None,
    ) -> None:
        self.config = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
        if not hasattr(train_loader, "__len__"):
            raise ConfigError("train_loader must have __len__ (number of batches per epoch)")
        self.dist = setup_distributed(self._wants_cuda())
        self.device = resolve_device(self.config.device, local_rank=self.dist.rank_device())
        cuda = self.device.type == "cuda"
        self.bf16 = cuda if self.config.bf16 is None else self.config.bf16
        has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
        cl = self.config.channels_last
        self.channels_last = (cuda and has_conv) if cl is None else cl
        self.model = self._place(model)
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.loss_fn = loss_fn or nn.CrossEntropyLoss(label_smoothing=self.config.label_smoothing)
        self.regularizers = list(regularizers)
        self.distillation = distillation
        if distillation is not None:
            self._place(distillation.teacher)
        self.callbacks = list(callbacks)
        self.lr_schedule = lr_schedule
        self.optimizer = self._make_optimizer()
        self.step = 0
        self._check_compile_mode()

    def _wants_cuda(self) -> bool:
        name = self.config.device
        return torch.cuda.is_available() if name is None else name.startswith("cuda")

    def _place(self, module: nn.Module) -> nn.Module:
        module.to(self.device)
        if self.channels_last:
            module.to(memory_format=torch.channels_last)
        return module

    def _make_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ConfigError("the model has no trainable parameters")
        if c.optimizer == "adamw":
            return torch.optim.AdamW(
                params, lr=c.lr, betas=(c.momentum, 0.999), weight_decay=c.weight_decay
            )
        return torch.optim.SGD(
            params, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov, weight_decay=c.weight_decay
        )

    def _check_compile_mode(self) -> None:
        mode = self.config.compile
        if mode == "none":
            return
        if self.device.type != "cuda":
            raise ConfigError(f"compile={mode!r} needs CUDA; use compile='none' on {self.device}")
        if mode == "cuda-graphs" and self.dist.enabled:
            raise ConfigError("compile='cuda-graphs' is single-process; use 'reduce-overhead'")
        if mode == "cuda-graphs" and self.config.optimizer != "sgd":
            raise ConfigError("compile='cuda-graphs' supports optimizer='sgd' only")

    # ------------------------------------------------------------------ evaluation
    def evaluate(
        self, model: nn.Module | None = None, loader: Iterable[Any] | None = None
    ) -> dict[str, float]:
        """Evaluate ``model`` (default: the trained one) on ``loader`` (default: ``val_loader``).

        Returns:
            ``{"acc", "loss", "n"}`` plus ``"top5"`` with ≥ 10 classes (see :func:`evaluate`).
        """
        loader = loader if loader is not None else self.val_loader
        if loader is None:
            raise ConfigError("no loader to evaluate on; pass one or give the Trainer val_loader")
        return evaluate(
            model if model is not None else self.model,
            loader,
            device=self.device,
            bf16=self.bf16,
            channels_last=self.channels_last,
            dist_info=self.dist,
        )

    # ------------------------------------------------------------------ one step
    def _compute(
        self, net: nn.Module, x: torch.Tensor, y: torch.Tensor, cache: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, loss, backward, regularizers and clipping; returns (loss, logits)."""
        with torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.bf16, cache_enabled=cache
        ):
            logits = net(x)
            if self.distillation is not None:
                loss = self.distillation(logits, y, inputs=x)
            else:
                loss = self.loss_fn(logits, y)
        loss.backward()
        for reg in self.regularizers:
            reg.after_backward(self.model)
        if self.config.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
        return loss, logits

    def _build_step(self) -> StepFn:
        net: nn.Module = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            net = DDP(self.model, device_ids=ids)
        if self.config.compile == "cuda-graphs":
            return GraphedSGDStep(
                lambda x, y: self._compute(net, x, y, cache=False), self.optimizer
            )
        if self.config.compile == "reduce-overhead":
            net = torch.compile(net, mode="reduce-overhead")  # type: ignore[assignment]

        def eager(x: torch.Tensor, y: torch.Tensor, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
            if self.config.compile == "reduce-overhead":
                torch.compiler.cudagraph_mark_step_begin()
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.zero_grad(set_to_none=True)
            loss, logits = self._compute(net, x, y)
            self.optimizer.step()
            return loss.detach(), (logits.detach().argmax(1) == y).sum()

        return eager

    # ------------------------------------------------------------------ one epoch
    def _prepare(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = shard(x, self.dist).to(self.device, non_blocking=True)
        y = shard(y, self.dist).to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def _show_progress(self) -> bool:
        return self.config.progress and self.dist.is_main and sys.stderr.isatty()

    def _train_epoch(self, epoch: int, sched: LRFunction, step_fn: StepFn) -> dict[str, Any]:
        loader = self.train_loader
        if callable(getattr(loader, "set_epoch", None)):
            loader.set_epoch(epoch)  # type: ignore[attr-defined]
        self.model.train()
        # Running sums stay on the device (no host sync per step); the count is host-side.
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss·n, correct, n
        count = 0
        lr = sched.lr(min(self.step, sched.total_steps - 1))
        bar = tqdm(
            total=len(loader),  # type: ignore[arg-type]
            desc=f"epoch {epoch + 1}/{self.config.num_epochs}",
            leave=False,
            disable=not self._show_progress(),
        )
        start = time.perf_counter()
        with bar:
            for i, (xb, yb) in enumerate(loader):
                x, y = self._prepare(xb, yb)
                lr = sched.lr(min(self.step, sched.total_steps - 1))
                loss, correct = step_fn(x, y, lr)
                n = y.shape[0]
                count += n
                sums[:2] += torch.stack([loss.double() * n, correct.double()])
                self.step += 1
                _call(self.callbacks, "on_step_end", self, self.step)
                bar.update()
                if i % self.config.log_every == 0 and bar.disable is False:
                    bar.set_postfix(loss=f"{float(loss):.4f}", lr=f"{lr:.4g}")
        sums[2] = count
        loss_sum, correct_sum, total = all_reduce_sum(sums, self.dist).tolist()
        seconds = time.perf_counter() - start
        count = max(total, 1.0)
        return {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": loss_sum / count,
            "train_acc": correct_sum / count,
            "img_per_s": count / max(seconds, 1e-9),
        }

    def _epoch(self, epoch: int, sched: LRFunction, step_fn: StepFn) -> dict[str, Any]:
        """One epoch with its callbacks around it."""
        _call(self.callbacks, "on_epoch_start", self, epoch)
        row = self._run_epoch(epoch, sched, step_fn)
        _call(self.callbacks, "on_epoch_end", self, epoch, row)
        return row

    def _run_epoch(self, epoch: int, sched: LRFunction, step_fn: StepFn) -> dict[str, Any]:
        start = time.perf_counter()
        row = self._train_epoch(epoch, sched, step_fn)
        last = epoch + 1 == self.config.num_epochs
        row.update(val_acc=None, val_loss=None)
        if self.val_loader is not None and (last or (epoch + 1) % self.config.eval_every == 0):
            res = self.evaluate()
            row.update(val_acc=res["acc"], val_loss=res["loss"])
            if "top5" in res:
                row["val_top5"] = res["top5"]
        row["seconds"] = time.perf_counter() - start
        row["step"] = self.step
        return row

    # ------------------------------------------------------------------ checkpoints
    def _stateful_callbacks(self) -> list[Any]:
        return [cb for cb in self.callbacks if callable(getattr(cb, "state_dict", None))]

    def _state(self, epoch: int, history: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "callbacks": [cb.state_dict() for cb in self._stateful_callbacks()],
            "epoch": epoch,
            "step": self.step,
            "steps_per_epoch": len(self.train_loader),  # type: ignore[arg-type]
            "config": self.config.to_dict(),
            "history": history,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": get_rng_state(self.train_loader),
        }

    def _restore(self, ckpt_dir: Path) -> tuple[int, list[dict[str, Any]]]:
        state = load_checkpoint(ckpt_dir)
        where = latest_checkpoint(ckpt_dir)
        fix = f"delete {ckpt_dir} or start a fresh run (resume=False; CLI: --overwrite)"
        try:
            stateful, saved_cbs = self._stateful_callbacks(), state.get("callbacks", [])
            if len(saved_cbs) != len(stateful):
                raise CheckpointError(
                    f"checkpoint {where} holds the state of {len(saved_cbs)} callback(s), this "
                    f"run has {len(stateful)}; {fix}"
                )
            for cb, cb_state in zip(stateful, saved_cbs):
                cb.load_state_dict(cb_state)
            saved = TrainConfig.from_dict(state["config"])
            diff = saved.differences(self.config)
            if diff:
                raise CheckpointError(
                    f"checkpoint {where} was made with different settings ({', '.join(diff)}); "
                    f"use the same settings or {fix}"
                )
            if state["steps_per_epoch"] != len(self.train_loader):  # type: ignore[arg-type]
                raise CheckpointError(
                    f"checkpoint {where} had {state['steps_per_epoch']} batches per epoch, the "
                    f"loader now has {len(self.train_loader)}; {fix}"  # type: ignore[arg-type]
                )
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            set_rng_state(state["rng"], self.train_loader)
            self.step = int(state["step"])
            return int(state["epoch"]), list(state["history"])
        except CheckpointError:
            raise
        except Exception as exc:  # missing keys, shape mismatch, bad RNG state, ...
            raise CheckpointError(
                f"checkpoint {where} does not fit this run ({exc}); {fix}"
            ) from None

    # ------------------------------------------------------------------ the loop
    def fit(self, out_dir: str | Path, resume: bool = False) -> TrainResult:
        """Train for ``config.epochs`` epochs, checkpointing each one into ``out_dir``.

        Args:
            out_dir: run folder; gets ``metrics.jsonl`` and ``checkpoint/``.
            resume: continue from the last complete checkpoint in ``out_dir`` if there is one
                (on CPU the result is bit-identical to an uninterrupted run).

        Returns:
            A :class:`TrainResult`.

        Raises:
            CheckpointError: ``resume`` and the checkpoint is corrupt or does not match.
        """
        out = Path(out_dir)
        ckpt_dir = out / CHECKPOINT_DIR
        steps = len(self.train_loader)  # type: ignore[arg-type]
        sched = self.lr_schedule or LRSchedule.from_config(self.config, steps)
        if sched.total_steps < self.config.num_epochs * steps:
            raise ConfigError(
                f"lr_schedule covers {sched.total_steps} iterations, the run has "
                f"{self.config.num_epochs} epochs × {steps} batches"
            )
        start, history = 0, list[dict[str, Any]]()
        if resume and latest_checkpoint(ckpt_dir) is not None:
            start, history = self._restore(ckpt_dir)
            if self.dist.is_main:
                LOG.info("resuming %s after epoch %d of %d", out, start, self.config.num_epochs)
        else:
            seed_everything(self.config.seed)
            self.step = 0
            if self.dist.is_main and ckpt_dir.exists():
                shutil.rmtree(ckpt_dir)  # a fresh run must never resume an older run's state
        if self.dist.is_main:
            out.mkdir(parents=True, exist_ok=True)
            # Rewrite from the checkpoint's history: drops rows of epochs that were lost.
            atomic_write_text(out / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in history))
        step_fn = self._build_step()
        tb = open_tensorboard(self.config.tensorboard, out, start) if self.dist.is_main else None
        try:
            for epoch in range(start, self.config.num_epochs):
                row = self._epoch(epoch, sched, step_fn)
                history.append(row)
                if self.dist.is_main:
                    with open(out / METRICS_FILE, "a", encoding="utf-8") as fh:
                        fh.write(json.dumps(row) + "\n")
                        fh.flush()
                    if tb is not None:
                        tb.write(row)
                    save_checkpoint(ckpt_dir, epoch + 1, self._state(epoch + 1, history))
                    LOG.info(_format_row(row, self.config.num_epochs))
        finally:
            if tb is not None:
                tb.close()
        result = TrainResult(self.model, history, out, start)
        _call(self.callbacks, "on_train_end", self, result)
        return result
