"""Load Intel Distiller compression schedules and convert them to native recipes.

A Distiller schedule (``version: 1``) defines named ``pruners``, ``regularizers`` and
``lr_schedulers`` (each with a ``class:``), optional ``extensions`` (network thinning) and
``policies`` that say when each instance acts (``starting_epoch``/``ending_epoch``/``frequency``,
``ending_epoch`` exclusive, or ``epochs: [...]``). Weight names usually carry DataParallel's
``module.`` prefix; it is ignored when matching against the model.

The schedule is first validated against a typed Distiller schema (so errors use Distiller's key
names and the file's lines), then converted. ``docs/recipes.md`` has the mapping table.

Example:
    >>> recipe = load_distiller("examples/recipes/distiller/resnet18_agp_fine.yaml")
    >>> recipe.pruners["fine"].method
    'magnitude'
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from prunekit.errors import ConfigError
from prunekit.recipes._source import (
    RecipeValueError,
    SourceMap,
    format_validation_error,
    read_yaml,
)
from prunekit.recipes.native import (
    Fraction,
    NonNegFloat,
    NonNegInt,
    PositiveFloat,
    PositiveInt,
    Recipe,
    check_epoch_range,
    validate_native,
)

# Distiller class → prunekit criterion, for the ranked structure pruners.
STRUCTURED_AGP = {
    "L1RankedStructureParameterPruner_AGP": "l1",
    "L2RankedStructureParameterPruner_AGP": "l2",
    "ActivationMeanRankedFilterPruner_AGP": "activation",
    "GradientRankedFilterPruner_AGP": "taylor",
    "RandomRankedFilterPruner_AGP": "random",
}
STRUCTURED_ONE_SHOT = {k.removesuffix("_AGP"): v for k, v in STRUCTURED_AGP.items()}
GROUP_TARGET = {
    "Filters": "filters",
    "3D": "filters",
    "Rows": "filters",
    "Channels": "channels",
    "Cols": "channels",
}
LASSO_GROUPS = {
    "Filters": "filters",
    "3D": "filters",
    "Channels": "channels",
    "Rows": "rows",
    "Cols": "cols",
}


def _non_empty(v: list[str]) -> list[str]:
    if not v:
        raise ValueError("is empty; list at least one weight")
    return v


Weights = Annotated[list[str], AfterValidator(_non_empty)]
GroupType = Literal["Filters", "Channels", "Rows", "Cols", "3D"]


class _D(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Ranked(_D):
    group_type: GroupType
    weights: Weights
    group_dependency: Literal["Leader"] | None = None  # implied: groups always couple layers


class DAGPPruner(_D):
    """``AutomatedGradualPruner``: fine-grained AGP over ``weights``."""

    class_: Literal["AutomatedGradualPruner"] = Field(alias="class")
    initial_sparsity: Fraction
    final_sparsity: Fraction
    weights: Weights


class DStructuredAGPPruner(_Ranked):
    """``L1/L2RankedStructureParameterPruner_AGP`` and the other ranked AGP pruners."""

    class_: Literal[tuple(STRUCTURED_AGP)] = Field(alias="class")  # type: ignore[valid-type]
    initial_sparsity: Fraction
    final_sparsity: Fraction


class DStructuredPruner(_Ranked):
    """``L1RankedStructureParameterPruner`` & co: one-shot to ``desired_sparsity``."""

    class_: Literal[tuple(STRUCTURED_ONE_SHOT)] = Field(alias="class")  # type: ignore[valid-type]
    desired_sparsity: Fraction


class DSensitivityPruner(_D):
    """``SensitivityPruner``: |w| < s·std(W) per tensor; ``'*'`` is the default s."""

    class_: Literal["SensitivityPruner"] = Field(alias="class")
    sensitivities: dict[str, PositiveFloat]


class DMagnitudePruner(_D):
    """``MagnitudeParameterPruner``: absolute |w| thresholds per tensor (``'*'`` default)."""

    class_: Literal["MagnitudeParameterPruner"] = Field(alias="class")
    thresholds: dict[str, NonNegFloat]


class DLevelPruner(_D):
    """``SparsityLevelParameterPruner``: per-tensor sparsity levels, one shot."""

    class_: Literal["SparsityLevelParameterPruner"] = Field(alias="class")
    levels: dict[str, Fraction]


class DSlimmingPruner(_D):
    """prunekit extension (not in Distiller): Network Slimming's global BN-scale threshold."""

    class_: Literal["NetworkSlimmingPruner"] = Field(alias="class")
    desired_sparsity: Fraction
    weights: list[str] | None = None  # BN weights; None: all BatchNorm layers


