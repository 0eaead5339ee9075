"""The typed schema of an Intel Distiller compression schedule, as Distiller itself reads it.

One pydantic model per Distiller class (pruners, regularizers, LR schedulers, extensions) with
the constructor arguments Distiller's ``config.py`` passes from the YAML, plus the policy
grammar (``instance_name``, ``args``, epochs). Validation errors therefore use Distiller's own key
names and the file's lines. Classes Distiller has but prunekit does not run are listed in
:data:`REFUSED` with the reason and what to use instead, so they fail with one precise line.

The conversion to prunekit's native recipe lives in :mod:`prunekit.recipes.distiller`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)

from prunekit.recipes._source import RecipeValueError
from prunekit.recipes.native import (
    Fraction,
    NonNegFloat,
    NonNegInt,
    PositiveFloat,
    PositiveInt,
    check_epoch_range,
)


def _as_list(v: Any) -> Any:
    # Distiller tests ``name in weights``; a plain string therefore names one tensor.
    return [v] if isinstance(v, str) else v


def _non_empty(v: list[str]) -> list[str]:
    if not v:
        raise ValueError("is empty; list at least one weight")
    return v


Weights = Annotated[list[str], BeforeValidator(_as_list), AfterValidator(_non_empty)]
RankedGroup = Literal["Filters", "3D", "Channels", "Rows", "Blocks"]
FilterGroup = Literal["Filters", "3D"]
#: structure groups of Distiller's group thresholding / regularizers
REG_GROUPS = (
    "2D",
    "3D",
    "4D",
    "Filters",
    "Channels",
    "Rows",
    "Cols",
    "Rows+Cols",
    "Cols+Rows",
    "Channels+4D",
    "4D+Channels",
)

#: Distiller classes prunekit does not run, with the reason and what to use instead.
REFUSED = {
    "FMReconstructionChannelPruner": "it rebuilds weights by least squares from sampled feature "
    "maps; use L1RankedStructureParameterPruner with group_type: Channels",
    "DistributionRegularizer": "it is a quantization-aware research regularizer; use "
    "L1Regularizer or GroupLassoRegularizer",
    "ReduceLROnPlateau": "it needs the validation metric of every epoch, and prunekit's "
    "recipe LR is a fixed per-epoch table; use StepLR or MultiStepLR",
    "LambdaLR": "a Python function cannot be written in YAML; use StepLR, MultiStepLR, "
    "MultiStepMultiGammaLR or ExponentialLR",
    "MultiplicativeLR": "a Python function cannot be written in YAML; use ExponentialLR",
    "AutomatedChannelPruner": "AMC searches with reinforcement learning; prune with a fixed "
    "L1RankedStructureParameterPruner schedule instead",
}


class _D(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Class(_D):
    """Every entry names its class."""


def _check_agp(initial: float, final: float) -> None:
    if final <= initial:
        raise RecipeValueError(
            f"final_sparsity {final} must be larger than initial_sparsity {initial} "
            "(Distiller asserts it)",
            ("final_sparsity",),
        )


class _Ranked(_Class):
    group_type: RankedGroup
    weights: Weights
    group_dependency: Literal["Leader"] | None = None
    kwargs: dict[str, Any] | None = None  # block_shape for group_type Blocks
    # prunekit extension: "group" ranks a coupled group from all its slots instead of the
    # listed weight's own filters (Distiller's way, the default here)
    ranking: Literal["own", "group"] | None = None

    @model_validator(mode="after")
    def _blocks(self) -> _Ranked:
        shape = (self.kwargs or {}).get("block_shape")
        unknown = sorted(set(self.kwargs or {}) - {"block_shape"})
        if unknown:
            raise RecipeValueError(
                f"kwargs {unknown} are not used by Distiller's ranked pruners (only "
                "block_shape, for group_type: Blocks)",
                ("kwargs",),
            )
        if (self.group_type == "Blocks") != (shape is not None):
            raise RecipeValueError(
                "group_type Blocks needs kwargs: {block_shape: [repetitions, depth, 1, 1]}"
                if shape is None
                else "kwargs.block_shape goes with group_type: Blocks",
                ("kwargs",),
            )
        return self


# Distiller class → prunekit criterion.
RANKED_AGP = {
    "L1RankedStructureParameterPruner_AGP": "l1",
    "L2RankedStructureParameterPruner_AGP": "l2",
}
FILTER_AGP = {
    "ActivationAPoZRankedFilterPruner_AGP": "apoz",
    "ActivationMeanRankedFilterPruner_AGP": "activation",
    "GradientRankedFilterPruner_AGP": "taylor",
    "RandomRankedFilterPruner_AGP": "random",
    "BernoulliFilterPruner_AGP": "bernoulli",
}
RANKED_ONE_SHOT = {k.removesuffix("_AGP"): v for k, v in RANKED_AGP.items()}
FILTER_ONE_SHOT = {k.removesuffix("_AGP"): v for k, v in FILTER_AGP.items()}


class DAGPPruner(_Class):
    """``AutomatedGradualPruner``: fine-grained AGP over ``weights``."""

    class_: Literal["AutomatedGradualPruner"] = Field(alias="class")
    initial_sparsity: Fraction
    final_sparsity: Fraction
    weights: Weights

    @model_validator(mode="after")
    def _check(self) -> DAGPPruner:
        _check_agp(self.initial_sparsity, self.final_sparsity)
        return self


class DRankedAGP(_Ranked):
    """``L1/L2RankedStructureParameterPruner_AGP``: structured AGP over ranked structures."""

    class_: Literal[tuple(RANKED_AGP)] = Field(alias="class")  # type: ignore[valid-type]
    initial_sparsity: Fraction
    final_sparsity: Fraction

    @model_validator(mode="after")
    def _check(self) -> DRankedAGP:
        _check_agp(self.initial_sparsity, self.final_sparsity)
        return self


class DFilterAGP(_Class):
    """The activation / gradient / random / Bernoulli filter pruners with an AGP schedule."""

    class_: Literal[tuple(FILTER_AGP)] = Field(alias="class")  # type: ignore[valid-type]
    initial_sparsity: Fraction
    final_sparsity: Fraction
    group_type: FilterGroup
    weights: Weights
    group_dependency: Literal["Leader"] | None = None
    ranking: Literal["own", "group"] | None = None

    @model_validator(mode="after")
    def _check(self) -> DFilterAGP:
        _check_agp(self.initial_sparsity, self.final_sparsity)
        return self


class DRanked(_Ranked):
    """``L1/L2RankedStructureParameterPruner``: one-shot to ``desired_sparsity``."""

    class_: Literal[tuple(RANKED_ONE_SHOT)] = Field(alias="class")  # type: ignore[valid-type]
    desired_sparsity: Fraction
    noise: NonNegFloat = 0.0
    group_size: PositiveInt = 1

    @model_validator(mode="after")
    def _check(self) -> DRanked:
        if self.noise:
            raise RecipeValueError(
                "noise (random perturbation of the ranking) is not supported; remove it",
                ("noise",),
            )
        if self.group_size != 1:
            raise RecipeValueError(
                "group_size (ranking structures in bundles) is not supported; remove it, or use "
                "round_to in a native structured pruner",
                ("group_size",),
            )
        return self


class DRankedRegims(_Class):
    """Distiller's first grammar of ``L1RankedStructureParameterPruner``: ``reg_regims`` maps
    each weight to ``[fraction, group_type]`` (still used by its VGG-19 and ResNet-56 examples)."""

    class_: Literal["L1RankedStructureParameterPruner"] = Field(alias="class")
    reg_regims: dict[str, list[float | str]]

    @model_validator(mode="after")
    def _check(self) -> DRankedRegims:
        for name, pair in self.reg_regims.items():
            ok = len(pair) == 2 and isinstance(pair[0], (int, float)) and isinstance(pair[1], str)
            if not ok or not 0 <= float(pair[0]) < 1:
                raise RecipeValueError(
                    f"reg_regims entry {name!r} must be [fraction in [0, 1), group_type], "
                    f"got {pair}",
                    ("reg_regims", name),
                )
            if pair[1] not in ("Filters", "3D", "Channels", "Rows"):
                raise RecipeValueError(
                    f"group type {pair[1]!r} cannot be ranked (supported: 3D, Filters, "
                    "Channels, Rows)",
                    ("reg_regims", name),
                )
        return self


class DFilterRanked(_Class):
    """The one-shot activation / gradient / random / Bernoulli filter pruners."""

    class_: Literal[tuple(FILTER_ONE_SHOT)] = Field(alias="class")  # type: ignore[valid-type]
    group_type: FilterGroup
    desired_sparsity: Fraction
    weights: Weights
    group_dependency: Literal["Leader"] | None = None
    ranking: Literal["own", "group"] | None = None


class DRandomLevel(_Ranked):
    """``RandomLevelStructureParameterPruner``: L1 ranking at a level drawn uniformly from
    ``sparsity_range`` at every event, per weight."""

    class_: Literal["RandomLevelStructureParameterPruner"] = Field(alias="class")
    sparsity_range: list[Fraction]

    @model_validator(mode="after")
    def _check(self) -> DRandomLevel:
        r = self.sparsity_range
        if len(r) != 2 or r[0] > r[1]:
            raise RecipeValueError(
                f"sparsity_range must be [low, high] with low <= high, got {r}",
                ("sparsity_range",),
            )
        return self


class DSensitivityPruner(_Class):
    """``SensitivityPruner``: |w| <= s·std(W) per tensor (std taken once); ``'*'`` default."""

    class_: Literal["SensitivityPruner"] = Field(alias="class")
    sensitivities: dict[str, PositiveFloat]


class DSplicingPruner(_Class):
    """``SplicingPruner``: dynamic network surgery (Guo et al. 2016)."""

    class_: Literal["SplicingPruner"] = Field(alias="class")
    sensitivities: dict[str, PositiveFloat]
    low_thresh_mult: PositiveFloat
    hi_thresh_mult: PositiveFloat
    sensitivity_multiplier: NonNegFloat = 0.0


class DMagnitudePruner(_Class):
    """``MagnitudeParameterPruner``: absolute |w| thresholds per tensor (``'*'`` default)."""

    class_: Literal["MagnitudeParameterPruner"] = Field(alias="class")
    thresholds: dict[str, NonNegFloat]


class DLevelPruner(_Class):
    """``SparsityLevelParameterPruner``: per-tensor sparsity levels, one shot."""

    class_: Literal["SparsityLevelParameterPruner"] = Field(alias="class")
    levels: dict[str, Fraction]


class DStructurePruner(_Class):
    """``StructureParameterPruner``: zero the structures whose mean |w| (``Mean_Abs``) or max
    |w| is at most the weight's threshold; ``reg_regims`` maps weights to
    ``[threshold, group_type]``."""

    class_: Literal["StructureParameterPruner"] = Field(alias="class")
    reg_regims: dict[str, list[float | str]]
    threshold_criteria: Literal["Mean_Abs", "Max"]

    @model_validator(mode="after")
    def _check(self) -> DStructurePruner:
        for name, pair in self.reg_regims.items():
            ok = len(pair) == 2 and isinstance(pair[0], (int, float)) and isinstance(pair[1], str)
            if not ok or float(pair[0]) < 0:
                raise RecipeValueError(
                    f"reg_regims entry {name!r} must be [threshold >= 0, group_type], got {pair}",
                    ("reg_regims", name),
                )
            if pair[1] not in ("2D", "3D", "Filters", "Channels", "Rows", "Cols"):
                raise RecipeValueError(
                    f"group type {pair[1]!r} cannot be thresholded (supported: 2D, 3D, Filters, "
                    "Channels, Rows, Cols)",
                    ("reg_regims", name),
                )
        return self


class DBaiduRNNPruner(_Class):
    """``BaiduRNNPruner``: Narang et al. 2017's ramped magnitude threshold."""

    class_: Literal["BaiduRNNPruner"] = Field(alias="class")
    initial_sparsity: Fraction  # required and checked by Distiller, not used by its formula
    final_sparsity: Fraction
    q: PositiveFloat
    ramp_epoch: NonNegInt
    ramp_slope_mult: PositiveFloat
    weights: Weights

    @model_validator(mode="after")
    def _check(self) -> DBaiduRNNPruner:
        _check_agp(self.initial_sparsity, self.final_sparsity)
        return self


