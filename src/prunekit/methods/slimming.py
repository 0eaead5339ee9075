"""Network Slimming end to end: sparse training → global |γ| threshold → surgery → fine-tune.

Liu et al., "Learning Efficient Convolutional Networks through Network Slimming", ICCV 2017
(reference code Eric-mingjie/network-slimming). Training adds ``s·Σ|γ|`` over every BatchNorm
scale factor (eq. 1; applied as the subgradient ``γ.grad += s·sign(γ)``, ``s = 1e-4`` for VGG,
``1e-5`` for ResNet-164 and DenseNet-40), channels whose |γ| falls below one global threshold
are removed, the thinner network is rebuilt physically and fine-tuned.

What prunekit changes: one pipeline for every architecture (the dependency graph finds the
coupled channels, no per-model prune script), a per-layer ``floor`` so the global threshold never
empties a layer (:func:`~prunekit.methods.bn_threshold.global_slim_plan`; the reference rule is
available as ``threshold="reference"`` and reports a collapse instead of crashing), and resumable
stages: ``run(out_dir)`` writes ``dense/`` (optional baseline), ``sparse/``, ``pruned/`` and
``finetuned/``, each a :func:`prunekit.io.save` folder plus ``stage.json``; a finished stage is
skipped on re-run, an interrupted one resumes from the trainer's last epoch checkpoint.

Example:
    >>> cfg = SlimmingConfig(model="zoo:vgg19", data="cifar10:../shared/data/cifar10-jpeg.tar.gz",
    ...                      sparsity=1e-4, percent=0.7, epochs=160, finetune_epochs=160)
    >>> result = NetworkSlimming(cfg).run("runs/vgg19-slim")
    >>> result.stages["finetuned"].summary["acc"]
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit import io
from prunekit._fileio import atomic_write_text
from prunekit.errors import CheckpointError, ConfigError
from prunekit.graph import DependencyGraph, trace
from prunekit.methods.bn_threshold import METHODS, SlimReport, slim_plan
from prunekit.plan import PruningPlan
from prunekit.report import count_macs, count_params
from prunekit.surgery import apply_plan
from prunekit.train import (
    BNL1Regularizer,
    TrainConfig,
    Trainer,
    bn_scales,
    evaluate,
    plot_bn_histogram,
    seed_everything,
)

LOG = logging.getLogger(__name__)
#: ``fn(model, graph, percent) -> (plan, report)``: a custom channel selection for :meth:`prune`.
Planner = Callable[[nn.Module, DependencyGraph, float], tuple[PruningPlan, SlimReport]]
STAGE_FILE = "stage.json"
STAGE_FORMAT = "prunekit.slimming-stage/1"
STAGES = ("dense", "sparse", "pruned", "finetuned")
# Config fields each stage's result depends on (later stages inherit the earlier ones'); a
# resumed stage made with other values of these is an error, anything else may change freely.
_COMMON = (
    "model",
    "model_kwargs",
    "data",
    "batch_size",
    "lr",
    "momentum",
    "weight_decay",
    "schedule",
    "augment",
    "seed",
    "compile",
    "train_options",
)
# Each stage depends on the settings of the stage it starts from plus its own, so the
# tuples are built cumulatively rather than repeated.
_SPARSE = (*_COMMON, "epochs", "sparsity")
_PRUNED = (*_SPARSE, "percent", "threshold", "floor", "round_to", "count")
_STAGE_KEYS = {
    "dense": (*_COMMON, "dense_epochs"),
    "sparse": _SPARSE,
    "pruned": _PRUNED,
    "finetuned": (*_PRUNED, "finetune_epochs", "finetune_lr"),
}


@dataclass
class SlimmingConfig:
    """Settings of the Network Slimming pipeline (defaults: the paper's CIFAR recipe).

    Unknown keys are errors (:meth:`from_dict`); ``None`` for a key means its default.

    Attributes:
        model: model spec, e.g. ``"zoo:vgg19"`` (see :func:`prunekit.models.build_model`).
        model_kwargs: extra constructor kwargs; ``num_classes``/``in_channels`` come from the data.
        data: dataset spec for :func:`prunekit.data.load_dataset` (unless data is passed in).
        sparsity: BN-L1 strength ``s`` (1e-4 VGG, 1e-5 ResNet-164/DenseNet-40).
        percent: fraction of channels removed by the global threshold, in [0, 1).
        threshold: ``"prunekit"`` (global ranking with a per-layer floor) or ``"reference"``.
        floor: channels every layer keeps at least (``"prunekit"`` threshold).
        round_to: keep a multiple of this many channels per layer (``"prunekit"``).
        count: what ``percent`` counts with the ``"prunekit"`` threshold: ``"bn"`` BatchNorm
            channels (the paper's accounting) or ``"units"`` (each coupled channel once).
        dense_epochs: epochs of the optional no-penalty baseline (0 = skip it).
        epochs: epochs of sparse training (from scratch, as in the paper).
        finetune_epochs: epochs of fine-tuning the pruned model (0 = stop after pruning).
        lr: peak learning rate of the baseline and sparse runs.
        finetune_lr: fine-tuning learning rate (default ``lr``).
        batch_size: training batch size (64 in the paper).
        eval_batch_size: evaluation batch size.
        schedule: LR schedule (``"step"``: ×0.1 at 50% and 75%, the paper's).
        weight_decay: L2 penalty (1e-4).
        momentum: SGD momentum (0.9).
        augment: ``"auto"`` (random crop + flip for 3-channel images, none otherwise) or a
            :class:`prunekit.data.TensorLoader` preset (``cifar``, ``flip``, ``none``).
        seed: seed of model init, data order and augmentation.
        device: ``cpu``, ``cuda``...; ``None`` → CUDA when available.
        compile: trainer compile mode (``"cuda-graphs"`` captures the whole step on a GPU).
        progress: progress bars (also off when not on a terminal).
        train_options: other :class:`~prunekit.train.TrainConfig` fields (e.g. ``warmup``).
    """

    model: str = "zoo:vgg19"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    data: str | None = None
    sparsity: float = 1e-4
    percent: float = 0.7
    threshold: str = "prunekit"
    floor: int = 1
    round_to: int | None = None
    count: str = "bn"
    dense_epochs: int = 0
    epochs: int = 160
    finetune_epochs: int = 160
    lr: float = 0.1
    finetune_lr: float | None = None
    batch_size: int = 64
    eval_batch_size: int = 1000
    schedule: str = "step"
    weight_decay: float = 1e-4
    momentum: float = 0.9
    augment: str = "auto"
    seed: int = 0
    device: str | None = None
    compile: str = "none"
    progress: bool = True
    train_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.percent < 1.0:
            raise ConfigError(f"percent must be in [0, 1), got {self.percent}")
        if self.threshold not in METHODS:
            raise ConfigError(f"threshold must be one of {METHODS}, got {self.threshold!r}")
        if self.count not in ("bn", "units"):
            raise ConfigError(f"count must be 'bn' or 'units', got {self.count!r}")
        if self.floor < 1:
            raise ConfigError(f"floor must be >= 1 (a layer keeps a channel), got {self.floor}")
        if self.sparsity < 0:
            raise ConfigError(f"sparsity s must be >= 0, got {self.sparsity}")
        for name in ("dense_epochs", "finetune_epochs"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ConfigError("epochs, batch_size and eval_batch_size must be >= 1")
        self.train_config(1, self.lr)  # surfaces bad trainer options now, as one clear error

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> SlimmingConfig:
        """Build from a mapping; unknown keys are errors, ``None`` values mean the default."""
        data = {k: v for k, v in (data or {}).items() if v is not None}
        known = {f.name for f in fields(cls)}
        bad = sorted(set(data) - known)
        if bad:
            raise ConfigError(f"unknown slimming setting(s) {bad}; known: {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able mapping of every field."""
        return asdict(self)

    def train_config(self, epochs: int, lr: float) -> TrainConfig:
        """The :class:`TrainConfig` of one training stage."""
        opts = {
            "epochs": epochs,
            "lr": lr,
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
            "schedule": self.schedule,
            "seed": self.seed,
            "device": self.device,
            "compile": self.compile,
            "progress": self.progress,
        }
        clash = sorted(set(opts) & set(self.train_options))
        if clash:
            raise ConfigError(f"train_options may not set {clash}; use the SlimmingConfig fields")
        return TrainConfig(**opts, **self.train_options)


@dataclass
class StageResult:
    """One finished stage: the model (on the training device) and its ``stage.json`` summary.

    Attributes:
        name: ``dense``, ``sparse``, ``pruned`` or ``finetuned``.
        model: the stage's model.
        summary: accuracy, loss, params, MACs, seconds, epochs... (see ``stage.json``).
        skipped: the stage was already done and was loaded from disk.
    """

    name: str
    model: nn.Module
    summary: dict[str, Any]
    skipped: bool = False


@dataclass
class SlimPruneResult:
    """What :meth:`NetworkSlimming.prune` produced."""

    model: nn.Module
    plan: PruningPlan
    report: SlimReport
    graph: DependencyGraph


@dataclass
class SlimmingResult:
    """All stages of :meth:`NetworkSlimming.run`, by name, in order."""

    out_dir: Path
    stages: dict[str, StageResult] = field(default_factory=dict)

    def table(self) -> str:
        """One line per stage: accuracy, params, MACs, seconds."""
        rows = [f"{'stage':<10}{'acc':>8}{'params':>14}{'MACs':>16}{'seconds':>10}"]
        for name, st in self.stages.items():
            s = st.summary
            acc = "-" if s.get("acc") is None else f"{s['acc']:.4f}"
            rows.append(
                f"{name:<10}{acc:>8}{s['params']:>14,}{s['macs']:>16,}"
                f"{s.get('seconds', 0.0):>10.1f}"
            )
        return "\n".join(rows)


class StageInterrupted(Exception):
    """A training stage stopped at an epoch boundary because its deadline came; re-run resumes."""


class _Deadline:
    """Trainer callback: stop before an epoch that would not finish before ``deadline``.

    Raised at an epoch *start*, so the previous epoch's checkpoint is complete and nothing is
    lost. Epoch time is the time between epoch starts (training + eval + checkpoint), seeded by
    the last run's ``metrics.jsonl`` so even the first epoch of a resumed call is estimated.
    """

    def __init__(self, deadline: float, hint: float | None) -> None:
        self.deadline, self.estimate = deadline, hint
        self.last: float | None = None

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        now = time.monotonic()
        if self.last is not None:
            self.estimate = now - self.last
        self.last = now
        if self.estimate is not None and now + 1.1 * self.estimate > self.deadline:
            raise StageInterrupted(f"deadline reached before epoch {epoch + 1}; re-run to resume")


def _epoch_hint(out: Path) -> float | None:
    try:
        rows = (out / "metrics.jsonl").read_text().splitlines()
        return float(json.loads(rows[-1])["seconds"]) * 1.2 if rows else None
    except (OSError, ValueError, KeyError, IndexError):
        return None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True))


class NetworkSlimming:
    """The Network Slimming pipeline, one verb per stage.

    Every stage method writes its output folder (a :func:`prunekit.io.save` model plus
    ``stage.json``) and, with ``resume=True``, returns a finished stage from disk instead of
    redoing it; training stages resume from their last epoch checkpoint.

    Args:
        config: a :class:`SlimmingConfig` or a mapping of its fields.
        train_data: training images (:class:`prunekit.data.ImageTensors`); default: load
            ``config.data``.
        test_data: evaluation images, given together with ``train_data``.

    Example:
        >>> slim = NetworkSlimming({"model": "zoo:vgg11", "data": "digits", "epochs": 2})
        >>> sparse = slim.train_sparse("runs/s/sparse")
        >>> pruned = slim.prune(sparse.model)
        >>> pruned.report.threshold
    """

    def __init__(
        self,
        config: SlimmingConfig | Mapping[str, Any] | None = None,
        *,
        train_data: Any = None,
        test_data: Any = None,
    ) -> None:
        from prunekit.train.distributed import DistInfo, resolve_device

        self.config = (
            config if isinstance(config, SlimmingConfig) else SlimmingConfig.from_dict(config)
        )
        if (train_data is None) != (test_data is None):
            raise ConfigError("give both train_data and test_data, or neither (then config.data)")
        if train_data is None and self.config.data is None:
            raise ConfigError("no data: set config.data (e.g. 'digits') or pass train/test data")
        self._train_ds, self._test_ds = train_data, test_data
        self._loaders: tuple[Any, Any] | None = None
        self.device = resolve_device(self.config.device, DistInfo())
        opts = self.config.train_options
        cuda = self.device.type == "cuda"
        self.bf16 = cuda if opts.get("bf16") is None else bool(opts["bf16"])
        self.channels_last = (
            cuda if opts.get("channels_last") is None else bool(opts["channels_last"])
        )

    # ------------------------------------------------------------------ data and model
    @property
    def train_data(self) -> Any:
        """Training split (loaded from ``config.data`` on first use)."""
        if self._train_ds is None:
            from prunekit.data import load_dataset

            self._train_ds = load_dataset(str(self.config.data), "train")
        return self._train_ds

    @property
    def test_data(self) -> Any:
        """Evaluation split (loaded from ``config.data`` on first use)."""
        if self._test_ds is None:
            from prunekit.data import load_dataset

            self._test_ds = load_dataset(str(self.config.data), "test")
        return self._test_ds

    def loaders(self) -> tuple[Any, Any]:
        """``(train, test)`` :class:`~prunekit.data.TensorLoader` s on the training device."""
        if self._loaders is None:
            from prunekit.data import TensorLoader

            c, train = self.config, self.train_data
            augment = c.augment
            if augment == "auto":  # crop + flip suits natural images, not digits
                augment = "cifar" if train.image_shape[0] == 3 else "none"
            self._loaders = (
                TensorLoader(
                    train,
                    c.batch_size,
                    shuffle=True,
                    device=self.device,
                    augment=augment,
                    seed=c.seed,
                ),
                TensorLoader(self.test_data, c.eval_batch_size, device=self.device),
            )
        return self._loaders

    def model_spec(self) -> dict[str, Any]:
        """``{"model", "kwargs"}`` building the dense model for this data (for :func:`io.save`)."""
        kwargs = dict(self.config.model_kwargs)
        kwargs.setdefault("num_classes", self.train_data.num_classes)
        channels = self.train_data.image_shape[0]
        if channels != 3 and self.config.model.startswith("zoo:"):
            kwargs.setdefault("in_channels", channels)  # zoo models take in_channels
        return {"model": self.config.model, "kwargs": kwargs}

    def build_model(self) -> nn.Module:
        """A fresh dense model, initialised from ``config.seed`` (the same on every call)."""
        from prunekit.models import build_model

        spec = self.model_spec()
        seed_everything(self.config.seed)
        return build_model(spec["model"], **spec["kwargs"])

    def example_input(self) -> torch.Tensor:
        """A zero batch of one image, for tracing and MACs."""
        return torch.zeros(1, *self.train_data.image_shape)

    def _place(self, model: nn.Module) -> nn.Module:
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def measure(self, model: nn.Module) -> dict[str, Any]:
        """Accuracy/loss on the test split, parameters and MACs of ``model``."""
        self._place(model)
        res = evaluate(
            model,
            self.loaders()[1],
            device=self.device,
            bf16=self.bf16,
            channels_last=self.channels_last,
        )
        x = self.example_input().to(self.device)
        return {
            "acc": res["acc"],
            "loss": res["loss"],
            "top5": res.get("top5"),
            "params": count_params(model),
            "macs": count_macs(model, x),
        }

    # ------------------------------------------------------------------ stage bookkeeping
    def fingerprint(self, stage: str, tag: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The settings stage ``stage`` depends on (plus ``tag``), as JSON data."""
        cfg = self.config.to_dict()
        fp = {k: cfg[k] for k in _STAGE_KEYS[stage]}
        fp["data"] = [
            cfg["data"],
            self.train_data.name,
            len(self.train_data),
            self.test_data.name,
            len(self.test_data),
        ]
        fp.update(tag or {})
        return dict(json.loads(json.dumps(fp)))

    def _done(self, out: Path, fp: dict[str, Any], resume: bool) -> dict[str, Any] | None:
        """The finished ``stage.json`` of ``out`` if it can be reused, else ``None``."""
        path = out / STAGE_FILE
        if not path.exists():
            return None
        if not resume:
            path.unlink()  # a fresh run: forget the old stage (the trainer drops its checkpoint)
            return None
        try:
            doc = json.loads(path.read_text())
            old = doc["fingerprint"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(
                f"{path} is unreadable ({exc}); delete {out} to redo the stage"
            ) from None
        if doc.get("format") != STAGE_FORMAT:
            raise CheckpointError(f"{path} is not a {STAGE_FORMAT} file; delete {out}")
        diff = sorted(k for k in set(fp) | set(old) if fp.get(k) != old.get(k))
        if diff:
            raise ConfigError(
                f"{out} was made with different settings ({', '.join(diff)}); "
                f"use the same settings or delete {out} to redo that stage"
            )
        return doc if doc.get("done") else None

    def _load(self, name: str, out: Path, doc: dict[str, Any]) -> StageResult:
        LOG.info("%s: already done in %s, skipped", name, out)
        return StageResult(name, self._place(io.load(out)), dict(doc["summary"]), skipped=True)

    def _finish(
        self, name: str, out: Path, model: nn.Module, fp: dict[str, Any], summary: dict[str, Any]
    ) -> StageResult:
        io.save(model, out, self.model_spec())
        summary = {"stage": name, **summary}
        _write_json(
            out / STAGE_FILE,
            {"format": STAGE_FORMAT, "fingerprint": fp, "done": True, "summary": summary},
        )
        # The epoch checkpoint (weights + optimizer state) is only needed to resume the stage.
        shutil.rmtree(out / "checkpoint", ignore_errors=True)
        return StageResult(name, model, summary)

    def _train(
        self,
        name: str,
        out: Path,
        model: nn.Module | None,
        *,
        epochs: int,
        lr: float,
        regs: list[Any],
        fp: dict[str, Any],
        resume: bool,
        deadline: float | None,
    ) -> tuple[StageResult, dict[str, torch.Tensor] | None]:
        """Train one stage; returns the result and the BN scales before training (new runs)."""
        done = self._done(out, fp, resume)
        if done is not None:
            return self._load(name, out, done), None
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / STAGE_FILE, {"format": STAGE_FORMAT, "fingerprint": fp, "done": False})
        model = model if model is not None else self.build_model()
        before = bn_scales(model)
        callbacks = [] if deadline is None else [_Deadline(deadline, _epoch_hint(out))]
        trainer = Trainer(
            model,
            *self.loaders(),
            self.config.train_config(epochs, lr),
            regularizers=regs,
            callbacks=callbacks,
        )
        result = trainer.fit(out, resume=resume)
        hist = result.history
        speeds = [r["img_per_s"] for r in (hist[1:] if len(hist) > 1 else hist)]
        x = self.example_input().to(self.device)
        summary = {
            "acc": hist[-1]["val_acc"],
            "loss": hist[-1]["val_loss"],
            "top5": hist[-1].get("val_top5"),
            "params": count_params(result.model),
            "macs": count_macs(result.model, x),
            "epochs": epochs,
            "seconds": sum(r["seconds"] for r in hist),
            "train_img_per_s": sum(speeds) / len(speeds),
        }
        return self._finish(name, out, result.model, fp, summary), before

    # ------------------------------------------------------------------ the stages
    def train_dense(
        self, out_dir: str | Path, *, resume: bool = True, deadline: float | None = None
    ) -> StageResult:
        """Train the baseline without the sparsity penalty (``config.dense_epochs`` epochs).

        Args:
            out_dir: stage folder.
            resume: reuse a finished stage / resume an interrupted one.
            deadline: ``time.monotonic()`` value; stop (raising :class:`StageInterrupted`)
                before an epoch that would end after it.

        Returns:
            The :class:`StageResult`.
        """
        c = self.config
        if c.dense_epochs < 1:
            raise ConfigError("dense_epochs is 0: set it to train the baseline")
        res, _ = self._train(
            "dense",
            Path(out_dir),
            None,
            epochs=c.dense_epochs,
            lr=c.lr,
            regs=[],
            fp=self.fingerprint("dense"),
            resume=resume,
            deadline=deadline,
        )
        return res

    def train_sparse(
        self,
        out_dir: str | Path,
        *,
        resume: bool = True,
        deadline: float | None = None,
        before: Mapping[str, torch.Tensor] | None = None,
    ) -> StageResult:
        """Train from scratch with the BN-L1 penalty ``s·Σ|γ|`` (Liu et al. 2017, eq. 1).

        Also writes ``bn_gamma_hist.png``: |γ| before (``before``, e.g. the dense baseline's
        scales, else the initial ones) and after sparse training (the paper's Figure 4).

        Args:
            out_dir: stage folder.
            resume: reuse a finished stage / resume an interrupted one.
            deadline: see :meth:`train_dense`.
            before: BN scales to compare against in the histogram.

        Returns:
            The :class:`StageResult` (``summary["bn_hist"]`` names the PNG).
        """
        c = self.config
        out = Path(out_dir)
        res, init = self._train(
            "sparse",
            out,
            None,
            epochs=c.epochs,
            lr=c.lr,
            regs=[BNL1Regularizer(c.sparsity)],
            fp=self.fingerprint("sparse"),
            resume=resume,
            deadline=deadline,
        )
        ref = before if before is not None else init
        if ref and not res.skipped:
            label = "dense-trained" if before is not None else "initial"
            plot_bn_histogram(
                ref,
                bn_scales(res.model),
                out / "bn_gamma_hist.png",
                title=f"BN |γ|: {label} vs sparse-trained (s={c.sparsity:g})",
            )
            res.summary["bn_hist"] = "bn_gamma_hist.png"
        return res

    def prune(
        self, model: nn.Module, *, percent: float | None = None, method: str | Planner | None = None
    ) -> SlimPruneResult:
        """Remove the channels below the global |γ| threshold, physically, in place.

        Args:
            model: the sparse-trained model (modified in place; pass a copy to keep it).
            percent: fraction removed (default ``config.percent``).
            method: ``"prunekit"`` or ``"reference"`` (default ``config.threshold``), or a
                :data:`Planner` ``fn(model, graph, percent) -> (plan, SlimReport)`` choosing the
                channels another way (e.g. a peer library's), still pruned by prunekit surgery.

        Returns:
            A :class:`SlimPruneResult` (model, plan, per-layer report with the threshold).
        """
        c = self.config
        percent = c.percent if percent is None else percent
        x = self.example_input().to(next(model.parameters()).device)
        graph = trace(model, x)
        if callable(method):
            plan, report = method(model, graph, percent)
        else:
            plan, report = slim_plan(
                model,
                graph,
                percent,
                method=method or c.threshold,
                floor=c.floor,
                round_to=c.round_to,
                count=c.count,
            )
        apply_plan(model, plan)
        return SlimPruneResult(model, plan, report, graph)

    def prune_stage(
        self,
        model: nn.Module,
        out_dir: str | Path,
        *,
        resume: bool = True,
        percent: float | None = None,
        method: str | Planner | None = None,
    ) -> StageResult:
        """:meth:`prune` + evaluation + save into ``out_dir`` (skipped when already done).

        ``summary["report"]`` holds the :class:`SlimReport` (threshold, kept channels per layer,
        collapse); ``summary["acc"]`` is the accuracy before fine-tuning. A callable ``method``
        is identified on resume by its ``__name__``.
        """
        out = Path(out_dir)
        c = self.config
        name = getattr(method, "__name__", repr(method)) if callable(method) else method
        tag = {
            "percent": c.percent if percent is None else percent,
            "threshold": name or c.threshold,
        }
        fp = self.fingerprint("pruned", tag)
        done = self._done(out, fp, resume)
        if done is not None:
            return self._load("pruned", out, done)
        start = time.perf_counter()
        res = self.prune(model, percent=percent, method=method)
        seconds = time.perf_counter() - start
        summary = {**self.measure(res.model), "seconds": seconds, "report": res.report.to_dict()}
        return self._finish("pruned", out, res.model, fp, summary)

    def finetune(
        self,
        model: nn.Module,
        out_dir: str | Path,
        *,
        resume: bool = True,
        deadline: float | None = None,
        tag: Mapping[str, Any] | None = None,
    ) -> StageResult:
        """Fine-tune a pruned model without the penalty (``config.finetune_epochs`` epochs).

        Args:
            model: the pruned model (trained in place).
            out_dir: stage folder.
            resume: reuse a finished stage / resume an interrupted one.
            deadline: see :meth:`train_dense`.
            tag: extra identity of the input model (percent, threshold...) checked on resume.

        Returns:
            The :class:`StageResult`.
        """
        c = self.config
        if c.finetune_epochs < 1:
            raise ConfigError("finetune_epochs is 0: set it to fine-tune")
        lr = c.finetune_lr if c.finetune_lr is not None else c.lr
        res, _ = self._train(
            "finetuned",
            Path(out_dir),
            model,
            epochs=c.finetune_epochs,
            lr=lr,
            regs=[],
            fp=self.fingerprint("finetuned", tag),
            resume=resume,
            deadline=deadline,
        )
        return res

    def run(
        self, out_dir: str | Path, *, resume: bool = True, deadline: float | None = None
    ) -> SlimmingResult:
        """The whole pipeline: [dense], sparse, pruned, [finetuned] under ``out_dir``.

        Args:
            out_dir: run folder (``config.json``, ``summary.json`` and one folder per stage).
            resume: skip finished stages, resume an interrupted one.
            deadline: ``time.monotonic()`` value; training stops at an epoch boundary before
                it (raising :class:`StageInterrupted`); re-run to continue.

        Returns:
            A :class:`SlimmingResult`.
        """
        c = self.config
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / "config.json", c.to_dict())
        result = SlimmingResult(out)
        before = None
        if c.dense_epochs > 0:
            result.stages["dense"] = self.train_dense(
                out / "dense", resume=resume, deadline=deadline
            )
            before = bn_scales(result.stages["dense"].model)
        sparse = self.train_sparse(out / "sparse", resume=resume, deadline=deadline, before=before)
        result.stages["sparse"] = sparse
        pruned = self.prune_stage(copy.deepcopy(sparse.model), out / "pruned", resume=resume)
        result.stages["pruned"] = pruned
        if c.finetune_epochs > 0:
            tag = {"percent": c.percent, "threshold": c.threshold}
            result.stages["finetuned"] = self.finetune(
                copy.deepcopy(pruned.model),
                out / "finetuned",
                resume=resume,
                deadline=deadline,
                tag=tag,
            )
        _write_json(out / "summary.json", {k: v.summary for k, v in result.stages.items()})
        return result
