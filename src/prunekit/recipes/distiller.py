"""Load Intel Distiller compression schedules and convert them to native recipes.

A Distiller schedule (``version: 1``) defines named ``pruners``, ``regularizers`` and
``lr_schedulers`` (each with a ``class:``), optional ``extensions`` (network thinning) and
``policies`` that say when each instance acts (``starting_epoch``/``ending_epoch``/``frequency``,
``ending_epoch`` exclusive, or ``epochs: [...]``), optionally with ``args``. Weight names usually
carry DataParallel's ``module.`` prefix; it is ignored when matching against the model.

The schedule is first validated against a typed Distiller schema
(:mod:`prunekit.recipes._distiller_schema`, so errors use Distiller's key names and the file's
lines), then converted with Distiller's semantics: own-weight structure ranking with ``int(s·n)``
counts, fine-grained ``int(s·n)`` levels, the sensitivity std taken once, counts relative to the
survivors of each thinning. ``docs/recipes.md`` has the mapping table.

Example:
    >>> recipe = load_distiller("examples/recipes/distiller/resnet18_agp_fine.yaml")
    >>> recipe.pruners["conv_fine"].method
    'magnitude'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from prunekit.errors import ConfigError
from prunekit.recipes import _distiller_schema as ds
from prunekit.recipes._source import (
    SourceMap,
    format_validation_error,
    raise_problems,
    read_yaml,
)
from prunekit.recipes.native import Recipe, validate_native

#: top-level sections Distiller's ``dict_config`` reads
SECTIONS = (
    "version",
    "pruners",
    "regularizers",
    "quantizers",
    "lr_schedulers",
    "extensions",
    "policies",
)
_ITEM_SECTIONS = {
    "pruners": "pruner",
    "regularizers": "regularizer",
    "lr_schedulers": "lr_scheduler",
    "extensions": "extension",
}
_KNOWN = {
    "pruners": ds.PRUNER_CLASSES,
    "regularizers": ("L1Regularizer", "GroupLassoRegularizer", "GroupVarianceRegularizer"),
    "lr_schedulers": (
        "StepLR",
        "MultiStepLR",
        "MultiStepMultiGammaLR",
        "ExponentialLR",
        "CosineAnnealingLR",
        "PolynomialLR",
    ),
    "extensions": ("StructureRemover", "FilterRemover", "ChannelRemover"),
}
# Distiller group type → native structure (ranked pruners: "Rows" are a Linear's input columns).
_RANKED = {"Filters": "filters", "3D": "filters", "Channels": "channels", "Rows": "cols"}
# Group thresholding and regularizers: "Rows" are output rows, "Cols" input columns.
_THRESHOLD = {
    "2D": "kernels",
    "3D": "filters",
    "Filters": "filters",
    "Channels": "channels",
    "Rows": "rows",
    "Cols": "cols",
}
_LASSO: dict[str, list[str]] = {
    **{k: [v] for k, v in _THRESHOLD.items()},
    "4D": ["layer"],
    "Rows+Cols": ["rows", "cols"],
    "Cols+Rows": ["rows", "cols"],
    "Channels+4D": ["channels", "layer"],
    "4D+Channels": ["channels", "layer"],
}
# Distiller key → native key (for error lines after conversion).
_FIELD_RENAMES = {
    "weights": "params",
    "desired_sparsity": "final_sparsity",
    "reg_regims": "strengths",
    "low_thresh_mult": "low",
    "hi_thresh_mult": "high",
    "sensitivity_multiplier": "growth",
    "sparsity_range": "level_range",
    "kwargs": "block_shape",
    "group_type": "target",
    "threshold_criteria": "threshold",
}


# ---------------------------------------------------------------------------------------------
# pruners
# ---------------------------------------------------------------------------------------------


def _ranking(p: Any) -> str:
    return str(getattr(p, "ranking", None) or "own")


def _structured(p: Any, criterion: str, target: str, removes: set[str]) -> dict[str, Any]:
    return {
        "method": "structured",
        "criterion": criterion,
        "target": target,
        "ranking": _ranking(p),
        "surgery": target in removes,
    }


def _schedule_of(p: Any) -> dict[str, Any]:
    if hasattr(p, "initial_sparsity"):
        return {
            "schedule": "agp",
            "initial_sparsity": p.initial_sparsity,
            "final_sparsity": p.final_sparsity,
        }
    return {"schedule": "one_shot", "final_sparsity": p.desired_sparsity}


def _ranked(p: Any, criterion: str, removes: set[str]) -> dict[str, Any]:
    """A ranked structure pruner (L1/L2 or a filter criterion), AGP or one-shot."""
    out: dict[str, Any] = {"params": p.weights, **_schedule_of(p)}
    if criterion == "bernoulli":
        return {**out, "method": "group", "group": "filters", "criterion": "bernoulli"}
    if p.group_type == "Blocks":
        shape = (p.kwargs or {})["block_shape"]
        return {
            **out,
            "method": "group",
            "group": "blocks",
            "criterion": criterion,
            "block_shape": shape,
        }
    target = _RANKED[p.group_type]
    if target == "cols":  # a Linear's input columns, masked in that weight only (never thinned)
        return {**out, "method": "group", "group": "cols", "criterion": criterion}
    return {**out, **_structured(p, criterion, target, removes)}


def _by_group(regims: dict[str, list[Any]], table: dict[str, str]) -> dict[str, dict[str, float]]:
    """reg_regims ``{weight: [value, group]}`` → ``{native group: {weight: value}}``."""
    out: dict[str, dict[str, float]] = {}
    for name, (value, group) in regims.items():
        out.setdefault(table[str(group)], {})[name] = float(value)
    return out


def _regims_pruners(p: ds.DRankedRegims, removes: set[str]) -> dict[str, dict[str, Any]]:
    """Distiller's first ``L1RankedStructureParameterPruner`` grammar: one native pruner per
    structure kind, each weight at its own fraction."""
    out = {}
    for target, levels in _by_group(p.reg_regims, _RANKED).items():
        base = {"schedule": "one_shot", "params": list(levels), "levels": levels}
        if target == "cols":
            out[target] = {**base, "method": "group", "group": "cols", "criterion": "l1"}
        else:
            out[target] = {**base, **_structured(p, "l1", target, removes)}
    return out


def _threshold_pruners(p: ds.DStructurePruner) -> dict[str, dict[str, Any]]:
    norm = "mean_abs" if p.threshold_criteria == "Mean_Abs" else "max"
    return {
        group: {
            "method": "group",
            "group": group,
            "thresholds": values,
            "threshold_norm": norm,
            "params": list(values),
        }
        for group, values in _by_group(p.reg_regims, _THRESHOLD).items()
    }


def _convert_pruner(p: Any, removes: set[str]) -> dict[str, dict[str, Any]]:
    """One Distiller pruner → native pruner dicts, keyed by a suffix ("" when one)."""
    if isinstance(p, ds.DRankedRegims):
        return _regims_pruners(p, removes)
    if isinstance(p, ds.DStructurePruner):
        return _threshold_pruners(p)
    return {"": _convert_single(p, removes)}


def _convert_single(p: Any, removes: set[str]) -> dict[str, Any]:
    """One Distiller pruner → one native pruner dict, by its class's entry in
    :data:`_PRUNERS` (every schema class a file can name has one)."""
    convert = next(_PRUNERS[c] for c in type(p).__mro__ if c in _PRUNERS)
    return convert(p, removes)


def _agp(p: Any, removes: set[str]) -> dict[str, Any]:
    return {
        "method": "magnitude",
        "schedule": "agp",
        "rounding": "floor",
        "initial_sparsity": p.initial_sparsity,
        "final_sparsity": p.final_sparsity,
        "params": p.weights,
    }


def _ranked_with(table: Mapping[str, Any]) -> Callable[[Any, set[str]], dict[str, Any]]:
    return lambda p, removes: _ranked(p, table[p.class_], removes)


def _random_level(p: Any, removes: set[str]) -> dict[str, Any]:
    group = "blocks" if p.group_type == "Blocks" else _RANKED[p.group_type]
    out = {
        "method": "group",
        "group": group,
        "criterion": "l1",
        "params": p.weights,
        "level_range": p.sparsity_range,
    }
    if group == "blocks":
        out["block_shape"] = (p.kwargs or {})["block_shape"]
    return out


def _sensitivity(p: Any, removes: set[str]) -> dict[str, Any]:
    # Distiller computes std(W) once and reuses the threshold at every active epoch.
    return {
        "method": "std_threshold",
        "schedule": "iterative",
        "std": "first",
        "sensitivities": p.sensitivities,
    }


def _splicing(p: Any, removes: set[str]) -> dict[str, Any]:
    return {
        "method": "splicing",
        "sensitivities": p.sensitivities,
        "low": p.low_thresh_mult,
        "high": p.hi_thresh_mult,
        "growth": p.sensitivity_multiplier,
    }


def _magnitude(p: Any, removes: set[str]) -> dict[str, Any]:
    return {"method": "magnitude", "schedule": "iterative", "thresholds": p.thresholds}


def _level(p: Any, removes: set[str]) -> dict[str, Any]:
    return {"method": "magnitude", "schedule": "one_shot", "rounding": "floor", "levels": p.levels}


def _baidu_rnn(p: Any, removes: set[str]) -> dict[str, Any]:
    return {
        "method": "ramp_threshold",
        "q": p.q,
        "ramp_epoch": p.ramp_epoch,
        "ramp_slope_mult": p.ramp_slope_mult,
        "params": p.weights,
    }


def _slimming(p: Any, removes: set[str]) -> dict[str, Any]:
    return {"method": "slim", "percent": p.desired_sparsity, "params": p.weights}


#: Distiller pruner schema class → its native pruner dict.
_PRUNERS: dict[type, Callable[[Any, set[str]], dict[str, Any]]] = {
    ds.DAGPPruner: _agp,
    ds.DRankedAGP: _ranked_with(ds.RANKED_AGP),
    ds.DRanked: _ranked_with(ds.RANKED_ONE_SHOT),
    ds.DFilterAGP: _ranked_with(ds.FILTER_AGP),
    ds.DFilterRanked: _ranked_with(ds.FILTER_ONE_SHOT),
    ds.DRandomLevel: _random_level,
    ds.DSensitivityPruner: _sensitivity,
    ds.DSplicingPruner: _splicing,
    ds.DMagnitudePruner: _magnitude,
    ds.DLevelPruner: _level,
    ds.DBaiduRNNPruner: _baidu_rnn,
    ds.DSlimmingPruner: _slimming,
}


# ---------------------------------------------------------------------------------------------
# regularizers, LR schedulers
# ---------------------------------------------------------------------------------------------


def _threshold(criteria: str | None) -> str | None:
    return None if criteria is None else ("mean_abs" if criteria == "Mean_Abs" else "max")


def _convert_regularizer(r: Any) -> dict[str, Any]:
    if isinstance(r, ds.DL1Regularizer):
        return {
            "kind": "l1",
            "strengths": r.reg_regims,
            "threshold": _threshold(r.threshold_criteria),
        }
    strengths = {k: float(v[0]) for k, v in r.reg_regims.items()}
    if isinstance(r, ds.DGroupVarianceRegularizer):
        return {"kind": "group_variance", "strengths": strengths}
    groups: dict[str, Any] = {}
    for name, (_, group) in r.reg_regims.items():
        kinds = _LASSO[str(group)]
        groups[name] = kinds[0] if len(kinds) == 1 else kinds
    return {
        "kind": "group_lasso",
        "strengths": strengths,
        "groups": groups,
        "threshold": _threshold(r.threshold_criteria),
    }


def _convert_lr(s: Any) -> dict[str, Any]:
    # Distiller steps its LR schedulers with the absolute epoch (step(epoch=current_epoch + 1)),
    # so a policy that starts late begins where the schedule would be by then.
    return {**_lr_kind(s), "counting": "absolute"}


def _lr_kind(s: Any) -> dict[str, Any]:
    return next(_LR[c] for c in type(s).__mro__ if c in _LR)(s)


#: Distiller LR scheduler schema class → the native LR policy fields.
_LR: dict[type, Callable[[Any], dict[str, Any]]] = {
    ds.DStepLR: lambda s: {"kind": "step", "step_size": s.step_size, "gamma": s.gamma},
    ds.DMultiStepLR: lambda s: {"kind": "multistep", "milestones": s.milestones, "gamma": s.gamma},
    ds.DMultiStepMultiGammaLR: lambda s: {
        "kind": "multistep_gammas",
        "milestones": s.milestones,
        "gammas": s.gammas,
    },
    ds.DExponentialLR: lambda s: {"kind": "exponential", "gamma": s.gamma},
    ds.DCosineLR: lambda s: {"kind": "cosine", "t_max": s.T_max, "eta_min": s.eta_min},
    ds.DPolynomialLR: lambda s: {"kind": "polynomial", "total_iters": s.T_max, "power": s.power},
}


# ---------------------------------------------------------------------------------------------
# policies
# ---------------------------------------------------------------------------------------------


def _masking(args: ds.DPruneArgs | None) -> dict[str, Any] | None:
    """A pruner policy's Distiller ``args`` → native ``masking`` (None: the default behaviour).

    Without ``mask_on_forward_only`` Distiller re-masks after every step anyway, so double copies
    and keep_mask change nothing and are dropped.
    """
    if args is None:
        return None
    fwd = args.mask_on_forward_only
    out = {
        "every_steps": args.mini_batch_pruning_frequency or None,
        "forward_only": fwd,
        "double_copies": fwd and args.use_double_copies,
        "mask_gradients": args.mask_gradients,
        "discard": args.discard_masks_at_minibatch_end,
        "keep": fwd and args.keep_mask,
        "skip_first_step": args.skip_first_minibatch,
    }
    out = {k: v for k, v in out.items() if v not in (None, False)}
    return out or None


def _epochs(policy: ds.DPolicy) -> dict[str, Any]:
    return {
        k: getattr(policy, k)
        for k in ("starting_epoch", "ending_epoch", "frequency", "epochs")
        if getattr(policy, k) is not None
    }


def _thinning(schedule: ds.DistillerSchedule) -> tuple[list[int], set[str]]:
    """Epochs of the extension policies, and what they remove (``filters``/``channels``)."""
    epochs: set[int] = set()
    removes: set[str] = set()
    for policy in schedule.policies:
        if policy.kind != "extension":
            continue
        ext = schedule.extensions[policy.ref.instance_name]
        removes.add(ext.removes)
        if policy.epochs is not None:
            epochs.update(policy.epochs)
        elif policy.ending_epoch is not None:
            start = policy.starting_epoch or 0
            epochs.update(range(start, policy.ending_epoch, policy.frequency or 1))
    return sorted(epochs), removes


class _Converter:
    """Builds the native recipe data and the Distiller-name → native-name maps."""

    def __init__(self, schedule: ds.DistillerSchedule) -> None:
        self.schedule = schedule
        self.thinning_epochs, self.removes = _thinning(schedule)
        self.pruners: dict[str, dict[str, Any]] = {}
        self.names: dict[str, list[str]] = {}  # Distiller pruner → native pruner names
        self.policies: list[dict[str, Any]] = []
        self.policy_index: dict[int, int] = {}  # Distiller policy → first native policy
        self.variants: dict[str, str] = {}  # per-policy pruner copy → the pruner it copies
        for name, p in schedule.pruners.items():
            parts = _convert_pruner(p, self.removes)
            one = len(parts) == 1
            self.names[name] = [name if one else f"{name}[{k}]" for k in parts]
            for native, body in zip(self.names[name], parts.values()):
                self.pruners[native] = body

    def _variant(self, native: str, args: ds.DPruneArgs, where: str) -> str:
        """A copy of a pruner with the policy's ``levels`` / ``fold_batchnorm`` applied."""
        body = dict(self.pruners[native])
        if args.levels is not None:
            if "levels" not in body or body["method"] != "magnitude":
                raise ConfigError(
                    f"{where}: args.levels only changes a SparsityLevelParameterPruner's levels "
                    "(Distiller ignores it for other classes); remove it"
                )
            body["levels"] = args.levels
        if args.fold_batchnorm:
            if (
                body["method"] not in ("structured", "magnitude")
                or body.get("criterion", "l1") not in ("l1", "l2")
                or "thresholds" in body
            ):
                raise ConfigError(
                    f"{where}: args.fold_batchnorm ranks BN-folded weights, which prunekit does "
                    "for AutomatedGradualPruner, SparsityLevelParameterPruner and the L1/L2 "
                    "ranked pruners; remove it"
                )
            body["fold_bn"] = True
            if body["method"] == "structured":
                body["ranking"] = "own"
        name = f"{native}@{len(self.pruners)}"
        self.pruners[name] = body
        self.variants[name] = native
        return name

    def convert_policies(self, source: SourceMap) -> None:
        for i, policy in enumerate(self.schedule.policies):
            if policy.kind in ("extension", "quantizer"):
                continue  # thinning: thinning_epochs; quantizers: skipped (noted on load)
            self.policy_index[i] = len(self.policies)
            base = _epochs(policy)
            if policy.kind == "lr_scheduler":
                self.policies.append({"lr_schedule": policy.ref.instance_name, **base})
            elif policy.kind == "regularizer":
                self.policies.append(self._regularizer_policy(policy, base))
            else:
                self._pruner_policies(policy, base, source.prefix(("policies", i)))

    def _regularizer_policy(self, policy: ds.DPolicy, base: dict[str, Any]) -> dict[str, Any]:
        name = policy.ref.instance_name
        out: dict[str, Any] = {"regularizer": name, **base}
        args = getattr(policy.ref, "args", None)
        has_threshold = getattr(self.schedule.regularizers[name], "threshold_criteria", None)
        if args is not None and args.keep_mask and has_threshold:
            out["masking"] = {"keep": True}
        return out

    def _pruner_policies(self, policy: ds.DPolicy, base: dict[str, Any], where: str) -> None:
        args = getattr(policy.ref, "args", None)
        masking = _masking(args)
        for native in self.names[policy.ref.instance_name]:
            if args is not None and (args.levels is not None or args.fold_batchnorm):
                native = self._variant(native, args, where.rstrip(": "))
            entry: dict[str, Any] = {"pruner": native, **base}
            if masking is not None:
                entry["masking"] = masking
            self.policies.append(entry)

    def _drop_replaced(self) -> None:
        """A pruner every policy of which uses a per-policy copy is no pruner of its own; a
        single such copy takes back its name."""
        used = {p.get("pruner") for p in self.policies}
        for base in set(self.variants.values()) - used:
            del self.pruners[base]
            copies = [v for v, b in self.variants.items() if b == base]
            if len(copies) == 1:
                self.pruners[base] = self.pruners.pop(copies[0])
                del self.variants[copies[0]]
                for p in self.policies:
                    if p.get("pruner") == copies[0]:
                        p["pruner"] = base

    def native(self) -> dict[str, Any]:
        s = self.schedule
        self._drop_replaced()
        pruners = self.pruners
        return {
            # Distiller keeps the LR constant unless an lr_scheduler policy changes it.
            "training": {"schedule": "constant"},
            "pruners": pruners,
            "regularizers": {n: _convert_regularizer(r) for n, r in s.regularizers.items()},
            "lr_schedules": {n: _convert_lr(v) for n, v in s.lr_schedulers.items()},
            "policies": self.policies,
            "thinning_epochs": self.thinning_epochs,
        }