class DSlimmingPruner(_Class):
    """prunekit extension (not in Distiller): Network Slimming's global BN-scale threshold."""

    class_: Literal["NetworkSlimmingPruner"] = Field(alias="class")
    desired_sparsity: Fraction
    weights: list[str] | None = None  # BN weights; None: all BatchNorm layers


_PRUNER_MODELS: tuple[type[_Class], ...] = (
    DAGPPruner,
    DRankedAGP,
    DFilterAGP,
    DRanked,
    DRankedRegims,
    DFilterRanked,
    DRandomLevel,
    DSensitivityPruner,
    DSplicingPruner,
    DMagnitudePruner,
    DLevelPruner,
    DStructurePruner,
    DBaiduRNNPruner,
    DSlimmingPruner,
)


def class_names(model: type[BaseModel]) -> tuple[str, ...]:
    """The Distiller class names a schema model accepts."""
    return tuple(str(v) for v in model.model_fields["class_"].annotation.__args__)  # type: ignore[union-attr]


#: Distiller pruner class → schema model name; L1RankedStructureParameterPruner has two grammars
_PRUNER_TAGS = {
    c: m.__name__ for m in _PRUNER_MODELS if m is not DRankedRegims for c in class_names(m)
}
PRUNER_CLASSES = tuple(_PRUNER_TAGS)


