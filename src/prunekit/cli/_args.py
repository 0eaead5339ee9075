"""Argument types shared by the CLI commands."""

from __future__ import annotations

import argparse
import json
from typing import Any


def input_shape(text: str) -> tuple[int, ...]:
    """``"1,3,224,224"`` -> ``(1, 3, 224, 224)``, with a one-line error otherwise."""
    try:
        dims = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"input shape must be comma-separated ints such as 1,3,32,32, got {text!r}"
        ) from None
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"input shape must be positive ints, got {text!r}")
    return dims


def json_object(text: str) -> dict[str, Any]:
    """A JSON object given on the command line (e.g. model kwargs)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"expected a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def add_versatile(p: argparse.ArgumentParser) -> None:
    """``--versatile``, ``--delta``, ``--g``: build the model with Versatile Filters."""
    g = p.add_argument_group("versatile filters (Wang et al. 2018)")
    g.add_argument(
        "--versatile",
        choices=["spatial", "channel", "spatial+channel"],
        default=None,
        help="convert the model's convolutions to versatile filters (see README)",
    )
    g.add_argument("--delta", type=int, default=None, help="channel variant: channels left out δ")
    g.add_argument("--g", type=int, default=None, help="channel variant: stride g (default δ)")


def versatile_config(args: argparse.Namespace) -> Any:
    """The :class:`prunekit.versatile.VersatileConfig` of the flags, or None without them."""
    from prunekit.errors import ConfigError
    from prunekit.versatile import VersatileConfig

    if args.versatile is None:
        if args.delta is not None or args.g is not None:
            raise ConfigError("--delta/--g need --versatile spatial+channel (or channel)")
        return None
    return VersatileConfig(mode=args.versatile, delta=args.delta, g=args.g)
