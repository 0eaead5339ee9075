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
stages. The method is a short composition of the shared stages of
:mod:`prunekit.methods.stages`: ``run(out_dir)`` writes ``dense/`` (optional baseline),
``sparse/``, ``pruned/`` and ``finetuned/``, each a :func:`prunekit.io.save` folder plus
``stage.json``; a finished stage is skipped on re-run, an interrupted one resumes from the
trainer's last epoch checkpoint.

Example:
    >>> cfg = SlimmingConfig(model="zoo:vgg19", data="cifar10:../shared/data/cifar10-jpeg.tar.gz",
    ...                      sparsity=1e-4, percent=0.7, epochs=160, finetune_epochs=160)
    >>> result = NetworkSlimming(cfg).run("runs/vgg19-slim")
    >>> result.stages["finetuned"].summary["acc"]
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from prunekit._fileio import atomic_write_text
from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph
from prunekit.methods.bn_threshold import METHODS, SlimReport, slim_plan
from prunekit.methods.stages import (
    STAGE_FILE,
    StageInterrupted,
    StageResult,
    TrainSpec,
    Workbench,
    WorkbenchConfig,
    prune_model,
    prune_stage,
    train_stage,
)
from prunekit.plan import PruningPlan
from prunekit.train import BNL1Regularizer, TrainConfig, bn_scales, plot_bn_histogram
from prunekit.train.config import COSMETIC_FIELDS

__all__ = [
    "STAGES",
    "STAGE_FILE",
    "NetworkSlimming",
    "Planner",
    "SlimPruneResult",
    "SlimmingConfig",
    "SlimmingResult",
    "StageInterrupted",
    "StageResult",
]

#: ``fn(model, graph, percent) -> (plan, report)``: a custom channel selection for :meth:`prune`.
Planner = Callable[[nn.Module, DependencyGraph, float], tuple[PruningPlan, SlimReport]]
STAGES = ("dense", "sparse", "pruned", "finetuned")
# Settings each stage's result depends on besides the shared ones (later stages inherit the
# earlier ones'); a resumed stage made with other values is an error.
_SPARSE = ("epochs", "sparsity")
_PRUNED = (*_SPARSE, "percent", "threshold", "floor", "round_to", "count")
_STAGE_KEYS = {
    "dense": ("dense_epochs",),
    "sparse": _SPARSE,
    "pruned": _PRUNED,
    "finetuned": (*_PRUNED, "finetune_epochs", "finetune_lr"),
}
# Shared settings that never change a result: display, device, and the per-stage keys above.
_NOT_SHARED = {*COSMETIC_FIELDS, "device", "eval_batch_size", *_STAGE_KEYS["finetuned"]}


