"""Reusable, resumable stages that compression methods are composed of.

A *method* (Network Slimming, Versatile Filters, ...) is a short sequence of stages — train,
sparse-train, prune, fine-tune, distil, convert — each writing one folder:

* a :func:`prunekit.io.save` model (weights + the :class:`~prunekit.record.ModelRecord` of how
  it was made, so it reloads without pickle);
* ``stage.json``: the settings the stage depends on (its *fingerprint*), whether it finished,
  and a summary (accuracy, params, MACs, seconds...).

Re-running a method skips finished stages (when their fingerprint matches; otherwise it refuses
with the settings that differ) and resumes an interrupted training stage from its last epoch
checkpoint. :class:`Workbench` holds what the stages share: data, loaders, device, and how to
build the base model for the data.

Example:
    >>> bench = Workbench(WorkbenchConfig(model="zoo:vgg11", data="digits"))
    >>> dense = train_stage(bench, "dense", "runs/x/dense", None, TrainConfig(epochs=5),
    ...                     fingerprint={"epochs": 5})
    >>> pruned = prune_stage(bench, "pruned", "runs/x/pruned", dense, my_planner,
    ...                      fingerprint={"ratio": 0.5})
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import nn

from prunekit import io
from prunekit._fileio import atomic_write_text
from prunekit.config import Config
from prunekit.errors import CheckpointError, ConfigError
from prunekit.graph import DependencyGraph, trace
from prunekit.plan import PruningPlan
from prunekit.record import Conversion, ModelRecord
from prunekit.report import count_macs, count_params
from prunekit.surgery import apply_plan
from prunekit.train import TrainConfig, Trainer, evaluate, seed_everything
from prunekit.verify import check_plan
from prunekit.versatile.convert import VersatileConfig, versatile_record

LOG = logging.getLogger(__name__)
STAGE_FILE = "stage.json"
STAGE_FORMAT = "prunekit.slimming-stage/1"
CHECKPOINT_DIR = "checkpoint"
#: ``fn(model, graph) -> (plan, report)``: how a prune stage chooses its channels (for
#: :func:`prune_stage` the report must be JSON-able data: it goes into ``stage.json``).
Planner = Callable[[nn.Module, DependencyGraph], tuple[PruningPlan, Any]]
#: ``fn(model) -> Conversion``: a structural change applied in place, recorded for save/load.
Converter = Callable[[nn.Module], Conversion]


class WorkbenchConfig(Config):
    """What every stage of a method shares (``None`` means the default).

    Args:
        model: base model spec, e.g. ``"zoo:vgg19"`` (:func:`prunekit.models.build_model`).
        model_kwargs: constructor kwargs; ``num_classes``/``in_channels`` come from the data
            (:func:`prunekit.models.kwargs_for_data`).
        data: dataset spec for :func:`prunekit.data.load_dataset` (unless data is passed in).
        batch_size: training batch size.
        eval_batch_size: evaluation batch size.
        augment: ``"auto"`` (random crop + flip for 3-channel images, none otherwise) or a
            :class:`prunekit.data.TensorLoader` preset (``cifar``, ``flip``, ``none``).
        versatile: build the model with Versatile Filters
            (:class:`prunekit.versatile.VersatileConfig`); None: as the spec builds it.
    """

    what: ClassVar[str] = "method setting"

    model: str = "zoo:vgg19"
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    data: str | None = None
    batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(1000, ge=1)
    augment: str = "auto"
    versatile: VersatileConfig | None = None


@dataclass
class StageResult:
    """One finished stage.

    Attributes:
        name: the stage's name (``dense``, ``sparse``, ``pruned``...).
        model: the stage's model (on the training device).
        summary: accuracy, loss, params, MACs, seconds, epochs... (``stage.json``).
        record: how the model was made (base spec + steps), saved with it.
        skipped: the stage was already done and was loaded from disk.
    """

    name: str
    model: nn.Module
    summary: dict[str, Any]
    record: ModelRecord
    skipped: bool = False

    def copy(self) -> StageResult:
        """This stage with a deep copy of its model (a next stage changes its input in place)."""
        return StageResult(self.name, copy.deepcopy(self.model), self.summary, self.record)


class Workbench:
    """Data, loaders, device and base model shared by a method's stages.

    Args:
        config: the shared settings.
        train: training options of the run (seed, device, bf16, channels-last are read).
        train_data: training images (:class:`prunekit.data.ImageTensors`); default: load
            ``config.data``.
        test_data: evaluation images, given together with ``train_data``.
    """

    def __init__(
        self,
        config: WorkbenchConfig,
        train: TrainConfig,
        *,
        train_data: Any = None,
        test_data: Any = None,
    ) -> None:
        from prunekit.device import resolve_device

        if (train_data is None) != (test_data is None):
            raise ConfigError("give both train_data and test_data, or neither (then config.data)")
        if train_data is None and config.data is None:
            raise ConfigError("no data: set config.data (e.g. 'digits') or pass train/test data")
        self.config, self.train = config, train
        self._train_ds, self._test_ds = train_data, test_data
        self._loaders: tuple[Any, Any] | None = None
        self.device = resolve_device(train.device)
        cuda = self.device.type == "cuda"
        self.bf16 = cuda if train.bf16 is None else train.bf16
        self.channels_last = cuda if train.channels_last is None else train.channels_last

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
                    seed=self.train.seed,
                ),
                TensorLoader(self.test_data, c.eval_batch_size, device=self.device),
            )
        return self._loaders

    def record(self) -> ModelRecord:
        """How to build the dense base model for this data."""
        from prunekit.models import kwargs_for_data

        data = self.train_data
        kwargs = kwargs_for_data(
            self.config.model,
            self.config.model_kwargs,
            num_classes=data.num_classes,
            in_channels=data.image_shape[0],
        )
        return versatile_record(ModelRecord(self.config.model, kwargs), self.config.versatile)

    def build_model(self) -> nn.Module:
        """A fresh dense model, initialised from the run's seed (the same on every call)."""
        record = self.record()
        seed_everything(self.train.seed)
        return record.build()

    def data_identity(self) -> list[Any]:
        """What identifies the data a stage was trained on (for fingerprints)."""
        tr, te = self.train_data, self.test_data
        return [self.config.data, tr.name, len(tr), te.name, len(te)]

    def example_input(self) -> torch.Tensor:
        """A zero batch of one image, for tracing and MACs."""
        return torch.zeros(1, *self.train_data.image_shape)

    def place(self, model: nn.Module) -> nn.Module:
        """Move ``model`` to the training device (channels-last where it pays)."""
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def measure(self, model: nn.Module) -> dict[str, Any]:
        """Accuracy/loss on the test split, parameters and MACs of ``model``."""
        self.place(model)
        res = evaluate(
            model,
            self.loaders()[1],
            device=self.device,
            bf16=self.bf16,
            channels_last=self.channels_last,
        )
        return {
            "acc": res["acc"],
            "loss": res["loss"],
            "top5": res.get("top5"),
            "params": count_params(model),
            "macs": count_macs(model, self.example_input().to(self.device)),
        }


