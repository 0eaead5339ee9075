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
