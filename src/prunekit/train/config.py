"""Typed training configuration.

Unknown keys are errors and ``None`` for any key means "use the default", so a config can be
built straight from a YAML/JSON mapping or from CLI flags left unset.

Example:
    >>> cfg = TrainConfig(epochs=160, lr=0.1, schedule="step")
    >>> cfg.momentum
    0.9
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from prunekit.errors import ConfigError

Schedule = Literal["step", "onecycle", "cosine", "constant"]
CompileMode = Literal["none", "cuda-graphs", "reduce-overhead"]
OptimizerName = Literal["sgd", "adamw"]

# Fields that only change how a run is displayed, so a resumed run may change them freely.
COSMETIC_FIELDS = frozenset({"progress", "log_every", "eval_every"})


class TrainConfig(BaseModel):
    """Hyper-parameters and runtime switches of :class:`~prunekit.train.Trainer`.

    Args:
        epochs: number of passes over the training loader.
        optimizer: ``"sgd"`` (the Network Slimming recipe) or ``"adamw"``.
        lr: peak learning rate.
        momentum: SGD momentum (AdamW: beta1).
        nesterov: Nesterov momentum for SGD.
        weight_decay: L2 penalty (decoupled for AdamW).
        schedule: ``"step"`` (×0.1 at 50% and 75% of the epochs, the Network Slimming
            reference), ``"onecycle"``, ``"cosine"`` or ``"constant"``; evaluated per iteration.
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
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``…; ``None`` → CUDA when available.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    epochs: int = Field(160, ge=1)
    optimizer: OptimizerName = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(1e-4, ge=0)
    schedule: Schedule = "step"
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
    device: str | None = None

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None

    @model_validator(mode="before")
    @classmethod
    def _none_means_default(cls, data: Any) -> Any:
        # Dropping explicit Nones lets pydantic fill in the declared default for that field.
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> TrainConfig:
        """Build a config from a plain mapping (e.g. a YAML section); ``None`` → all defaults."""
        return cls(**(data or {}))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able mapping of every field."""
        return self.model_dump(mode="json")

    def differences(self, other: TrainConfig) -> list[str]:
        """Names of non-cosmetic fields whose values differ (used to validate a resume)."""
        mine, theirs = self.to_dict(), other.to_dict()
        return sorted(k for k in mine if k not in COSMETIC_FIELDS and mine[k] != theirs[k])


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        if err["type"] == "extra_forbidden":
            known = ", ".join(TrainConfig.model_fields)
            parts.append(f"unknown training option {loc!r}; known options: {known}")
        else:
            parts.append(f"training option {loc!r}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(parts)