def _pruner_tag(v: Any) -> str | None:
    if isinstance(v, BaseModel):
        return type(v).__name__
    if not isinstance(v, dict):
        return None
    cls = v.get("class")
    if cls == "L1RankedStructureParameterPruner" and "reg_regims" in v:
        return DRankedRegims.__name__
    return _PRUNER_TAGS.get(cls) if isinstance(cls, str) else None


DPruner = Annotated[
    Annotated[DAGPPruner, Tag("DAGPPruner")]
    | Annotated[DRankedAGP, Tag("DRankedAGP")]
    | Annotated[DFilterAGP, Tag("DFilterAGP")]
    | Annotated[DRanked, Tag("DRanked")]
    | Annotated[DRankedRegims, Tag("DRankedRegims")]
    | Annotated[DFilterRanked, Tag("DFilterRanked")]
    | Annotated[DRandomLevel, Tag("DRandomLevel")]
    | Annotated[DSensitivityPruner, Tag("DSensitivityPruner")]
    | Annotated[DSplicingPruner, Tag("DSplicingPruner")]
    | Annotated[DMagnitudePruner, Tag("DMagnitudePruner")]
    | Annotated[DLevelPruner, Tag("DLevelPruner")]
    | Annotated[DStructurePruner, Tag("DStructurePruner")]
    | Annotated[DBaiduRNNPruner, Tag("DBaiduRNNPruner")]
    | Annotated[DSlimmingPruner, Tag("DSlimmingPruner")],
    Discriminator(_pruner_tag),
]


