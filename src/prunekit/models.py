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

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from prunekit.errors import ConfigError
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
    return torchvision.models.get_model(name, **kwargs)


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