DPruner = Annotated[
    DAGPPruner
    | DStructuredAGPPruner
    | DStructuredPruner
    | DSensitivityPruner
    | DMagnitudePruner
    | DLevelPruner
    | DSlimmingPruner,
    Field(discriminator="class_"),
]


class DL1Regularizer(_D):
    """``L1Regularizer``: ``reg_regims`` maps weights to λ."""

    class_: Literal["L1Regularizer"] = Field(alias="class")
    reg_regims: dict[str, NonNegFloat]
    threshold_criteria: str | None = None

    @model_validator(mode="after")
    def _no_threshold(self) -> DL1Regularizer:
        _reject_threshold(self.threshold_criteria)
        return self


class DGroupLassoRegularizer(_D):
    """``GroupLassoRegularizer``: ``reg_regims`` maps weights to ``[λ, group_type]``."""

    class_: Literal["GroupLassoRegularizer"] = Field(alias="class")
    reg_regims: dict[str, list[float | str]]
    threshold_criteria: str | None = None

    @model_validator(mode="after")
    def _check(self) -> DGroupLassoRegularizer:
        _reject_threshold(self.threshold_criteria)
        groups = set()
        for name, pair in self.reg_regims.items():
            ok = len(pair) == 2 and isinstance(pair[0], (int, float)) and isinstance(pair[1], str)
            if not ok:
                raise RecipeValueError(
                    f"reg_regims entry {name!r} must be [strength, group_type], got {pair}",
                    ("reg_regims", name),
                )
            if pair[1] not in LASSO_GROUPS:
                raise RecipeValueError(
                    f"group type {pair[1]!r} is not supported (supported: "
                    f"{', '.join(LASSO_GROUPS)})",
                    ("reg_regims", name),
                )
            groups.add(LASSO_GROUPS[str(pair[1])])
        if len(groups) > 1:
            raise RecipeValueError(
                f"mixes group types {sorted(groups)}; prunekit needs one group type per "
                "regularizer — split it into several regularizers",
                ("reg_regims",),
            )
        return self


def _reject_threshold(value: str | None) -> None:
    if value is not None:
        raise RecipeValueError(
            "threshold_criteria is not supported; remove it (prune with a pruner instead)",
            ("threshold_criteria",),
        )


DRegularizer = Annotated[DL1Regularizer | DGroupLassoRegularizer, Field(discriminator="class_")]


class DStepLR(_D):
    class_: Literal["StepLR"] = Field(alias="class")
    step_size: PositiveInt
    gamma: PositiveFloat = 0.1


class DMultiStepLR(_D):
    class_: Literal["MultiStepLR"] = Field(alias="class")
    milestones: list[NonNegInt]
    gamma: PositiveFloat = 0.1


class DExponentialLR(_D):
    class_: Literal["ExponentialLR"] = Field(alias="class")
    gamma: PositiveFloat


class DCosineLR(_D):
    class_: Literal["CosineAnnealingLR"] = Field(alias="class")
    T_max: PositiveInt
    eta_min: NonNegFloat = 0.0


class DPolynomialLR(_D):
    class_: Literal["PolynomialLR"] = Field(alias="class")
    T_max: PositiveInt
    power: PositiveFloat = 1.0


DLRScheduler = Annotated[
    DStepLR | DMultiStepLR | DExponentialLR | DCosineLR | DPolynomialLR,
    Field(discriminator="class_"),
]


class DThinning(_D):
    """``FilterRemover`` / ``ChannelRemover``: thinning → prunekit's end-of-run surgery."""

    class_: Literal["FilterRemover", "ChannelRemover"] = Field(alias="class")
    thinning_func_str: Literal["remove_filters", "remove_channels"] | None = None
    arch: str | None = None
    dataset: str | None = None


DExtension = DThinning  # the only supported extension kind (thinning)


class DRef(_D):
    instance_name: str


_REF_KINDS = ("pruner", "regularizer", "lr_scheduler", "extension")


class DPolicy(_D):
    """One Distiller policy."""

    pruner: DRef | None = None
    regularizer: DRef | None = None
    lr_scheduler: DRef | None = None
    extension: DRef | None = None
    starting_epoch: NonNegInt | None = None
    ending_epoch: NonNegInt | None = None
    frequency: PositiveInt | None = None
    epochs: list[NonNegInt] | None = None

    @property
    def kind(self) -> str:
        """Which of pruner / regularizer / lr_scheduler / extension this policy schedules."""
        return next(k for k in _REF_KINDS if getattr(self, k) is not None)

    @model_validator(mode="after")
    def _check(self) -> DPolicy:
        named = [k for k in _REF_KINDS if getattr(self, k) is not None]
        if len(named) != 1:
            raise RecipeValueError(
                "must name exactly one of 'pruner', 'regularizer', 'lr_scheduler', 'extension'"
                + (f" (got {', '.join(named)})" if named else "")
            )
        check_epoch_range(self.starting_epoch, self.ending_epoch, self.frequency, self.epochs)
        return self