class SlimmingConfig(WorkbenchConfig, TrainConfig):
    """Settings of the Network Slimming pipeline (defaults: the paper's CIFAR recipe).

    It *is* a :class:`~prunekit.train.TrainConfig` (``lr``, ``momentum``, ``weight_decay``,
    ``schedule``, ``seed``, ``device``, ``compile``, ``warmup``...: every stage trains with
    them, with its own epochs) plus the shared method settings of
    :class:`~prunekit.methods.stages.WorkbenchConfig` (``model``, ``model_kwargs``, ``data``,
    ``batch_size``, ``eval_batch_size``, ``augment``) and these. Unknown keys are errors;
    ``None`` for a key means its default.

    Attributes:
        sparsity: BN-L1 strength ``s`` (1e-4 VGG, 1e-5 ResNet-164/DenseNet-40).
        percent: fraction of channels removed by the global threshold, in [0, 1).
        threshold: ``"prunekit"`` (global ranking with a per-layer floor) or ``"reference"``.
        floor: channels every layer keeps at least (``"prunekit"`` threshold).
        round_to: keep a multiple of this many channels per layer (``"prunekit"``).
        count: what ``percent`` counts with the ``"prunekit"`` threshold: ``"bn"`` BatchNorm
            channels (the paper's accounting) or ``"units"`` (each coupled channel once).
        dense_epochs: epochs of the optional no-penalty baseline (0 = skip it).
        epochs: epochs of sparse training (from scratch, as in the paper; default 160).
        finetune_epochs: epochs of fine-tuning the pruned model (0 = stop after pruning).
        finetune_lr: fine-tuning learning rate (default ``lr``).
    """

    what: ClassVar[str] = "slimming setting"

    sparsity: float = Field(1e-4, ge=0)
    percent: float = Field(0.7, ge=0, lt=1)
    threshold: str = "prunekit"
    floor: int = Field(1, ge=1)
    round_to: int | None = Field(None, ge=1)
    count: Literal["bn", "units"] = "bn"
    dense_epochs: int = Field(0, ge=0)
    finetune_epochs: int = Field(160, ge=0)
    finetune_lr: float | None = Field(None, gt=0)

    @field_validator("threshold")
    @classmethod
    def _known_threshold(cls, v: str) -> str:
        if v not in METHODS:
            raise ValueError(f"threshold must be one of {METHODS}")
        return v

    def train_fields(self) -> dict[str, Any]:
        """The :class:`~prunekit.train.TrainConfig` part of this config, as a mapping."""
        return {k: getattr(self, k) for k in TrainConfig.model_fields}

    def train_config(self, epochs: int, lr: float) -> TrainConfig:
        """The :class:`TrainConfig` of one training stage (its epochs and LR)."""
        return TrainConfig(**{**self.train_fields(), "epochs": epochs, "lr": lr})

    def fingerprint(self, stage: str) -> dict[str, Any]:
        """The settings stage ``stage`` depends on (besides the data), as JSON data."""
        cfg = self.to_dict()
        keys = [k for k in cfg if k not in _NOT_SHARED] + list(_STAGE_KEYS[stage])
        return {k: cfg[k] for k in keys}


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


