"""prunekit's native recipe format: typed, validated YAML describing a whole pruning run.

A recipe says *what* (model, data, training, named pruners / regularizers / LR schedules,
distillation) and *when* (``policies``: which named item acts from epoch A to B every F epochs,
the same semantics as Intel Distiller's policies — ``ending_epoch`` is exclusive). Unknown keys
are errors; ``None`` (or leaving a key out) means "use the default". See ``docs/recipes.md``.

Example:
    >>> recipe = load_native("examples/recipes/resnet18_l1_filters_agp.yaml")
    >>> recipe.pruners["filters"].final_sparsity
    0.5
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)
from torch.optim import lr_scheduler

from prunekit.errors import ConfigError
from prunekit.recipes._source import (
    RecipeValueError,
    SourceMap,
    format_validation_error,
    raise_problems,
    read_yaml,
)
from prunekit.record import ModelRecord
from prunekit.schedules import SCHEDULES
from prunekit.train.config import TrainConfig
from prunekit.versatile.convert import VersatileConfig, versatile_record

# ---------------------------------------------------------------------------------------------
# constrained scalars (messages read "'<field>' in <where> must be …, got …")
# ---------------------------------------------------------------------------------------------


def _fraction(v: float) -> float:
    if not 0.0 <= v < 1.0:
        raise ValueError(f"must be in [0, 1), got {v}")
    return v


def _unit(v: float) -> float:
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"must be in [0, 1], got {v}")
    return v


def _positive(v: float) -> float:
    if not v > 0:
        raise ValueError(f"must be > 0, got {v}")
    return v


def _non_negative(v: float) -> float:
    if not v >= 0:
        raise ValueError(f"must be >= 0, got {v}")
    return v


Fraction = Annotated[float, AfterValidator(_fraction)]
Unit = Annotated[float, AfterValidator(_unit)]
PositiveFloat = Annotated[float, AfterValidator(_positive)]
NonNegFloat = Annotated[float, AfterValidator(_non_negative)]
PositiveInt = Annotated[int, AfterValidator(_positive)]
NonNegInt = Annotated[int, AfterValidator(_non_negative)]
Globs = list[str]


def _criterion(v: str) -> str:
    from prunekit.importance import CRITERIA  # the registry: a newly registered name is valid

    if v not in CRITERIA:
        raise ValueError(f"must be a registered criterion ({', '.join(CRITERIA.names())})")
    return v


def _schedule(v: str) -> str:
    if v not in SCHEDULES:
        raise ValueError(f"must be a pruning schedule ({', '.join(SCHEDULES.names())})")
    return v


def _allocator(v: str) -> str:
    from prunekit.allocators import ALLOCATORS

    if v not in ALLOCATORS or ALLOCATORS.get(v).takes_target:
        plain = [n for n in ALLOCATORS.names() if not ALLOCATORS.get(n).takes_target]
        raise ValueError(f"must be a registered allocator without a target ({', '.join(plain)})")
    return v


Criterion = Annotated[str, AfterValidator(_criterion)]
Allocator = Annotated[str, AfterValidator(_allocator)]
ScheduleName = Annotated[str, AfterValidator(_schedule)]


class StrictModel(BaseModel):
    """Base of all recipe sections: unknown keys are errors, no silent type coercion."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=False)


# ---------------------------------------------------------------------------------------------
# model / data / training / distillation
# ---------------------------------------------------------------------------------------------


class ModelSection(StrictModel):
    """Which network to build (``prunekit.models.build_model(spec, **kwargs)``).

    ``model: zoo:vgg19`` is shorthand for ``model: {spec: zoo:vgg19}``. ``versatile:`` builds it
    with Versatile Filters (``{mode: spatial}``; :class:`prunekit.versatile.VersatileConfig`).
    """

    spec: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    input_shape: list[PositiveInt] | None = None  # None: (1, 3, 224, 224); used for tracing
    checkpoint: str | None = None  # a prunekit.io.save directory with dense weights to start from
    versatile: VersatileConfig | None = None  # None: the spec's own layers

    def record(self) -> ModelRecord:
        """How this section's model is made: the spec, plus the versatile conversion if any."""
        return versatile_record(ModelRecord(self.spec, self.kwargs), self.versatile)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"spec": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _check_spec(self) -> ModelSection:
        if ":" not in self.spec:
            raise RecipeValueError(
                f"model spec {self.spec!r} needs a namespace, e.g. 'torchvision:{self.spec}' "
                f"or 'zoo:{self.spec}'",
                ("spec",),
            )
        if self.versatile is not None and self.checkpoint is not None:
            raise RecipeValueError(
                "'versatile' builds a fresh model; a 'checkpoint' is loaded as it was saved "
                "(save a versatile model to use it as a checkpoint)",
                ("versatile",),
            )
        return self


class DataSection(StrictModel):
    """Dataset spec (passed to ``prunekit.data.load_dataset``) and loader settings."""

    dataset: str
    batch_size: PositiveInt = 128
    eval_batch_size: PositiveInt | None = None  # None: same as batch_size
    augment: bool = True
    workers: PositiveInt | None = None  # image-decoding processes (None: all cores, max 16)


class DistillationSection(StrictModel):
    """Knowledge distillation from a teacher (Hinton et al. 2015, arXiv:1503.02531).

    ``teacher: dense`` uses a frozen copy of the model before any pruning; otherwise a
    ``prunekit.io.save`` directory. Loss = alpha·T²·KL(student_T ‖ teacher_T) + (1-alpha)·CE.
    """

    teacher: str = "dense"
    temperature: PositiveFloat = 4.0
    alpha: Unit = 0.9


