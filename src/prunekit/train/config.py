"""Typed training configuration.

Unknown keys are errors and ``None`` for any key means "use the default", so a config can be
built straight from a YAML/JSON mapping or from CLI flags left unset.

Example:
    >>> cfg = TrainConfig(epochs=160, lr=0.1, schedule="step")
    >>> cfg.momentum
    0.9
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from prunekit.config import Config
from prunekit.train.lr_schedule import BASE_SCHEDULES

CompileMode = Literal["none", "cuda-graphs", "reduce-overhead"]
OptimizerName = Literal["sgd", "adamw"]

# Network Slimming's CIFAR recipe (Liu et al. 2017): 160 epochs, ×0.1 at 50% and 75%.
DEFAULT_EPOCHS = 160
DEFAULT_SCHEDULE = "step"
# Fields that only change how a run is displayed, so a resumed run may change them freely.
COSMETIC_FIELDS = frozenset({"progress", "log_every", "eval_every", "tensorboard"})


class TrainConfig(Config):
    """Hyper-parameters and runtime switches of :class:`~prunekit.train.Trainer`.

    Args:
        epochs: number of passes over the training loader; ``None`` → 160 (a recipe derives it
            from its policies instead).
        optimizer: ``"sgd"`` (the Network Slimming recipe) or ``"adamw"``.
        lr: peak learning rate.
        momentum: SGD momentum (AdamW: beta1).
        nesterov: Nesterov momentum for SGD.
        weight_decay: L2 penalty (decoupled for AdamW).
        schedule: a name in :data:`prunekit.train.lr_schedule.BASE_SCHEDULES`: ``"step"`` (×gamma
            at ``milestones``; by default at 50% and 75% of the epochs, the Network Slimming
            reference), ``"onecycle"``, ``"cosine"`` or ``"constant"``; evaluated per iteration.
            ``None`` → ``"step"`` (``"constant"`` in a recipe whose LR policies drive the LR).
        milestones: ``step``: epochs at which the LR decays (instead of 50%/75%).
        step_size: ``step``: decay every this many epochs (instead of ``milestones``).
        gamma: ``step``: decay factor (0.1).
        warmup: epochs (may be fractional) of linear warm-up; for ``"onecycle"`` the length of
            the rising phase (default 30% of the run).
        label_smoothing: cross-entropy label smoothing.
        bf16: bfloat16 autocast; ``None`` → on when training on CUDA.
        channels_last: NHWC memory format; ``None`` → on when on CUDA and the model has 4-D convs.
        compile: ``"none"``, ``"cuda-graphs"`` (capture the whole train step, CUDA only) or
            ``"reduce-overhead"`` (``torch.compile(mode="reduce-overhead")``).
        seed: seed for python, numpy and torch RNGs.
        max_grad_norm: clip the global gradient norm to this value; ``None`` → no clipping.
        eval_every: evaluate every this many epochs (the last epoch is always evaluated).
        log_every: refresh the progress-bar loss every this many iterations.
        progress: show tqdm progress bars (also off when stderr is not a TTY).
        tensorboard: also log each epoch's metrics to ``<run>/tensorboard``; ``None`` → when the
            ``tensorboard`` package is installed (``prunekit[tensorboard]``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``…; ``None`` → CUDA when available.
    """

    what: ClassVar[str] = "training option"

    epochs: int | None = Field(None, ge=1)
    optimizer: OptimizerName = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(1e-4, ge=0)
    schedule: str | None = None
    milestones: list[int] | None = None
    step_size: int | None = Field(None, ge=1)
    gamma: float = Field(0.1, gt=0)
    warmup: float = Field(0.0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    bf16: bool | None = None
    channels_last: bool | None = None
    compile: CompileMode = "none"
    seed: int = 0
    max_grad_norm: float | None = Field(None, gt=0)
    eval_every: int = Field(1, ge=1)
    log_every: int = Field(50, ge=1)
    progress: bool = True
    tensorboard: bool | None = None
    device: str | None = None

    @field_validator("schedule")
    @classmethod
    def _known_schedule(cls, v: str | None) -> str | None:
        if v is not None and v not in BASE_SCHEDULES:
            raise ValueError(f"unknown schedule; use one of {', '.join(BASE_SCHEDULES.names())}")
        return v

    @field_validator("milestones")
    @classmethod
    def _sorted_milestones(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (any(m < 0 for m in v) or v != sorted(set(v))):
            raise ValueError("milestones must be increasing epochs >= 0")
        return v

    @model_validator(mode="after")
    def _step_options_need_step(self) -> TrainConfig:
        step = self.schedule in (None, "step")
        if not step and (self.milestones is not None or self.step_size is not None):
            raise ValueError(
                f"milestones/step_size shape a 'step' schedule, but schedule is {self.schedule!r}"
            )
        if self.milestones is not None and self.step_size is not None:
            raise ValueError("give either milestones or step_size, not both")
        return self

    @property
    def num_epochs(self) -> int:
        """``epochs``, or its default (160, the Network Slimming recipe) when unset."""
        return DEFAULT_EPOCHS if self.epochs is None else self.epochs

    @property
    def schedule_name(self) -> str:
        """``schedule``, or its default (``"step"``) when unset."""
        return DEFAULT_SCHEDULE if self.schedule is None else self.schedule

    def differences(self, other: TrainConfig) -> list[str]:
        """Names of non-cosmetic fields whose values differ (used to validate a resume)."""
        mine, theirs = self.to_dict(), other.to_dict()
        return sorted(k for k in mine if k not in COSMETIC_FIELDS and mine[k] != theirs[k])