def _check_regims(regims: dict[str, list[float | str]], allowed: tuple[str, ...]) -> None:
    for name, pair in regims.items():
        ok = len(pair) == 2 and isinstance(pair[0], (int, float)) and isinstance(pair[1], str)
        if not ok or float(pair[0]) < 0:
            raise RecipeValueError(
                f"reg_regims entry {name!r} must be [strength >= 0, group_type], got {pair}",
                ("reg_regims", name),
            )
        if pair[1] not in allowed:
            raise RecipeValueError(
                f"group type {pair[1]!r} is not one of Distiller's ({', '.join(allowed)})",
                ("reg_regims", name),
            )


class DL1Regularizer(_Class):
    """``L1Regularizer``: ``reg_regims`` maps weights to λ."""

    class_: Literal["L1Regularizer"] = Field(alias="class")
    reg_regims: dict[str, NonNegFloat]
    threshold_criteria: Literal["Mean_Abs", "Max"] | None = None


class DGroupLassoRegularizer(_Class):
    """``GroupLassoRegularizer``: ``reg_regims`` maps weights to ``[λ, group_type]``."""

    class_: Literal["GroupLassoRegularizer"] = Field(alias="class")
    reg_regims: dict[str, list[float | str]]
    threshold_criteria: Literal["Mean_Abs", "Max"] | None = None

    @model_validator(mode="after")
    def _check(self) -> DGroupLassoRegularizer:
        _check_regims(self.reg_regims, REG_GROUPS)
        if self.threshold_criteria is not None:
            bad = [n for n, (_, g) in self.reg_regims.items() if "4D" in str(g) or "+" in str(g)]
            if bad:
                raise RecipeValueError(
                    f"threshold_criteria thresholds one structure per group, which Distiller "
                    f"cannot do for {bad[0]!r}'s group type; drop threshold_criteria or use a "
                    "single group type (2D, 3D, Filters, Channels, Rows, Cols)",
                    ("threshold_criteria",),
                )
        return self