class DistillerSchedule(_D):
    """A Distiller schedule file, as Distiller itself reads it (the supported subset)."""

    version: Literal[1] | None = None
    pruners: dict[str, DPruner] = Field(default_factory=dict)
    regularizers: dict[str, DRegularizer] = Field(default_factory=dict)
    lr_schedulers: dict[str, DLRScheduler] = Field(default_factory=dict)
    extensions: dict[str, DExtension] = Field(default_factory=dict)
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
            kind = policy.kind
            ref = getattr(policy, kind)
            if ref.instance_name not in sections[kind]:
                defined = ", ".join(sections[kind]) or "none"
                raise RecipeValueError(
                    f"names {kind} {ref.instance_name!r} which is not defined (defined: {defined})",
                    ("policies", i, kind, "instance_name"),
                )
        return self


# ---------------------------------------------------------------------------------------------
# conversion
# ---------------------------------------------------------------------------------------------

_POLICY_KEYS = {"pruner": "pruner", "regularizer": "regularizer", "lr_scheduler": "lr_schedule"}
# Distiller key → native key inside a pruner / regularizer (for error lines after conversion).
_FIELD_RENAMES = {
    "weights": "params",
    "desired_sparsity": "final_sparsity",
    "reg_regims": "strengths",
}


def _convert_pruner(p: Any, thinning: bool) -> dict[str, Any]:
    """One Distiller pruner → native pruner dict."""
    if isinstance(p, DAGPPruner):
        return {
            "method": "magnitude",
            "schedule": "agp",
            "initial_sparsity": p.initial_sparsity,
            "final_sparsity": p.final_sparsity,
            "params": p.weights,
        }
    if isinstance(p, (DStructuredAGPPruner, DStructuredPruner)):
        agp = isinstance(p, DStructuredAGPPruner)
        table = STRUCTURED_AGP if agp else STRUCTURED_ONE_SHOT
        out: dict[str, Any] = {
            "method": "structured",
            "criterion": table[p.class_],
            "target": GROUP_TARGET[p.group_type],
            "params": p.weights,
            "surgery": thinning,
        }
        if isinstance(p, DStructuredAGPPruner):
            out |= {
                "schedule": "agp",
                "initial_sparsity": p.initial_sparsity,
                "final_sparsity": p.final_sparsity,
            }
        else:
            out |= {"schedule": "one_shot", "final_sparsity": p.desired_sparsity}
        return out
    if isinstance(p, DSensitivityPruner):
        # Distiller recomputes the std threshold at every active epoch.
        return {
            "method": "std_threshold",
            "schedule": "iterative",
            "sensitivities": p.sensitivities,
        }
    if isinstance(p, DMagnitudePruner):
        return {"method": "magnitude", "schedule": "iterative", "thresholds": p.thresholds}
    if isinstance(p, DLevelPruner):
        return {"method": "magnitude", "schedule": "one_shot", "levels": p.levels}
    assert isinstance(p, DSlimmingPruner)
    return {"method": "slim", "percent": p.desired_sparsity, "params": p.weights}


def _convert_regularizer(r: Any) -> dict[str, Any]:
    if isinstance(r, DL1Regularizer):
        return {"kind": "l1", "strengths": r.reg_regims}
    assert isinstance(r, DGroupLassoRegularizer)
    pairs = list(r.reg_regims.values())
    return {
        "kind": "group_lasso",
        "group": LASSO_GROUPS[str(pairs[0][1])] if pairs else "filters",
        "strengths": {k: float(v[0]) for k, v in r.reg_regims.items()},
    }


def _convert_lr(s: Any) -> dict[str, Any]:
    if isinstance(s, DStepLR):
        return {"kind": "step", "step_size": s.step_size, "gamma": s.gamma}
    if isinstance(s, DMultiStepLR):
        return {"kind": "multistep", "milestones": s.milestones, "gamma": s.gamma}
    if isinstance(s, DExponentialLR):
        return {"kind": "exponential", "gamma": s.gamma}
    if isinstance(s, DCosineLR):
        return {"kind": "cosine", "t_max": s.T_max, "eta_min": s.eta_min}
    assert isinstance(s, DPolynomialLR)
    return {"kind": "polynomial", "total_iters": s.T_max, "power": s.power}


