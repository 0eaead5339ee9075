"""How a model was made, as plain data: its base model spec and the steps applied to it.

A :class:`ModelRecord` names the base model (``"torchvision:resnet18"`` + constructor kwargs) and
the steps that turned it into the model at hand, in order. A step is either a
:class:`~prunekit.plan.PruningPlan` (channels removed by surgery) or a :class:`Conversion` (a
structural change: layers replaced by another kind, e.g. Versatile Filters or folded
BatchNorms). :func:`prunekit.save` writes the record beside the weights and
:func:`prunekit.load` replays it, so any method's output is rebuilt without pickle.

The record travels explicitly (``result.plan``, ``record.then(plan)``); nothing is attached to
the user's model.

Example:
    >>> record = ModelRecord("torchvision:resnet18").then(result.plan)
    >>> prunekit.save(model, "out/resnet18-p50", record)
    >>> same_shapes = record.build()          # base model + replayed plan, untrained
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from prunekit.errors import CheckpointError, ConfigError, PlanError
from prunekit.models import build_model
from prunekit.plan import FORMAT as PLAN_FORMAT
from prunekit.plan import PruningPlan
from prunekit.registry import Registry
from prunekit.surgery import apply_plan

CONVERSION_FORMAT = "prunekit.conversion/1"
#: conversion kind → ``fn(model, data)`` replaying it on a freshly built model, in place.
ConversionFn = Callable[[nn.Module, Mapping[str, Any]], None]
CONVERSIONS: Registry[ConversionFn] = Registry("conversion")


@dataclass(frozen=True)
class Conversion:
    """A structural step: what a converter did to a model, enough to redo it on a fresh one.

    Attributes:
        kind: a name in :data:`CONVERSIONS` (registered by the converter's module).
        data: JSON-able description (converted module paths and their new configs...).
        module: the module registering ``kind``; a ``prunekit.*`` module is imported when a
            saved model is loaded before it was imported (other modules must be imported by
            the user first: a file never makes prunekit import arbitrary code).
    """

    kind: str
    data: Mapping[str, Any] = field(default_factory=dict)
    module: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "format": CONVERSION_FORMAT,
            "kind": self.kind,
            "module": self.module,
            "data": dict(self.data),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Conversion:
        """Parse :meth:`to_dict` output."""
        if data.get("format") != CONVERSION_FORMAT or not isinstance(data.get("kind"), str):
            raise PlanError(f"not a prunekit conversion (expected format {CONVERSION_FORMAT!r})")
        body = data.get("data", {})
        if not isinstance(body, Mapping):
            raise PlanError(f"conversion {data['kind']!r}: 'data' must be a mapping")
        module = data.get("module")
        return cls(str(data["kind"]), dict(body), None if module is None else str(module))

    def apply(self, model: nn.Module) -> nn.Module:
        """Replay this conversion on ``model`` (in place) and return it."""
        if self.kind not in CONVERSIONS and (self.module or "").startswith("prunekit."):
            importlib.import_module(str(self.module))  # registers the kind
        if self.kind not in CONVERSIONS:
            hint = f"; import {self.module} first" if self.module else ""
            raise ConfigError(f"unknown conversion {self.kind!r}{hint}")
        CONVERSIONS.get(self.kind)(model, self.data)
        return model


Step = PruningPlan | Conversion


def step_to_dict(step: Step) -> dict[str, Any]:
    """A step as JSON-ready data."""
    return step.to_dict()


def step_from_dict(data: Mapping[str, Any]) -> Step:
    """Parse a step written by :func:`step_to_dict` (a plan or a conversion)."""
    if not isinstance(data, Mapping):
        raise PlanError(f"a step must be a JSON object, got {type(data).__name__}")
    if data.get("format") == PLAN_FORMAT:
        return PruningPlan.from_dict(data)
    if data.get("format") == CONVERSION_FORMAT:
        return Conversion.from_dict(data)
    raise PlanError(
        f"not a prunekit plan or conversion (format {data.get('format')!r}; expected "
        f"{PLAN_FORMAT!r} or {CONVERSION_FORMAT!r})"
    )


def apply_step(model: nn.Module, step: Step) -> nn.Module:
    """Apply one step to ``model`` in place (surgery for a plan, replay for a conversion)."""
    if isinstance(step, PruningPlan):
        return apply_plan(model, step)
    return step.apply(model)


@dataclass(frozen=True)
class ModelRecord:
    """The base model and the steps applied to it.

    Args:
        model: base model spec, e.g. ``"zoo:vgg19"`` (see :func:`prunekit.models.build_model`).
        kwargs: constructor keyword arguments.
        steps: plans and conversions, in the order they were applied.
    """

    model: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    steps: tuple[Step, ...] = ()

    @classmethod
    def of(cls, spec: str | Mapping[str, Any] | ModelRecord) -> ModelRecord:
        """A record from a spec string, a ``{"model", "kwargs"}`` mapping, or a record."""
        if isinstance(spec, ModelRecord):
            return spec
        if isinstance(spec, str):
            return cls(spec)
        if not isinstance(spec, Mapping) or not isinstance(spec.get("model"), str):
            raise CheckpointError(
                "a model spec must name the base model, e.g. {'model': 'torchvision:resnet18'}"
            )
        return cls(spec["model"], dict(spec.get("kwargs") or {}))

    def then(self, *steps: Step) -> ModelRecord:
        """This record with ``steps`` appended."""
        return ModelRecord(self.model, dict(self.kwargs), (*self.steps, *steps))

    def spec(self) -> dict[str, Any]:
        """``{"model": ..., "kwargs": {...}}`` of the base model."""
        return {"model": self.model, "kwargs": dict(self.kwargs)}

    def build(self) -> nn.Module:
        """The base model (fresh weights) with every step replayed."""
        model = build_model(self.model, **self.kwargs)
        for step in self.steps:
            apply_step(model, step)
        return model