# ---------------------------------------------------------------------------------------------
# source lines
# ---------------------------------------------------------------------------------------------


def _translate(source: SourceMap, conv: _Converter) -> SourceMap:
    """Re-key a Distiller file's line map by the native paths the conversion produces."""
    out = SourceMap(source.filename, format="distiller")
    for lines, target in ((source.lines, out.lines), (source.key_lines, out.key_lines)):
        for path, line in lines.items():
            for native in _native_paths(path, conv):
                target.setdefault(native, line)
    # Per-policy copies (``name@k``) point at the lines of the pruner they copy.
    for variant, base in conv.variants.items():
        for lines in (out.lines, out.key_lines):
            for path in [p for p in list(lines) if p[:2] == ("pruners", base)]:
                lines.setdefault(("pruners", variant, *path[2:]), lines[path])
    return out


def _native_paths(path: tuple[Any, ...], conv: _Converter) -> list[tuple[Any, ...]]:
    if not path:
        return [path]
    head, rest = path[0], list(path[1:])
    if head == "lr_schedulers":
        head = "lr_schedules"
    if head == "policies" and rest:
        if rest[0] not in conv.policy_index:
            return []
        rest[0] = conv.policy_index[rest[0]]
        if len(rest) > 1 and rest[1] == "lr_scheduler":
            rest[1] = "lr_schedule"
        return [(head, *[r for r in rest if r not in ("instance_name", "args")])]
    if len(rest) > 1:
        rest[1] = _FIELD_RENAMES.get(rest[1], rest[1])
    if head == "pruners" and rest and rest[0] in conv.names:
        return [(head, native, *rest[1:]) for native in conv.names[rest[0]]]
    return [(head, *rest)]


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------


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
    refs = ("pruner", "regularizer", "lr_scheduler", "extension", "quantizer")
    return isinstance(policies, list) and any(
        isinstance(p, dict) and any(isinstance(p.get(r), dict) for r in refs) for p in policies
    )