# ---------------------------------------------------------------------------------------------
# pruners (discriminated on ``method``)
# ---------------------------------------------------------------------------------------------


class _PrunerBase(StrictModel):
    params: Globs | None = None  # fnmatch globs over parameter names (Distiller "weights")
    modules: Globs | None = None  # globs over module names; selects each module's weight
    ignore: Globs | None = None  # globs over parameter or module names to leave alone

    def sparsity_range(self) -> tuple[float, float] | None:
        """(initial, final) sparsity for scheduled pruners, None for threshold pruners."""
        return None

    def describe(self) -> str:
        """One line for ``prunekit recipe check``: what this pruner does."""
        raise NotImplementedError

    def value_table(self) -> tuple[str | None, dict[str, float] | None, float | None]:
        """(field name, glob → value table, default value) of the per-tensor values."""
        return None, None, None

    @property
    def quantity(self) -> str:
        """What an event's per-tensor values are: ``sparsity``, ``threshold`` (absolute
        |w|), ``sensitivity`` (× std) or ``random_level`` (drawn from ``level_range``)."""
        return "sparsity"

    def event_values(
        self, epoch: int, span: tuple[int, int, int], values: dict[str, float]
    ) -> dict[str, float]:
        """Per-tensor values of the event at ``epoch`` of a policy ``span`` = (start, exclusive
        end, frequency); the kinds whose value changes with the epoch override this."""
        return values

    def level_bounds(self) -> tuple[float, float] | None:
        """``[low, high]`` of a ``random_level`` pruner's per-event draw (None: not one)."""
        return None

    def pool(self, universe: Any) -> tuple[tuple[str, ...], str]:
        """The tensors this kind may select (from a ``_targets.Universe``), and their name."""
        if set(universe.elements) == set(universe.weights):
            return universe.elements, "conv/linear weight"
        return universe.elements, "weight (conv, linear, RNN or embedding)"


def _span(p: _SparsityTarget) -> str:
    if p.final_sparsity is not None:
        return f"{p.initial_sparsity:.0%}→{p.final_sparsity:.0%}"
    return "per tensor"


class _SparsityTarget(_PrunerBase):
    schedule: ScheduleName = "one_shot"
    initial_sparsity: Fraction = 0.0
    final_sparsity: Fraction | None = None

    def sparsity_range(self) -> tuple[float, float] | None:
        if self.final_sparsity is None:
            return None
        return self.initial_sparsity, self.final_sparsity

    def _check_range(self) -> None:
        if self.final_sparsity is not None and self.initial_sparsity > self.final_sparsity:
            raise RecipeValueError(
                f"initial_sparsity {self.initial_sparsity} > final_sparsity "
                f"{self.final_sparsity}; sparsity only grows",
                ("initial_sparsity",),
            )


class MagnitudePrunerConfig(_SparsityTarget):
    """Unstructured: zero the smallest-|w| weights (Han et al. 2015, arXiv:1506.02626).

    Give ``final_sparsity`` (per tensor, or over all selected tensors with
    ``global_ranking``), and/or per-parameter ``levels`` (glob → sparsity), or absolute
    ``thresholds`` (glob → |w| cut-off, Distiller's MagnitudeParameterPruner).
    """

    method: Literal["magnitude"]
    levels: dict[str, Fraction] | None = None
    thresholds: dict[str, NonNegFloat] | None = None
    global_ranking: bool = False
    # How a sparsity becomes a count: round(s·n) or floor(s·n) (Distiller's int(s·n)).
    rounding: Literal["round", "floor"] = "round"
    # Rank |w·γ/sqrt(var+eps)|, the weights with their following BatchNorm folded in (Distiller's
    # fold_batchnorm policy argument).
    fold_bn: bool = False

    @model_validator(mode="after")
    def _check(self) -> MagnitudePrunerConfig:
        self._check_range()
        if self.thresholds is not None and (self.final_sparsity, self.levels) != (None, None):
            raise RecipeValueError(
                "use either 'thresholds' or 'final_sparsity'/'levels', not both", ("thresholds",)
            )
        if self.thresholds is None and self.final_sparsity is None and self.levels is None:
            raise RecipeValueError("needs 'final_sparsity' (or 'levels' or 'thresholds')")
        if self.global_ranking and self.levels is not None:
            raise RecipeValueError(
                "'global_ranking' ranks all tensors together; per-tensor 'levels' contradict it",
                ("global_ranking",),
            )
        if self.schedule == "agp" and self.final_sparsity is None and self.levels is None:
            raise RecipeValueError("schedule 'agp' needs 'final_sparsity'", ("schedule",))
        if self.fold_bn and (self.thresholds is not None or self.global_ranking):
            raise RecipeValueError(
                "fold_bn ranks each tensor's folded weights; it cannot go with 'thresholds' or "
                "'global_ranking'",
                ("fold_bn",),
            )
        return self

    def describe(self) -> str:
        if self.thresholds is not None:
            return "magnitude |w| < threshold"
        final = "per tensor" if self.levels else f"{self.final_sparsity:.0%}"
        scope = " global" if self.global_ranking else ""
        return f"magnitude{scope}, {self.schedule} {self.initial_sparsity:.0%}→{final}"

    def value_table(self) -> tuple[str | None, dict[str, float] | None, float | None]:
        if self.thresholds is not None:
            return "thresholds", self.thresholds, None
        return "levels", self.levels, self.final_sparsity

    @property
    def quantity(self) -> str:
        return "threshold" if self.thresholds is not None else "sparsity"