class DGroupVarianceRegularizer(_Class):
    """``GroupVarianceRegularizer``: λ / Var(channel L2 norms); group type Channels only."""

    class_: Literal["GroupVarianceRegularizer"] = Field(alias="class")
    reg_regims: dict[str, list[float | str]]

    @model_validator(mode="after")
    def _check(self) -> DGroupVarianceRegularizer:
        _check_regims(self.reg_regims, ("Channels",))
        return self


DRegularizer = Annotated[
    DL1Regularizer | DGroupLassoRegularizer | DGroupVarianceRegularizer,
    Field(discriminator="class_"),
]


class DStepLR(_Class):
    class_: Literal["StepLR"] = Field(alias="class")
    step_size: PositiveInt
    gamma: PositiveFloat = 0.1


class DMultiStepLR(_Class):
    class_: Literal["MultiStepLR"] = Field(alias="class")
    milestones: list[NonNegInt]
    gamma: PositiveFloat = 0.1


class DMultiStepMultiGammaLR(_Class):
    class_: Literal["MultiStepMultiGammaLR"] = Field(alias="class")
    milestones: list[NonNegInt]
    gammas: list[PositiveFloat]


class DExponentialLR(_Class):
    class_: Literal["ExponentialLR"] = Field(alias="class")
    gamma: PositiveFloat


class DCosineLR(_Class):
    class_: Literal["CosineAnnealingLR"] = Field(alias="class")
    T_max: PositiveInt
    eta_min: NonNegFloat = 0.0


class DPolynomialLR(_Class):
    class_: Literal["PolynomialLR"] = Field(alias="class")
    T_max: PositiveInt
    power: PositiveFloat = 1.0


DLRScheduler = Annotated[
    DStepLR | DMultiStepLR | DMultiStepMultiGammaLR | DExponentialLR | DCosineLR | DPolynomialLR,
    Field(discriminator="class_"),
]


class DThinning(_Class):
    """``StructureRemover`` and its aliases ``FilterRemover`` / ``ChannelRemover``: network
    thinning (prunekit counts later structured events among the survivors and slices at the end
    of the run)."""

    class_: Literal["StructureRemover", "FilterRemover", "ChannelRemover"] = Field(alias="class")
    thinning_func_str: Literal["remove_filters", "remove_channels"] | None = None
    arch: str | None = None
    dataset: str | None = None

    @property
    def removes(self) -> str:
        """``filters`` or ``channels``."""
        if self.thinning_func_str is not None:
            return self.thinning_func_str.removeprefix("remove_")
        return "channels" if self.class_ == "ChannelRemover" else "filters"

    @model_validator(mode="after")
    def _check(self) -> DThinning:
        if self.class_ == "StructureRemover" and self.thinning_func_str is None:
            raise RecipeValueError(
                "StructureRemover needs thinning_func_str: remove_filters or remove_channels",
                ("thinning_func_str",),
            )
        return self