def not_a_schedule(data: dict[str, Any], filename: str) -> ConfigError:
    """The one-line error for a YAML file that is no compression schedule at all."""
    keys = ", ".join(list(map(str, data))[:5]) + (", …" if len(data) > 5 else "")
    return ConfigError(
        f"{filename}: this is not a compression schedule: it has none of the sections "
        f"{', '.join(SECTIONS[1:])} (its top-level keys: {keys}; Distiller's AMC and "
        "quantization-statistics files are read by other Distiller tools, not by the scheduler)"
    )


def _precheck(data: dict[str, Any], source: SourceMap) -> list[str]:
    """One line per entry whose class is refused or unknown; those entries (and policies that
    use them) are removed from ``data`` so the rest of the file is still checked."""
    lines: list[str] = []
    dropped: dict[str, set[str]] = {}
    for section, known in _KNOWN.items():
        entries = data.get(section)
        if not isinstance(entries, dict):
            continue
        noun = _ITEM_SECTIONS[section]
        for name, entry in list(entries.items()):
            cls = entry.get("class") if isinstance(entry, dict) else None
            if isinstance(cls, str) and cls in known:
                continue
            if not isinstance(cls, str):
                why = f"{noun} {name!r} needs a 'class' key (one of: {', '.join(known)})"
            elif cls in ds.REFUSED:
                why = f"{cls} is not supported: {ds.REFUSED[cls]}"
            else:
                why = (
                    f"unsupported class {cls!r} in {noun} {name!r} (supported: {', '.join(known)})"
                )
            lines.append(source.prefix((section, name, "class")) + why)
            dropped.setdefault(noun, set()).add(name)
            del entries[name]
    policies = data.get("policies")
    if dropped and isinstance(policies, list):
        data["policies"] = [p for p in policies if not _uses(p, dropped)]
    return lines