class StdThresholdPrunerConfig(_PrunerBase):
    """Unstructured: zero |w| < s·std(W) per tensor (Han et al. 2015; Distiller's
    SensitivityPruner). ``sensitivity`` is the default s; ``sensitivities`` maps globs to s.
    ``iterative`` re-applies the threshold at every active epoch."""

    method: Literal["std_threshold"]
    schedule: Literal["one_shot", "iterative"] = "one_shot"
    sensitivity: PositiveFloat | None = None
    sensitivities: dict[str, PositiveFloat] | None = None
    # "current": std(W) of the weights at every event; "first": taken once, at the pruner's
    # first event, and its threshold reused (Distiller's SensitivityPruner).
    std: Literal["current", "first"] = "current"

    @model_validator(mode="after")
    def _check(self) -> StdThresholdPrunerConfig:
        if self.sensitivity is None and not self.sensitivities:
            raise RecipeValueError("needs 'sensitivity' (or per-parameter 'sensitivities')")
        return self

    def describe(self) -> str:
        return f"std_threshold |w| < s·std, {self.schedule}"

    def value_table(self) -> tuple[str | None, dict[str, float] | None, float | None]:
        return "sensitivities", self.sensitivities, self.sensitivity

    @property
    def quantity(self) -> str:
        return "sensitivity"


class StructuredPrunerConfig(_SparsityTarget):
    """Structured: remove whole filters/channels through the dependency graph.

    ``target: filters`` prunes the groups holding the selected weights' output dim,
    ``channels`` their input dim (Distiller's group_type Filters/Channels, Rows/Cols for
    Linear). Coupled layers are always pruned together (Distiller's ``group_dependency:
    Leader`` is implied). Pruning is soft (zeroed, masked) while training; ``surgery`` slices
    the model at the end of the run.
    """

    method: Literal["structured"]
    criterion: Criterion = "l1"
    target: Literal["filters", "channels"] = "filters"
    global_ranking: bool = False
    allocator: Allocator | None = None  # None: global with global_ranking, else local
    round_to: PositiveInt | None = None
    floor: PositiveInt = 1
    surgery: bool = True
    # "group": every slot of a coupled group scores its units; "own": a group is ranked by the
    # first selected weight that holds it, on that weight's own filters/channels alone (what
    # Distiller's ranked pruners do, its group_dependency Leader), counting int(s·n) units.
    ranking: Literal["group", "own"] = "group"
    # Rank BN-folded weights, w·γ/sqrt(var+eps) of the BatchNorm right after the layer
    # (Distiller's fold_batchnorm; "own" ranking with l1/l2 only).
    fold_bn: bool = False
    # Per-weight fractions (glob → sparsity); a group takes the level of the weight that ranks it.
    levels: dict[str, Fraction] | None = None

    @model_validator(mode="after")
    def _check(self) -> StructuredPrunerConfig:
        self._check_range()
        if self.final_sparsity is None and self.levels is None:
            raise RecipeValueError("needs 'final_sparsity' (or 'levels')", ("final_sparsity",))
        if self.fold_bn and (self.ranking != "own" or self.criterion not in ("l1", "l2")):
            raise RecipeValueError(
                "fold_bn ranks a layer's own BN-folded weights: it needs ranking 'own' and "
                "criterion 'l1' or 'l2'",
                ("fold_bn",),
            )
        return self

    def describe(self) -> str:
        return (
            f"structured {self.criterion} {self.target}"
            f"{' global' if self.global_ranking else ''}"
            f"{' own-ranked' if self.ranking == 'own' else ''}, {self.schedule} {_span(self)}"
        )

    def value_table(self) -> tuple[str | None, dict[str, float] | None, float | None]:
        return "levels", self.levels, self.final_sparsity

    def pool(self, universe: Any) -> tuple[tuple[str, ...], str]:
        return universe.weights, "conv/linear weight"


class SlimPrunerConfig(_PrunerBase):
    """Network Slimming (Liu et al. 2017, arXiv:1708.06519): prune the ``percent`` of channels
    with the smallest |BN scale| under one global threshold. ``modules`` select BN layers
    (default: all). Pair with a ``bn_l1`` regularizer during training."""

    method: Literal["slim"]
    percent: Fraction
    schedule: ScheduleName = "one_shot"
    floor: PositiveInt = 1
    round_to: PositiveInt | None = None
    surgery: bool = True

    def sparsity_range(self) -> tuple[float, float] | None:
        return 0.0, self.percent

    def describe(self) -> str:
        return f"slim (global BN-scale threshold), {self.schedule} → {self.percent:.0%}"

    def pool(self, universe: Any) -> tuple[tuple[str, ...], str]:
        return universe.bn, "BatchNorm scale"