class DPruneArgs(_D):
    """A pruner policy's ``args`` (Distiller's PruningPolicy)."""

    levels: dict[str, Fraction] | None = None
    keep_mask: bool = False
    mini_batch_pruning_frequency: NonNegInt = 0
    mask_on_forward_only: bool = False
    mask_gradients: bool = False
    use_double_copies: bool = False
    discard_masks_at_minibatch_end: bool = False
    skip_first_minibatch: bool = False
    fold_batchnorm: bool = False

    @model_validator(mode="after")
    def _check(self) -> DPruneArgs:
        if self.mask_gradients and not self.mask_on_forward_only:
            raise RecipeValueError(
                "mask_gradients needs mask_on_forward_only: true (Distiller refuses the pair "
                "otherwise)",
                ("mask_gradients",),
            )
        return self


class DRegArgs(_D):
    """A regularizer policy's ``args`` (Distiller's RegularizationPolicy)."""

    keep_mask: bool = False


class DRef(_D):
    instance_name: str


class DPrunerRef(DRef):
    args: DPruneArgs | None = None


class DRegRef(DRef):
    args: DRegArgs | None = None


REF_KINDS = ("pruner", "regularizer", "lr_scheduler", "extension", "quantizer")


class DPolicy(_D):
    """One Distiller policy."""

    pruner: DPrunerRef | None = None
    regularizer: DRegRef | None = None
    lr_scheduler: DRef | None = None
    extension: DRef | None = None
    quantizer: DRef | None = None  # only with skip_quantizers (dropped)
    starting_epoch: NonNegInt | None = None
    ending_epoch: NonNegInt | None = None
    frequency: PositiveInt | None = None
    epochs: list[NonNegInt] | None = None

    @property
    def kind(self) -> str:
        """Which of pruner / regularizer / lr_scheduler / extension / quantizer it schedules."""
        return next(k for k in REF_KINDS if getattr(self, k) is not None)

    @property
    def ref(self) -> DRef:
        """The instance reference (``instance_name`` and ``args``)."""
        return getattr(self, self.kind)  # type: ignore[no-any-return]

    @model_validator(mode="after")
    def _check(self) -> DPolicy:
        named = [k for k in REF_KINDS if getattr(self, k) is not None]
        if len(named) != 1:
            raise RecipeValueError(
                "must name exactly one of 'pruner', 'regularizer', 'lr_scheduler', 'extension'"
                + (f" (got {', '.join(named)})" if named else "")
            )
        check_epoch_range(self.starting_epoch, self.ending_epoch, self.frequency, self.epochs)
        return self


class DistillerSchedule(_D):
    """A Distiller schedule file (the sections Distiller's ``dict_config`` reads)."""

    version: Literal[1] | None = None
    pruners: dict[str, DPruner] = Field(default_factory=dict)
    regularizers: dict[str, DRegularizer] = Field(default_factory=dict)
    lr_schedulers: dict[str, DLRScheduler] = Field(default_factory=dict)
    extensions: dict[str, DThinning] = Field(default_factory=dict)
    policies: list[DPolicy] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_refs(self) -> DistillerSchedule:
        sections: dict[str, dict[str, Any]] = {
            "pruner": self.pruners,
            "regularizer": self.regularizers,
            "lr_scheduler": self.lr_schedulers,
            "extension": self.extensions,
        }
        for i, policy in enumerate(self.policies):
            if policy.kind == "quantizer":
                continue
            defined = sections[policy.kind]
            if policy.ref.instance_name not in defined:
                listed = ", ".join(defined) or "none"
                raise RecipeValueError(
                    f"names {policy.kind} {policy.ref.instance_name!r} which is not defined "
                    f"(defined: {listed})",
                    ("policies", i, policy.kind, "instance_name"),
                )
        return self