def _uses(policy: Any, dropped: dict[str, set[str]]) -> bool:
    if not isinstance(policy, dict):
        return False
    return any(
        isinstance(policy.get(noun), dict) and policy[noun].get("instance_name") in names
        for noun, names in dropped.items()
    )


def _quantizers(data: dict[str, Any], source: SourceMap, skip: bool, notes: list[str]) -> None:
    """Refuse (one line) or, with ``skip``, drop the quantization parts with a note."""
    q_policies = [
        i
        for i, p in enumerate(data.get("policies") or [])
        if isinstance(p, dict) and "quantizer" in p
    ]
    if "quantizers" not in data and not q_policies:
        return
    where = ("quantizers",) if "quantizers" in data else ("policies", q_policies[0])
    if not skip:
        raise source.error(
            where,
            "quantization is not supported: prunekit does not quantize; pass --skip-quantizers "
            "(skip_quantizers=True) to run the pruning part without it, or remove the "
            "'quantizers' section and its policies",
            key=True,
        )
    names = ", ".join(map(str, data.get("quantizers") or {})) or "none defined"
    notes.append(
        f"{source.prefix(where, key=True)}quantizers skipped ({names}; {len(q_policies)} "
        "policies): the run prunes and trains in full precision only"
    )
    data.pop("quantizers", None)