class GroupPrunerConfig(_SparsityTarget):
    """Zero whole structures inside each selected tensor, ranked by their L1/L2 norm (or at
    random), without the dependency graph and never sliced: filters, channels, rows / cols of a
    2-D weight, kernels (one (filter, channel) slice of a conv) or blocks (Distiller's
    ``block_shape`` ``[repetitions, depth, 1, 1]``). Counts are ``int(s·n)`` structures.

    Instead of a sparsity: ``thresholds`` (glob → cut-off) zero the structures whose mean |w|
    (``threshold_norm: mean_abs``) or max |w| (``max``) is at most the cut-off (Distiller's
    StructureParameterPruner); ``level_range`` draws each event's sparsity uniformly per tensor
    (Distiller's RandomLevelStructureParameterPruner). ``criterion: bernoulli`` keeps each
    structure with probability 1 − s and scales the kept ones by n/kept (DropFilter; needs a
    policy with ``masking: {forward_only: true}``).
    """

    method: Literal["group"]
    group: Literal["filters", "channels", "rows", "cols", "kernels", "blocks"]
    criterion: Literal["l1", "l2", "random", "bernoulli"] = "l1"
    block_shape: list[PositiveInt] | None = None
    levels: dict[str, Fraction] | None = None
    thresholds: dict[str, NonNegFloat] | None = None
    threshold_norm: Literal["mean_abs", "max"] = "mean_abs"
    level_range: list[Fraction] | None = None

    @model_validator(mode="after")
    def _check(self) -> GroupPrunerConfig:
        self._check_range()
        given = [
            k
            for k in ("final_sparsity", "levels", "thresholds", "level_range")
            if getattr(self, k) is not None
        ]
        if not given:
            raise RecipeValueError(
                "needs 'final_sparsity' (or 'levels', 'thresholds' or 'level_range')"
            )
        if "thresholds" in given and len(given) > 1:
            raise RecipeValueError(
                "'thresholds' cannot be combined with sparsities", ("thresholds",)
            )
        if (self.group == "blocks") != (self.block_shape is not None):
            raise RecipeValueError(
                "'block_shape' goes with group 'blocks' (and 'blocks' needs one)", ("block_shape",)
            )
        if self.block_shape is not None and (
            len(self.block_shape) != 4 or self.block_shape[2:] != [1, 1]
        ):
            raise RecipeValueError(
                f"block_shape must be [repetitions, depth, 1, 1], got {self.block_shape}",
                ("block_shape",),
            )
        if self.level_range is not None and (
            len(self.level_range) != 2 or self.level_range[0] > self.level_range[1]
        ):
            raise RecipeValueError(
                f"level_range must be [low, high] with low <= high, got {self.level_range}",
                ("level_range",),
            )
        return self

    def sparsity_range(self) -> tuple[float, float] | None:
        if self.level_range is not None:
            return None
        return super().sparsity_range()

    def describe(self) -> str:
        if self.thresholds is not None:
            return f"group {self.group} with {self.threshold_norm} <= threshold"
        if self.level_range is not None:
            lo, hi = self.level_range
            return f"group {self.criterion} {self.group} at a random {lo:.0%}–{hi:.0%}"
        return f"group {self.criterion} {self.group}, {self.schedule} {_span(self)}"

    def value_table(self) -> tuple[str | None, dict[str, float] | None, float | None]:
        if self.thresholds is not None:
            return "thresholds", self.thresholds, None
        return "levels", self.levels, self.final_sparsity

    @property
    def quantity(self) -> str:
        if self.thresholds is not None:
            return "threshold"
        return "random_level" if self.level_range is not None else "sparsity"

    def level_bounds(self) -> tuple[float, float] | None:
        lr = self.level_range
        return None if lr is None else (lr[0], lr[1])

    def pool(self, universe: Any) -> tuple[tuple[str, ...], str]:
        return universe.weights, "conv/linear weight"


class SplicingPrunerConfig(_PrunerBase):
    """Dynamic network surgery (Guo et al. 2016, arXiv:1608.04493, eq. 3): at every event a
    weight is pruned when |w| < a, spliced back when |w| >= b, and keeps its state in between,
    with a = (mean|W| + s·std|W|)·``low`` and b = (…)·``high`` — mean and std of |W| taken once,
    at the pruner's first event; s grows by ``growth`` per epoch of its policy,
    s_t = s·(1 + growth·(t − start)) (Distiller's SplicingPruner). Pair it with a policy
    ``masking: {forward_only: true, every_steps: 1}`` so pruned weights keep training and can
    come back."""

    method: Literal["splicing"]
    sensitivity: PositiveFloat | None = None
    sensitivities: dict[str, PositiveFloat] | None = None
    low: PositiveFloat
    high: PositiveFloat
    growth: NonNegFloat = 0.0

    @model_validator(mode="after")
    def _check(self) -> SplicingPrunerConfig:
        if self.sensitivity is None and not self.sensitivities:
            raise RecipeValueError("needs 'sensitivity' (or per-parameter 'sensitivities')")
        if self.low > self.high:
            raise RecipeValueError(
                f"low {self.low} > high {self.high}: a weight above b must be above a", ("low",)
            )
        return self

    def describe(self) -> str:
        return (
            f"splicing |w| < a cut, >= b back (a, b = mean+s·std times {self.low:g}, "
            f"{self.high:g})"
        )

    def value_table(self) -> tuple[str | None, dict[str, float] | None, float | None]:
        return "sensitivities", self.sensitivities, self.sensitivity

    @property
    def quantity(self) -> str:
        return "sensitivity"

    def event_values(
        self, epoch: int, span: tuple[int, int, int], values: dict[str, float]
    ) -> dict[str, float]:
        grow = 1.0 + self.growth * (epoch - span[0])  # Distiller's sensitivity_multiplier
        return {p: v * grow for p, v in values.items()}


