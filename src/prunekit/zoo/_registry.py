"""The model registry and the weight initialisation shared by the CIFAR models."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from prunekit.errors import ConfigError
from prunekit.registry import Registry

__all__ = ["MODELS", "build", "check_widths", "list_models", "register_model", "slimming_init"]

ModelBuilder = Callable[..., nn.Module]
MODELS: Registry[ModelBuilder] = Registry("zoo model")


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator adding a model builder to the zoo under ``name``.

    Example:
        >>> @register_model("tiny_mlp")
        ... def tiny_mlp(*, num_classes: int = 10) -> nn.Module:
        ...     return nn.Linear(4, num_classes)
    """
    return MODELS.register(name)


def build(name: str, **kwargs: Any) -> nn.Module:
    """Build a fresh zoo model.

    Args:
        name: a registered name (see :func:`list_models`), e.g. ``"vgg19"``.
        **kwargs: constructor options such as ``num_classes``, ``in_channels``, ``cfg``.

    Returns:
        The model, in training mode, on the CPU.

    Raises:
        ConfigError: unknown name or an option the model does not take.

    Example:
        >>> model = build("vgg19", num_classes=100)
    """
    builder = MODELS.get(name)
    params = inspect.signature(builder).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = sorted(set(kwargs) - set(params))
    if unknown and not takes_any:
        raise ConfigError(
            f"zoo model {name!r} does not take {', '.join(unknown)}; "
            f"accepted options: {', '.join(params) or 'none'}"
        )
    return builder(**kwargs)


def list_models() -> list[str]:
    """Sorted names of all zoo models."""
    return MODELS.names()


def check_widths(model: str, cfg: Sequence[Any], expected_len: int | None = None) -> list[int]:
    """Validate a channel list: positive ints (and the right length if given)."""
    if expected_len is not None and len(cfg) != expected_len:
        raise ConfigError(f"{model}: cfg needs {expected_len} entries, got {len(cfg)}")
    widths = []
    for v in cfg:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(
                f"{model}: cfg entries must be positive ints, got {v!r} in {list(cfg)}"
            )
        widths.append(v)
    return widths


def slimming_init(model: nn.Module, *, linear_std: float | None = None) -> None:
    """Initialise weights as the Network Slimming reference code does (Liu et al. 2017).

    Convolutions: He normal with fan-out (std ``sqrt(2 / (k*k*out_channels))``, He et al. 2015);
    BatchNorm: weight 0.5, bias 0 (the reference starts the scaling factors at 0.5, the values
    its L1 sparsity penalty then drives towards zero); Linear: ``N(0, linear_std)`` with zero
    bias when ``linear_std`` is given, else PyTorch's default.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 0.5)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0.0, linear_std)
            nn.init.zeros_(m.bias)