def validate_distiller(data: Any, source: SourceMap, *, skip_quantizers: bool = False) -> Recipe:
    """Validate parsed Distiller data and convert it to a native :class:`Recipe`.

    Args:
        data: the parsed YAML document.
        source: its line map (from :func:`prunekit.recipes._source.parse_yaml`).
        skip_quantizers: drop a ``quantizers`` section and its policies (with a note in
            ``recipe.notes``) instead of refusing the file.

    Returns:
        The native recipe; ``recipe.source`` points at the Distiller file's lines.

    Raises:
        ConfigError: one line per problem, each ``file:line: what — fix``.
    """
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source.prefix(())}a Distiller schedule must be a YAML mapping with 'pruners:', "
            f"'policies:' …, got a {type(data).__name__}"
        )
    if not any(k in data for k in SECTIONS):
        raise not_a_schedule(data, source.filename)
    notes: list[str] = []
    _quantizers(data, source, skip_quantizers, notes)
    lines = _precheck(data, source)
    try:
        schedule = ds.DistillerSchedule.model_validate(data)
    except ValidationError as exc:
        lines += str(format_validation_error(exc, ds.DistillerSchedule, source)).split("\n")
        raise_problems(source, lines)
    raise_problems(source, lines)
    conv = _Converter(schedule)
    conv.convert_policies(source)
    recipe = validate_native(conv.native(), _translate(source, conv))
    recipe._notes.extend(notes + _unused_extensions(schedule, source))
    return recipe