def _convert_policies(schedule: DistillerSchedule) -> tuple[list[dict[str, Any]], dict[int, int]]:
    """Native policies, plus Distiller policy index → native index (extensions are dropped)."""
    out: list[dict[str, Any]] = []
    index: dict[int, int] = {}
    for i, policy in enumerate(schedule.policies):
        if policy.kind == "extension":  # thinning happens as end-of-run surgery
            continue
        native: dict[str, Any] = {
            _POLICY_KEYS[policy.kind]: getattr(policy, policy.kind).instance_name
        }
        for key in ("starting_epoch", "ending_epoch", "frequency", "epochs"):
            if getattr(policy, key) is not None:
                native[key] = getattr(policy, key)
        index[i] = len(out)
        out.append(native)
    return out, index


def to_native_dict(schedule: DistillerSchedule) -> dict[str, Any]:
    """Convert a validated Distiller schedule to native recipe data (not yet validated)."""
    thinning = bool(schedule.extensions)
    policies, _ = _convert_policies(schedule)
    return {
        "pruners": {n: _convert_pruner(p, thinning) for n, p in schedule.pruners.items()},
        "regularizers": {n: _convert_regularizer(r) for n, r in schedule.regularizers.items()},
        "lr_schedules": {n: _convert_lr(s) for n, s in schedule.lr_schedulers.items()},
        "policies": policies,
    }


def _translate(source: SourceMap, policy_index: dict[int, int]) -> SourceMap:
    """Re-key a Distiller file's line map by the native paths the conversion produces."""
    out = SourceMap(source.filename, format="distiller")
    for lines, target in ((source.lines, out.lines), (source.key_lines, out.key_lines)):
        for path, line in lines.items():
            native = _native_path(path, policy_index)
            if native is not None:
                target.setdefault(native, line)
    return out


def _native_path(path: tuple[Any, ...], policy_index: dict[int, int]) -> tuple[Any, ...] | None:
    if not path:
        return path
    head, rest = path[0], list(path[1:])
    if head == "lr_schedulers":
        head = "lr_schedules"
    if head == "policies" and rest:
        if rest[0] not in policy_index:
            return None
        rest[0] = policy_index[rest[0]]
        if len(rest) > 1:
            rest[1] = _POLICY_KEYS.get(rest[1], rest[1])
        rest = [r for r in rest if r != "instance_name"]
    elif len(rest) > 1:
        rest[1] = _FIELD_RENAMES.get(rest[1], rest[1])
    return (head, *rest)


def looks_like_distiller(data: Any) -> bool:
    """Heuristic used by ``format: auto``: Distiller-only keys or ``class:`` entries."""
    if not isinstance(data, dict):
        return False
    if any(k in data for k in ("lr_schedulers", "extensions", "quantizers")):
        return True
    for section in ("pruners", "regularizers"):
        entries = data.get(section)
        if isinstance(entries, dict) and any(
            isinstance(v, dict) and "class" in v for v in entries.values()
        ):
            return True
    policies = data.get("policies")
    return isinstance(policies, list) and any(
        isinstance(p, dict) and isinstance(p.get("pruner") or p.get("regularizer"), dict)
        for p in policies
    )


def validate_distiller(data: Any, source: SourceMap) -> Recipe:
    """Validate parsed Distiller data and convert it to a native :class:`Recipe`.

    Args:
        data: the parsed YAML document.
        source: its line map (from :func:`prunekit.recipes._source.parse_yaml`).

    Returns:
        The native recipe; ``recipe.source`` points at the Distiller file's lines.
    """
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source.prefix(())}a Distiller schedule must be a YAML mapping with 'pruners:', "
            f"'policies:' …, got a {type(data).__name__}"
        )
    for section in ("quantizers", "quantization"):
        if section in data:
            raise source.error(
                (section,),
                f"'{section}' is not supported: prunekit does not quantize; remove "
                "the section and the policies that use it",
                key=True,
            )
    try:
        schedule = DistillerSchedule.model_validate(data)
    except ValidationError as exc:
        raise format_validation_error(exc, DistillerSchedule, source) from None
    _, policy_index = _convert_policies(schedule)
    return validate_native(to_native_dict(schedule), _translate(source, policy_index))


def load_distiller(path: str | Path) -> Recipe:
    """Load a Distiller schedule YAML file as a native :class:`Recipe`.

    Args:
        path: the schedule file.

    Returns:
        The converted recipe (no ``model``/``data``/``training.epochs``: give them on the
        command line or set them on the returned object).

    Raises:
        ConfigError: one line per problem, each ``file:line: what — fix``.
    """
    data, source = read_yaml(path)
    return validate_distiller(data, source)