class RampThresholdPrunerConfig(_PrunerBase):
    """Narang et al. 2017, "Exploring Sparsity in Recurrent Neural Networks" (arXiv:1704.05119,
    eq. 1; Distiller's BaiduRNNPruner): an absolute |w| threshold that grows linearly through the
    policy, with slope θ = 2·q·f / (2·(ramp − start) + 3·(end − ramp)) until ``ramp_epoch`` and
    ``ramp_slope_mult``·θ after it (``f`` the policy's frequency, ``end`` its ending epoch)."""

    method: Literal["ramp_threshold"]
    q: PositiveFloat
    ramp_epoch: NonNegInt
    ramp_slope_mult: PositiveFloat

    def describe(self) -> str:
        return f"ramp_threshold q={self.q:g}, ramp at epoch {self.ramp_epoch}"

    @property
    def quantity(self) -> str:
        return "threshold"

    def event_values(
        self, epoch: int, span: tuple[int, int, int], values: dict[str, float]
    ) -> dict[str, float]:
        return dict.fromkeys(values, self.threshold_at(epoch, *span))

    def threshold_at(self, epoch: int, start: int, end: int, freq: int) -> float:
        """The threshold ε at ``epoch`` of a policy ``[start, end)`` every ``freq`` epochs
        (Narang et al. 2017 eq. 1 with Distiller's epoch counting)."""
        ramp = self.ramp_epoch
        denom = 2 * (ramp - start) + 3 * (end - ramp)
        if denom <= 0:
            raise ConfigError(
                f"ramp_threshold: 2·(ramp_epoch − start) + 3·(end − ramp_epoch) = {denom} for "
                f"start={start}, end={end}, ramp_epoch={ramp}; put ramp_epoch inside the policy"
            )
        slope = 2 * self.q * freq / denom
        if epoch < ramp:
            return slope * (epoch - start + 1) / freq
        ramp_slope = slope * self.ramp_slope_mult
        return (slope * (ramp - start + 1) + ramp_slope * (epoch - ramp + 1)) / freq


PrunerConfig = Annotated[
    MagnitudePrunerConfig
    | StdThresholdPrunerConfig
    | StructuredPrunerConfig
    | SlimPrunerConfig
    | GroupPrunerConfig
    | SplicingPrunerConfig
    | RampThresholdPrunerConfig,
    Field(discriminator="method"),
]


# ---------------------------------------------------------------------------------------------
# regularizers (discriminated on ``kind``) and LR schedules
# ---------------------------------------------------------------------------------------------


class BNL1RegularizerConfig(StrictModel):
    """λ·Σ|γ| over BatchNorm scales — the sparsity term of Network Slimming (Liu et al. 2017)."""

    kind: Literal["bn_l1"]
    strength: PositiveFloat
    modules: Globs | None = None  # BN module globs; None: all BN layers


class L1RegularizerConfig(StrictModel):
    """Σ λ_p·Σ|w| over selected tensors (Distiller's L1Regularizer ``reg_regims``)."""

    kind: Literal["l1"]
    strength: NonNegFloat | None = None  # default λ for ``params`` not in ``strengths``
    strengths: dict[str, NonNegFloat] | None = None  # glob → λ
    params: Globs | None = None
    # Distiller's threshold_criteria: after every optimizer step of an active epoch, zero the
    # entries with |w| <= λ (once; they may grow back unless the policy's masking keeps them).
    threshold: Literal["mean_abs", "max"] | None = None

    @model_validator(mode="after")
    def _check(self) -> L1RegularizerConfig:
        if self.strength is None and not self.strengths:
            raise RecipeValueError("needs 'strength' (or per-parameter 'strengths')")
        return self


LassoGroup = Literal["filters", "channels", "rows", "cols", "kernels", "layer"]


class GroupLassoRegularizerConfig(StrictModel):
    """Σ λ·Σ_g ‖w_g‖₂ (Yuan & Lin 2006; Wen et al. 2016, arXiv:1608.03665 — Distiller's
    GroupLassoRegularizer). Groups: ``filters`` (output slices), ``channels`` (input slices),
    ``rows`` / ``cols`` of a 2-D weight, ``kernels`` (one (filter, channel) 2-D kernel of a
    conv, Distiller's 2D), ``layer`` (the whole tensor, Distiller's 4D). ``groups`` maps globs to
    a group (or a list of groups, summed) per parameter. ``threshold``: after every optimizer
    step of an active epoch, zero the groups whose mean |w| (``mean_abs``) or max |w| is <= λ
    (Distiller's threshold_criteria)."""

    kind: Literal["group_lasso"]
    group: LassoGroup = "filters"
    groups: dict[str, LassoGroup | list[LassoGroup]] | None = None
    strength: NonNegFloat | None = None
    strengths: dict[str, NonNegFloat] | None = None
    params: Globs | None = None
    threshold: Literal["mean_abs", "max"] | None = None

    @model_validator(mode="after")
    def _check(self) -> GroupLassoRegularizerConfig:
        if self.strength is None and not self.strengths:
            raise RecipeValueError("needs 'strength' (or per-parameter 'strengths')")
        kinds = [self.group, *(self.groups or {}).values()]
        if self.threshold is not None and any(isinstance(k, list) or k == "layer" for k in kinds):
            raise RecipeValueError(
                "'threshold' zeroes one kind of group per tensor; it cannot go with combined "
                "groups (a list) or 'layer'",
                ("threshold",),
            )
        return self