def _unused_extensions(schedule: ds.DistillerSchedule, source: SourceMap) -> list[str]:
    used = {p.ref.instance_name for p in schedule.policies if p.kind == "extension"}
    return [
        f"{source.prefix(('extensions', n), key=True)}extension {n!r} is defined but no policy "
        "uses it, so Distiller never thins with it (nothing is sliced)"
        for n in schedule.extensions
        if n not in used
    ]


def load_distiller(path: str | Path, *, skip_quantizers: bool = False) -> Recipe:
    """Load a Distiller schedule YAML file as a native :class:`Recipe`.

    Args:
        path: the schedule file.
        skip_quantizers: run the pruning part of a schedule that also quantizes.

    Returns:
        The converted recipe (no ``model``/``data``/``training.epochs``: give them on the
        command line or set them on the returned object).

    Raises:
        ConfigError: one line per problem, each ``file:line: what — fix``.
    """
    data, source = read_yaml(path)
    return validate_distiller(data, source, skip_quantizers=skip_quantizers)


def schema_models() -> list[type[BaseModel]]:
    """Every Distiller class model prunekit reads (for documentation and tests)."""
    return [
        m
        for m in vars(ds).values()
        if isinstance(m, type)
        and issubclass(m, ds._Class)
        and m is not ds._Class
        and m is not ds._Ranked
    ]