# ---------------------------------------------------------------------------------- folders
def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True))


def reusable(out: Path, fingerprint: Mapping[str, Any], resume: bool) -> dict[str, Any] | None:
    """The finished ``stage.json`` of ``out`` if it can be reused, else ``None``.

    A fresh run (``resume=False``) forgets an old stage; a resumed one refuses a stage made with
    other settings, naming them.
    """
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
        raise CheckpointError(f"{path} is unreadable ({exc}); delete {out} to redo the stage") from None
    if doc.get("format") != STAGE_FORMAT:
        raise CheckpointError(f"{path} is not a {STAGE_FORMAT} file; delete {out}")
    diff = sorted(k for k in set(fingerprint) | set(old) if fingerprint.get(k) != old.get(k))
    if diff:
        raise ConfigError(
            f"{out} was made with different settings ({', '.join(diff)}); "
            f"use the same settings or delete {out} to redo that stage"
        )
    return doc if doc.get("done") else None


def _load(bench: Workbench, name: str, out: Path, doc: Mapping[str, Any]) -> StageResult:
    LOG.info("%s: already done in %s, skipped", name, out)
    model = bench.place(io.load(out))
    return StageResult(name, model, dict(doc["summary"]), io.load_record(out), skipped=True)


def _begin(out: Path, fingerprint: Mapping[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / STAGE_FILE, {"format": STAGE_FORMAT, "fingerprint": fingerprint, "done": False})


def finish(
    name: str,
    out: Path,
    model: nn.Module,
    record: ModelRecord,
    fingerprint: Mapping[str, Any],
    summary: Mapping[str, Any],
) -> StageResult:
    """Save a stage's model and mark it done (``stage.json`` last, atomically)."""
    io.save(model, out, record)
    summary = {"stage": name, **summary}
    _write_json(
        out / STAGE_FILE,
        {"format": STAGE_FORMAT, "fingerprint": dict(fingerprint), "done": True, "summary": summary},
    )
    # The epoch checkpoint (weights + optimizer state) is only needed to resume the stage.
    shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
    return StageResult(name, model, summary, record)


def _identity(fingerprint: Mapping[str, Any]) -> dict[str, Any]:
    return dict(json.loads(json.dumps(dict(fingerprint))))


# ----------------------------------------------------------------------------------- stages
class StageInterrupted(Exception):
    """A training stage stopped at an epoch boundary because its deadline came; re-run resumes."""


class Deadline:
    """Trainer callback: stop before an epoch that would not finish before ``deadline``.

    Raised at an epoch *start*, so the previous epoch's checkpoint is complete and nothing is
    lost. Epoch time is the time between epoch starts (training + eval + checkpoint), seeded by
    the last run's ``metrics.jsonl`` so even the first epoch of a resumed call is estimated.

    Args:
        deadline: a ``time.monotonic()`` value.
        hint: seconds one epoch is expected to take (None: unknown until one has run).
    """

    def __init__(self, deadline: float, hint: float | None) -> None:
        self.deadline, self.estimate = deadline, hint
        self.last: float | None = None

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        """Raise :class:`StageInterrupted` when the next epoch would end after the deadline."""
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


@dataclass
class TrainSpec:
    """What a training stage runs (train, sparse-train, fine-tune and distil differ only here).

    Attributes:
        config: the stage's :class:`~prunekit.train.TrainConfig` (its own epochs and LR).
        regularizers: e.g. :class:`~prunekit.train.BNL1Regularizer` for sparse training.
        distillation: a :class:`~prunekit.train.DistillationLoss` (a distil stage).
        callbacks: extra trainer callbacks.
    """

    config: TrainConfig
    regularizers: Sequence[Any] = ()
    distillation: Any = None
    callbacks: Sequence[Any] = field(default_factory=list)


def train_stage(
    bench: Workbench,
    name: str,
    out_dir: str | Path,
    start: StageResult | None,
    spec: TrainSpec,
    *,
    fingerprint: Mapping[str, Any],
    resume: bool = True,
    deadline: float | None = None,
) -> StageResult:
    """Train ``start``'s model (``None``: a fresh dense model) and save it as stage ``name``.

    Args:
        bench: the shared workbench.
        name: stage name.
        out_dir: stage folder (its trainer checkpoint lives in ``checkpoint/``).
        start: the stage whose model is trained (in place), or None for a fresh one.
        spec: config, regularizers, distillation and callbacks of the stage.
        fingerprint: settings the result depends on (checked when resuming).
        resume: reuse a finished stage / resume an interrupted one.
        deadline: ``time.monotonic()`` value; stop (raising :class:`StageInterrupted`) before an
            epoch that would end after it.

    Returns:
        The :class:`StageResult` (``summary``: acc, loss, top5, params, macs, epochs, seconds,
        train_img_per_s).
    """
    out = Path(out_dir)
    fp = _identity(fingerprint)
    done = reusable(out, fp, resume)
    if done is not None:
        return _load(bench, name, out, done)
    _begin(out, fp)
    model = start.model if start is not None else bench.build_model()
    record = start.record if start is not None else bench.record()
    callbacks = list(spec.callbacks)
    if deadline is not None:
        callbacks.append(Deadline(deadline, _epoch_hint(out)))
    trainer = Trainer(
        model,
        *bench.loaders(),
        spec.config,
        regularizers=list(spec.regularizers),
        distillation=spec.distillation,
        callbacks=callbacks,
    )
    result = trainer.fit(out, resume=resume)
    hist = result.history
    speeds = [r["img_per_s"] for r in (hist[1:] if len(hist) > 1 else hist)]
    summary = {
        "acc": hist[-1]["val_acc"],
        "loss": hist[-1]["val_loss"],
        "top5": hist[-1].get("val_top5"),
        "params": count_params(result.model),
        "macs": count_macs(result.model, bench.example_input().to(bench.device)),
        "epochs": spec.config.num_epochs,
        "seconds": sum(r["seconds"] for r in hist),
        "train_img_per_s": sum(speeds) / len(speeds),
    }
    return finish(name, out, result.model, record, fp, summary)


@dataclass
class Pruned:
    """What :func:`prune_model` produced: the model (pruned in place), plan, report, graph."""

    model: nn.Module
    plan: PruningPlan
    report: Any
    graph: DependencyGraph
    max_rel_diff: float


def prune_model(
    model: nn.Module, example: torch.Tensor, planner: Planner, *, verify: bool = True
) -> Pruned:
    """Trace ``model``, let ``planner`` choose the channels, remove them, check the result.

    Args:
        model: the model (pruned in place; pass a copy to keep it).
        example: an example input batch on the model's device.
        planner: ``fn(model, graph) -> (plan, report)``.
        verify: first check the plan on a copy (:func:`prunekit.verify.check_plan`: pruned
            equals soft mask within 1e-4, else :class:`~prunekit.errors.VerificationError` and
            the model is left as it was).

    Returns:
        A :class:`Pruned` (``max_rel_diff`` 0.0 when not verified).
    """
    graph = trace(model, example)
    plan, report = planner(model, graph)
    diff = check_plan(model, plan, example) if verify else 0.0
    apply_plan(model, plan)
    return Pruned(model, plan, report, graph, diff)


def prune_stage(
    bench: Workbench,
    name: str,
    out_dir: str | Path,
    start: StageResult,
    planner: Planner,
    *,
    fingerprint: Mapping[str, Any],
    resume: bool = True,
) -> StageResult:
    """Prune a copy-free ``start.model`` with ``planner``, evaluate it and save it.

    ``summary["report"]`` holds the planner's report; ``summary["acc"]`` the accuracy before
    fine-tuning. The saved record is ``start``'s plus the plan.
    """
    out = Path(out_dir)
    fp = _identity(fingerprint)
    done = reusable(out, fp, resume)
    if done is not None:
        return _load(bench, name, out, done)
    t0 = time.perf_counter()
    model = start.model
    pruned = prune_model(model, bench.example_input().to(bench.device), planner)
    seconds = time.perf_counter() - t0
    summary = {
        **bench.measure(model),
        "seconds": seconds,
        "max_rel_diff": pruned.max_rel_diff,
        "report": dict(pruned.report),
    }
    return finish(name, out, model, start.record.then(pruned.plan), fp, summary)


def convert_stage(
    bench: Workbench,
    name: str,
    out_dir: str | Path,
    start: StageResult | None,
    converter: Converter,
    *,
    fingerprint: Mapping[str, Any],
    resume: bool = True,
) -> StageResult:
    """Apply a structural conversion (e.g. Versatile Filters, BN folding) and save the result.

    ``start`` None converts a fresh dense model. The conversion is recorded, so the saved model
    reloads with :func:`prunekit.load`.
    """
    out = Path(out_dir)
    fp = _identity(fingerprint)
    done = reusable(out, fp, resume)
    if done is not None:
        return _load(bench, name, out, done)
    model = start.model if start is not None else bench.build_model()
    record = start.record if start is not None else bench.record()
    conversion = converter(model)
    summary = {**bench.measure(model), "conversion": conversion.kind}
    return finish(name, out, model, record.then(conversion), fp, summary)