class GroupVarianceRegularizerConfig(StrictModel):
    """λ / Var_c(‖w_c‖₂) over the input channels c of each selected conv weight: rewards
    channel norms that spread apart, so some channels can be pruned (Torfi et al. 2018,
    arXiv:1802.09902 — Distiller's GroupVarianceRegularizer, group Channels)."""

    kind: Literal["group_variance"]
    strength: NonNegFloat | None = None
    strengths: dict[str, NonNegFloat] | None = None
    params: Globs | None = None

    @model_validator(mode="after")
    def _check(self) -> GroupVarianceRegularizerConfig:
        if self.strength is None and not self.strengths:
            raise RecipeValueError("needs 'strength' (or per-parameter 'strengths')")
        return self


RegularizerConfig = Annotated[
    BNL1RegularizerConfig | L1RegularizerConfig | GroupLassoRegularizerConfig | GroupVarianceRegularizerConfig,
    Field(discriminator="kind"),
]


class _LRPolicySchedule(StrictModel):
    """Base of the named LR schedules a policy steps at the end of its active epochs.

    ``counting`` says which epoch count the schedule reads: ``active`` (default) — the torch
    scheduler is stepped once per active epoch, so a policy starting at epoch 30 begins its
    decay there; ``absolute`` — Distiller's semantics (``step(epoch=current_epoch + 1)``): at
    the end of an active epoch ``e`` the LR becomes the schedule's closed form at ``e + 1``, so
    a late policy jumps straight to where the schedule would be (Distiller files use this).
    """

    counting: Literal["active", "absolute"] = "active"

    def scheduler(self, opt: Any) -> Any:
        """The torch scheduler (``active`` counting)."""
        raise NotImplementedError

    def factor(self, epoch: int) -> float:
        """The schedule's closed form: LR / base LR after ``epoch`` epochs."""
        raise NotImplementedError


