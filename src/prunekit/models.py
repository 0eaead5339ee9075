"""Build models from a spec string such as ``torchvision:resnet50`` or ``zoo:vgg19``.

A spec names a factory namespace and a model. Namespaces:

* ``torchvision:<name>`` — ``torchvision.models.get_model(name, weights=None, **kwargs)``
* ``zoo:<name>`` — prunekit's own zoo (:mod:`prunekit.zoo`)
* any namespace added with :func:`register_factory`

Keyword arguments travel as a dict, so a spec is plain JSON data:
``{"model": "zoo:vgg", "kwargs": {"depth": 19, "num_classes": 10}}``.

Example:
    >>> model = build_model("torchvision:resnet18", num_classes=10)
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
import typing
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from prunekit.errors import ConfigError, first_line
from prunekit.registry import Registry

ModelFactory = Callable[..., nn.Module]
FACTORIES: Registry[Callable[[str, dict[str, Any]], nn.Module]] = Registry("model namespace")


def register_factory(namespace: str) -> Callable[[Callable[[str, dict[str, Any]], nn.Module]], Any]:
    """Register ``fn(name, kwargs) -> nn.Module`` as the builder for ``namespace:<name>`` specs."""
    return FACTORIES.register(namespace)


@FACTORIES.register("torchvision")
def _torchvision(name: str, kwargs: dict[str, Any]) -> nn.Module:
    import torchvision

    try:
        torchvision.models.get_model_builder(name)
    except ValueError:
        raise ConfigError(
            f"unknown torchvision model {name!r}; see torchvision.models.list_models()"
        ) from None
    kwargs = dict(kwargs)
    kwargs.setdefault("weights", None)
    try:
        return torchvision.models.get_model(name, **kwargs)
    except TypeError as exc:
        spec, text = f"torchvision:{name}", str(exc)
        bad = re.search(r"unexpected keyword argument '(\w+)'", text)
        if bad is not None:
            raise ConfigError(_unknown_kwarg(spec, bad.group(1), name)) from None
        twice = re.search(r"multiple values for (?:keyword )?argument '(\w+)'", text)
        if twice is not None:
            raise ConfigError(
                f"{spec} sets {twice.group(1)!r} itself; leave it out of the kwargs"
            ) from None
        raise


def _unknown_kwarg(spec: str, bad: str, name: str) -> str:
    """One line naming a misspelled torchvision kwarg, the accepted ones and the closest."""
    import torchvision

    builder = torchvision.models.get_model_builder(name)
    valid = _keyword_names(builder)
    made = typing.get_type_hints(builder).get("return")
    if isinstance(made, type):  # builders annotate the model class they make
        valid |= _keyword_names(made)  # the signature of a class is its __init__'s
    close = difflib.get_close_matches(bad, sorted(valid), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{spec} does not take {bad!r}; {hint}its constructor takes: {', '.join(sorted(valid))}"


def _keyword_names(fn: Callable[..., Any]) -> set[str]:
    """Parameters of ``fn`` a caller may give by keyword (not self, *args or **kwargs)."""
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = inspect.signature(fn).parameters.values()
    return {p.name for p in params if p.kind in kinds and p.name != "self"}


@FACTORIES.register("zoo")
def _zoo(name: str, kwargs: dict[str, Any]) -> nn.Module:
    zoo = importlib.import_module("prunekit.zoo")
    return zoo.build(name, **kwargs)


def parse_spec(spec: str) -> tuple[str, str]:
    """Split ``"namespace:name"`` into its parts, with a clear error on bad input."""
    if ":" not in spec:
        raise ConfigError(
            f"model spec {spec!r} has no namespace; write e.g. 'torchvision:{spec}' or 'zoo:{spec}'"
        )
    namespace, name = spec.split(":", 1)
    if not namespace or not name:
        raise ConfigError(f"model spec {spec!r} must look like 'namespace:name'")
    return namespace, name


def build_model(spec: str, **kwargs: Any) -> nn.Module:
    """Build a fresh (untrained) model from a spec string.

    Args:
        spec: ``"namespace:name"``, e.g. ``"torchvision:resnet50"``.
        **kwargs: passed to the model's constructor.

    Returns:
        The model, in training mode, on the CPU.
    """
    namespace, name = parse_spec(spec)
    return FACTORIES.get(namespace)(name, kwargs)


def kwargs_for_data(
    spec: str, kwargs: Mapping[str, Any] | None, *, num_classes: int, in_channels: int
) -> dict[str, Any]:
    """Constructor kwargs fitting model ``spec`` to a dataset (explicit kwargs win).

    ``num_classes`` always comes from the data; ``in_channels`` too for prunekit's zoo models
    when the images are not RGB (MNIST: 1) — other namespaces have no common argument for it.

    Args:
        spec: the model spec, e.g. ``"zoo:vgg11"``.
        kwargs: the user's constructor kwargs.
        num_classes: classes in the dataset.
        in_channels: channels of its images.

    Returns:
        The kwargs to build the model with.

    Example:
        >>> kwargs_for_data("zoo:lenet5", {}, num_classes=10, in_channels=1)
        {'num_classes': 10, 'in_channels': 1}
    """
    out = dict(kwargs or {})
    out.setdefault("num_classes", num_classes)
    if in_channels != 3 and parse_spec(spec)[0] == "zoo":
        out.setdefault("in_channels", in_channels)
    return out


def _first_layer(model: nn.Module) -> str:
    """What the model's first conv/linear layer expects, for error messages ('' if none)."""
    for name, mod in model.named_modules():
        if isinstance(mod, nn.modules.conv._ConvNd):
            return f"; its first layer {name!r} expects {mod.in_channels} input channel(s)"
        if isinstance(mod, nn.Linear):
            return f"; its first layer {name!r} expects {mod.in_features} input features"
    return ""


def check_inputs(model: nn.Module, inputs: Any, *, hint: str = "pass inputs it accepts") -> None:
    """Run ``model`` once (eval, no grad) so unfit inputs are one clear error up front.

    Args:
        model: the model (its train/eval mode is restored).
        inputs: a tensor or a tuple of positional inputs.
        hint: how the user fixes it (the CLI: ``"pass a matching --input-shape"``).

    Raises:
        ConfigError: the forward pass fails; names the input shapes, the first line of the
            error and what the first layer expects.

    Example:
        >>> check_inputs(model, torch.randn(1, 3, 224, 224))
    """
    import torch

    args = inputs if isinstance(inputs, tuple) else (inputs,)
    was = model.training
    try:
        with torch.no_grad():
            model.eval()(*args)
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        shapes = [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]
        first = first_line(exc, 240) or type(exc).__name__
        raise ConfigError(
            f"{type(model).__name__} does not run on inputs of shape "
            f"{shapes[0] if len(shapes) == 1 else shapes}: {first}{_first_layer(model)}; {hint}"
        ) from None
    finally:
        model.train(was)