class NetworkSlimming:
    """The Network Slimming pipeline, one verb per stage, on the shared stages.

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
        self.config = (
            config if isinstance(config, SlimmingConfig) else SlimmingConfig.from_dict(config)
        )
        self.bench = Workbench(
            self.config, self.config, train_data=train_data, test_data=test_data
        )

    # ------------------------------------------------------------------ shared parts
    def loaders(self) -> tuple[Any, Any]:
        """``(train, test)`` loaders on the training device (see :class:`Workbench`)."""
        return self.bench.loaders()

    def build_model(self) -> nn.Module:
        """A fresh dense model, initialised from ``config.seed`` (the same on every call)."""
        return self.bench.build_model()

    def example_input(self) -> torch.Tensor:
        """A zero batch of one image, for tracing and MACs."""
        return self.bench.example_input()

    def measure(self, model: nn.Module) -> dict[str, Any]:
        """Accuracy/loss on the test split, parameters and MACs of ``model``."""
        return self.bench.measure(model)

    def fingerprint(self, stage: str, tag: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The settings stage ``stage`` depends on (plus the data and ``tag``), as JSON data."""
        fp = {**self.config.fingerprint(stage), "data": self.bench.data_identity()}
        return dict(json.loads(json.dumps({**fp, **(tag or {})})))

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
        spec = TrainSpec(c.train_config(c.dense_epochs, c.lr))
        return train_stage(
            self.bench,
            "dense",
            out_dir,
            None,
            spec,
            fingerprint=self.fingerprint("dense"),
            resume=resume,
            deadline=deadline,
        )

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
        init = bn_scales(self.build_model()) if before is None else dict(before)
        spec = TrainSpec(c.train_config(c.num_epochs, c.lr), regularizers=[BNL1Regularizer(c.sparsity)])
        res = train_stage(
            self.bench,
            "sparse",
            out,
            None,
            spec,
            fingerprint=self.fingerprint("sparse"),
            resume=resume,
            deadline=deadline,
        )
        if init and not res.skipped:
            label = "dense-trained" if before is not None else "initial"
            plot_bn_histogram(
                init,
                bn_scales(res.model),
                out / "bn_gamma_hist.png",
                title=f"BN |γ|: {label} vs sparse-trained (s={c.sparsity:g})",
            )
            res.summary["bn_hist"] = "bn_gamma_hist.png"
        return res

    def _planner(
        self, percent: float | None, method: str | Planner | None
    ) -> Callable[[nn.Module, DependencyGraph], tuple[PruningPlan, SlimReport]]:
        c = self.config
        pct = c.percent if percent is None else percent

        def plan(model: nn.Module, graph: DependencyGraph) -> tuple[PruningPlan, SlimReport]:
            if callable(method):
                return method(model, graph, pct)
            return slim_plan(
                model,
                graph,
                pct,
                method=method or c.threshold,
                floor=c.floor,
                round_to=c.round_to,
                count=c.count,
            )

        return plan

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
            A :class:`SlimPruneResult` (model, plan, per-layer report with the threshold); the
            pruned model is checked against its soft mask.
        """
        x = self.example_input().to(next(model.parameters()).device)
        res = prune_model(model, x, self._planner(percent, method))
        assert isinstance(res.report, SlimReport)
        return SlimPruneResult(res.model, res.plan, res.report, res.graph)

    def prune_stage(
        self,
        start: StageResult,
        out_dir: str | Path,
        *,
        resume: bool = True,
        percent: float | None = None,
        method: str | Planner | None = None,
    ) -> StageResult:
        """:meth:`prune` of ``start``'s model (in place) + evaluation + save into ``out_dir``.

        ``summary["report"]`` holds the :class:`SlimReport` (threshold, kept channels per layer,
        collapse) as data; ``summary["acc"]`` is the accuracy before fine-tuning. A callable
        ``method`` is identified on resume by its ``__name__``.
        """
        c = self.config
        name = getattr(method, "__name__", repr(method)) if callable(method) else method
        tag = {"percent": c.percent if percent is None else percent, "threshold": name or c.threshold}
        base = self._planner(percent, method)

        def planner(model: nn.Module, graph: DependencyGraph) -> tuple[PruningPlan, dict[str, Any]]:
            plan, report = base(model, graph)
            return plan, report.to_dict()

        return prune_stage(
            self.bench,
            "pruned",
            out_dir,
            start,
            planner,
            fingerprint=self.fingerprint("pruned", tag),
            resume=resume,
        )

    def finetune(
        self,
        start: StageResult,
        out_dir: str | Path,
        *,
        resume: bool = True,
        deadline: float | None = None,
        tag: Mapping[str, Any] | None = None,
    ) -> StageResult:
        """Fine-tune a pruned stage's model without the penalty (``config.finetune_epochs``).

        Args:
            start: the pruned stage (its model is trained in place).
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
        return train_stage(
            self.bench,
            "finetuned",
            out_dir,
            start,
            TrainSpec(c.train_config(c.finetune_epochs, lr)),
            fingerprint=self.fingerprint("finetuned", tag),
            resume=resume,
            deadline=deadline,
        )

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
        atomic_write_text(out / "config.json", json.dumps(c.to_dict(), indent=1, sort_keys=True))
        result = SlimmingResult(out)
        before = None
        if c.dense_epochs > 0:
            result.stages["dense"] = self.train_dense(
                out / "dense", resume=resume, deadline=deadline
            )
            before = bn_scales(result.stages["dense"].model)
        sparse = self.train_sparse(out / "sparse", resume=resume, deadline=deadline, before=before)
        result.stages["sparse"] = sparse
        pruned = self.prune_stage(sparse.copy(), out / "pruned", resume=resume)
        result.stages["pruned"] = pruned
        if c.finetune_epochs > 0:
            tag = {"percent": c.percent, "threshold": c.threshold}
            result.stages["finetuned"] = self.finetune(
                pruned.copy(), out / "finetuned", resume=resume, deadline=deadline, tag=tag
            )
        summary = {k: v.summary for k, v in result.stages.items()}
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=1, sort_keys=True))
        return result