class StepLRSchedule(_LRPolicySchedule):
    """``torch.optim.lr_scheduler.StepLR``: ×gamma every ``step_size`` epochs."""

    kind: Literal["step"]
    step_size: PositiveInt
    gamma: PositiveFloat = 0.1

    def scheduler(self, opt: Any) -> Any:
        return lr_scheduler.StepLR(opt, step_size=self.step_size, gamma=self.gamma)

    def factor(self, epoch: int) -> float:
        return float(self.gamma ** (epoch // self.step_size))


class MultiStepLRSchedule(_LRPolicySchedule):
    """``MultiStepLR``: ×gamma at each milestone."""

    kind: Literal["multistep"]
    milestones: list[NonNegInt]
    gamma: PositiveFloat = 0.1

    def scheduler(self, opt: Any) -> Any:
        return lr_scheduler.MultiStepLR(opt, milestones=self.milestones, gamma=self.gamma)

    def factor(self, epoch: int) -> float:
        return float(self.gamma ** sum(m <= epoch for m in self.milestones))


class ExponentialLRSchedule(_LRPolicySchedule):
    """``ExponentialLR``: lr ← lr·gamma after each epoch."""

    kind: Literal["exponential"]
    gamma: PositiveFloat

    def scheduler(self, opt: Any) -> Any:
        return lr_scheduler.ExponentialLR(opt, gamma=self.gamma)

    def factor(self, epoch: int) -> float:
        return float(self.gamma**epoch)


class CosineLRSchedule(_LRPolicySchedule):
    """``CosineAnnealingLR`` over ``t_max`` epochs (Loshchilov & Hutter 2017)."""

    kind: Literal["cosine"]
    t_max: PositiveInt
    eta_min: NonNegFloat = 0.0

    def scheduler(self, opt: Any) -> Any:
        return lr_scheduler.CosineAnnealingLR(opt, T_max=self.t_max, eta_min=self.eta_min)

    def factor(self, epoch: int) -> float:
        # Relative to a base LR of 1, the closed form torch documents.
        return self.eta_min + (1.0 - self.eta_min) * (1 + math.cos(math.pi * epoch / self.t_max)) / 2


class PolynomialLRSchedule(_LRPolicySchedule):
    """``PolynomialLR``: lr·(1 - t/total_iters)^power."""

    kind: Literal["polynomial"]
    total_iters: PositiveInt
    power: PositiveFloat = 1.0

    def scheduler(self, opt: Any) -> Any:
        return lr_scheduler.PolynomialLR(opt, total_iters=self.total_iters, power=self.power)

    def factor(self, epoch: int) -> float:
        return float((1.0 - min(epoch, self.total_iters) / self.total_iters) ** self.power)


class MultiStepGammasLRSchedule(_LRPolicySchedule):
    """Distiller's ``MultiStepMultiGammaLR``: at ``milestones[i]`` the LR is multiplied by
    ``gammas[i]``."""

    kind: Literal["multistep_gammas"]
    milestones: list[NonNegInt]
    gammas: list[PositiveFloat]

    @model_validator(mode="after")
    def _check(self) -> MultiStepGammasLRSchedule:
        if len(self.milestones) != len(self.gammas):
            raise RecipeValueError(
                f"{len(self.milestones)} milestones but {len(self.gammas)} gammas; give one "
                "gamma per milestone",
                ("gammas",),
            )
        if self.milestones != sorted(self.milestones):
            raise RecipeValueError("milestones must increase", ("milestones",))
        return self

    def scheduler(self, opt: Any) -> Any:
        return lr_scheduler.LambdaLR(opt, lambda e: self.factor(e))

    def factor(self, epoch: int) -> float:
        return float(math.prod(g for m, g in zip(self.milestones, self.gammas) if m <= epoch))


LRScheduleConfig = Annotated[
    StepLRSchedule
    | MultiStepLRSchedule
    | ExponentialLRSchedule
    | CosineLRSchedule
    | PolynomialLRSchedule
    | MultiStepGammasLRSchedule,
    Field(discriminator="kind"),
]


# ---------------------------------------------------------------------------------------------
# policies and the recipe
# ---------------------------------------------------------------------------------------------


def check_epoch_range(
    start: int | None, end: int | None, frequency: int | None, epochs: list[int] | None
) -> None:
    """Validate a policy's epoch fields (shared with the Distiller schema).

    Raises:
        RecipeValueError: both forms given, an empty list, or ``ending_epoch <= starting_epoch``.
    """
    ranged = (start, end, frequency) != (None, None, None)
    if epochs is not None and ranged:
        raise RecipeValueError(
            "give either 'epochs' or 'starting_epoch'/'ending_epoch'/'frequency', not both",
            ("epochs",),
        )
    if epochs is not None and not epochs:
        raise RecipeValueError("'epochs' is empty; list at least one epoch", ("epochs",))
    first = start or 0
    if end is not None and end <= first:
        relation = "<" if end < first else "=="
        raise RecipeValueError(
            f"ending_epoch {end} {relation} starting_epoch {first}; ending_epoch is exclusive, "
            "so make it larger than starting_epoch",
            ("ending_epoch",),
        )


class PolicyMasking(StrictModel):
    """How a pruner policy's masks act between its events (Distiller's PruningPolicy ``args``).

    By default masks are recomputed at the start of each active epoch and re-applied after
    every optimizer step, for the rest of the run.
    """

    every_steps: PositiveInt | None = None  # also recompute every N global training steps
    forward_only: bool = False  # mask the weights for the forward pass only; steps update them
    double_copies: bool = False  # forward_only: steps update the unmasked values (kept aside)
    mask_gradients: bool = False  # forward_only: masked entries get zero gradient
    discard: bool = False  # drop the masks after every optimizer step (until recomputed)
    keep: bool = False  # after the policy's last active epoch its masks become permanent
    skip_first_step: bool = False  # the first event waits for the first step (a gradient)

    @model_validator(mode="after")
    def _check(self) -> PolicyMasking:
        for key in ("double_copies", "mask_gradients"):
            if getattr(self, key) and not self.forward_only:
                raise RecipeValueError(
                    f"'{key}' needs 'forward_only: true' (with masks applied after every step "
                    "there is nothing to keep apart)",
                    (key,),
                )
        return self


class Policy(StrictModel):
    """When one named pruner / regularizer / LR schedule acts.

    Either ``epochs: [..]`` or ``starting_epoch`` (default 0) / ``ending_epoch`` (exclusive;
    None: end of training) / ``frequency`` (default 1) — Distiller's semantics.
    """

    pruner: str | None = None
    regularizer: str | None = None
    lr_schedule: str | None = None
    starting_epoch: NonNegInt | None = None
    ending_epoch: NonNegInt | None = None
    frequency: PositiveInt | None = None
    epochs: list[NonNegInt] | None = None
    masking: PolicyMasking | None = None  # pruner policies (``keep`` also regularizer ones)

    @property
    def kind(self) -> str:
        """``"pruner"``, ``"regularizer"`` or ``"lr_schedule"``."""
        return next(k for k in ("pruner", "regularizer", "lr_schedule") if getattr(self, k))

    @property
    def target(self) -> str:
        """Name of the item this policy schedules."""
        return str(getattr(self, self.kind))

    @model_validator(mode="after")
    def _check(self) -> Policy:
        named = [k for k in ("pruner", "regularizer", "lr_schedule") if getattr(self, k)]
        if len(named) != 1:
            raise RecipeValueError(
                "must name exactly one of 'pruner', 'regularizer', 'lr_schedule'"
                + (f" (got {', '.join(named)})" if named else "")
            )
        check_epoch_range(self.starting_epoch, self.ending_epoch, self.frequency, self.epochs)
        m = self.masking
        if m is not None and self.kind != "pruner":
            extra = [k for k, v in m.model_dump().items() if v not in (None, False) and k != "keep"]
            if self.kind == "lr_schedule" or extra:
                raise RecipeValueError(
                    f"'masking' {'keys ' + ', '.join(extra) + ' are' if extra else 'is'} for "
                    "pruner policies (a regularizer policy takes only 'keep')",
                    ("masking",),
                )
        return self


class Recipe(StrictModel):
    """A complete native recipe. Build with :func:`load_native` or ``Recipe.model_validate``.

    Example:
        >>> r = Recipe.model_validate({"pruners": {"p": {"method": "magnitude",
        ...     "final_sparsity": 0.5}}, "policies": [{"pruner": "p", "epochs": [0]}]})
    """

    version: Literal[1] = 1
    name: str | None = None
    description: str | None = None
    model: ModelSection | None = None  # None: given on the command line (--model)
    data: DataSection | None = None  # None: given on the command line (--data)
    training: TrainConfig = Field(default_factory=TrainConfig)
    pruners: dict[str, PrunerConfig] = Field(default_factory=dict)
    regularizers: dict[str, RegularizerConfig] = Field(default_factory=dict)
    lr_schedules: dict[str, LRScheduleConfig] = Field(default_factory=dict)
    distillation: DistillationSection | None = None
    policies: list[Policy] = Field(default_factory=list)
    # Epochs after whose pruning the model is thinned (Distiller's FilterRemover/ChannelRemover
    # policies): structured pruners acting later count their units among those that survived.
    thinning_epochs: list[NonNegInt] = Field(default_factory=list)

    _source: SourceMap = PrivateAttr(default_factory=SourceMap)
    _notes: list[str] = PrivateAttr(default_factory=list)

    @property
    def source(self) -> SourceMap:
        """Where this recipe came from (file name and line of every path)."""
        return self._source

    @property
    def notes(self) -> list[str]:
        """Warnings found while loading (e.g. skipped quantizers); resolve repeats them."""
        return self._notes

    @model_validator(mode="after")
    def _check_refs(self) -> Recipe:
        sections: dict[str, tuple[str, dict[str, Any]]] = {
            "pruner": ("pruners", self.pruners),
            "regularizer": ("regularizers", self.regularizers),
            "lr_schedule": ("lr_schedules", self.lr_schedules),
        }
        for i, policy in enumerate(self.policies):
            section, defined = sections[policy.kind]
            if policy.target not in defined:
                listed = ", ".join(defined) or f"none; add a '{section}' section"
                raise RecipeValueError(
                    f"names {policy.kind} {policy.target!r} which is not defined "
                    f"(defined: {listed})",
                    ("policies", i, policy.kind),
                )
        self._check_masking()
        stepped = any(p.kind == "lr_schedule" for p in self.policies)
        if stepped and self.training.schedule not in (None, "constant"):
            raise RecipeValueError(
                f"training.schedule {self.training.schedule!r} and lr_schedule policies both "
                "set the LR; set training.schedule: constant or drop the lr_schedule policies",
                ("training", "schedule"),
            )
        return self

    def _check_masking(self) -> None:
        """Masks that only make sense between forward passes need a forward-only policy."""
        for i, policy in enumerate(self.policies):
            item: Any = getattr(self, f"{policy.kind}s", {}).get(policy.target)
            forward_only = policy.masking is not None and policy.masking.forward_only
            if isinstance(item, GroupPrunerConfig) and item.criterion == "bernoulli" and not forward_only:
                raise RecipeValueError(
                    f"pruner {policy.target!r} (bernoulli) rescales the filters it keeps, so its "
                    "masks must not stay in the weights; give the policy masking: "
                    "{forward_only: true}",
                    ("policies", i),
                )
            if isinstance(item, (StructuredPrunerConfig, SlimPrunerConfig)) and (
                forward_only or (policy.masking is not None and policy.masking.discard)
            ):
                raise RecipeValueError(
                    f"pruner {policy.target!r} ({item.method}) removes units through the "
                    "dependency graph and zeroes the coupled layers; forward_only / discard "
                    "masking is for element and group pruners (use method 'group' for masks "
                    "that come and go)",
                    ("policies", i, "masking"),
                )
            keep = policy.masking is not None and policy.masking.keep
            if keep and policy.kind == "regularizer" and getattr(item, "threshold", None) is None:
                raise RecipeValueError(
                    f"masking.keep keeps a regularizer's threshold mask, but {policy.target!r} "
                    "has no 'threshold'",
                    ("policies", i, "masking"),
                )

    def overridden(self, **sections: Mapping[str, Any] | None) -> Recipe:
        """A copy with keys of ``training``, ``data`` or ``model`` replaced (None values are
        left as they are), validated like the file — what command-line flags such as
        ``prunekit run --lr 0.05 --batch-size 128`` do.

        Example:
            >>> recipe.overridden(training={"lr": 0.05}, data={"batch_size": 128})
        """
        unknown = sorted(set(sections) - {"training", "data", "model"})
        if unknown:
            raise ConfigError(f"cannot override {unknown}; only training, data and model")
        doc = self.model_dump(exclude_unset=True)
        for name, values in sections.items():
            given = {k: v for k, v in (values or {}).items() if v is not None}
            if given:
                doc[name] = {**(doc.get(name) or {}), **given}
        try:
            out = Recipe.model_validate(doc)
        except ValidationError as exc:
            raise format_validation_error(exc, Recipe, SourceMap("<overrides>")) from None
        out._source = self._source
        out._notes = list(self._notes)
        return out

    def to_json(self, indent: int | None = 2) -> str:
        """Serialize (defaults included) to JSON; :meth:`from_json` reads it back."""
        return json.dumps(self.model_dump(mode="json"), indent=indent)

    @classmethod
    def from_json(cls, text: str, filename: str = "<json>") -> Recipe:
        """Parse a recipe from its JSON form (errors as one-line :class:`ConfigError`)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{filename}:{exc.lineno}: invalid JSON: {exc.msg}") from None
        return validate_native(data, SourceMap(filename))


def validate_native(data: Any, source: SourceMap) -> Recipe:
    """Validate plain data (from YAML/JSON) as a :class:`Recipe`, mapping errors to lines.

    Args:
        data: the parsed document.
        source: file name and line numbers for messages.

    Returns:
        The recipe, with ``recipe.source`` set.
    """
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source.prefix(())}a recipe must be a YAML mapping (keys like 'model:', "
            f"'pruners:', 'policies:'), got a {type(data).__name__}"
        )
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        lines = str(format_validation_error(exc, Recipe, source)).split("\n")
        raise_problems(source, lines)
        raise AssertionError("unreachable") from None  # pragma: no cover
    raise_problems(source)  # duplicate keys found while parsing
    recipe._source = source
    return recipe


def load_native(path: str | Path) -> Recipe:
    """Load a native recipe YAML file.

    Args:
        path: the ``.yaml`` file.

    Returns:
        The validated :class:`Recipe`.

    Raises:
        ConfigError: one line per problem, each ``file:line: what — fix``.
    """
    data, source = read_yaml(path)
    return validate_native(data, source)
