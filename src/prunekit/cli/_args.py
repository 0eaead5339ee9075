"""Argument types and flag groups shared by the CLI commands (one name per concept).

Every subcommand that writes results takes ``--out`` and ``--overwrite`` (plus ``--resume`` for
run folders), every data-reading one ``--limit-train/--limit-test``, every one that times models
``--latency`` (off by default) and every one that builds or trains a model ``--seed``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

# ``--latency`` repeats: interleaved dense/pruned rounds (see prunekit.latency.compare_latency).
LATENCY_HELP = (
    "also time the model(s) before and after, interleaved (A B A B ...), median and IQR; "
    "off by default because timing can take longer than the work itself"
)


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
        raise argparse.ArgumentTypeError(
            f"expected a JSON object such as '{{\"num_classes\": 10}}': {exc}"
        ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"expected a JSON object such as '{{\"num_classes\": 10}}', got {text!r}"
        )
    return value


def _int_at_least(low: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"int>={low}"
    return parse


#: ``type=`` for counts that must be at least 1 (epochs, batch sizes) or 0.
positive_int = _int_at_least(1)
nonnegative_int = _int_at_least(0)


def fraction(text: str) -> float:
    """A number in [0, 1) (a pruning ratio)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1) (0.5 = remove half), got {value}")
    return value


def nonnegative_float(text: str) -> float:
    """A number >= 0 (a penalty strength, a budget)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """A number > 0 (a learning rate)."""
    value = nonnegative_float(text)
    if value == 0.0:
        raise argparse.ArgumentTypeError("must be > 0, got 0")
    return value


def flag_values(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """``{name: args.name}``: the flags named as the config fields they set, ready for ``**``.

    Example:
        >>> flag_values(argparse.Namespace(lr=0.1, seed=3), "lr", "seed")
        {'lr': 0.1, 'seed': 3}
    """
    return {name: getattr(args, name) for name in names}


def add_model_kwargs(p: argparse.ArgumentParser) -> None:
    """``--model-kwargs JSON`` (alias ``--kwargs``): the model constructor's keyword arguments."""
    p.add_argument(
        "--model-kwargs",
        "--kwargs",
        dest="model_kwargs",
        type=json_object,
        default=None,
        metavar="JSON",
        help="model constructor kwargs as a JSON object, e.g. '{\"num_classes\": 10}' "
        "(a misspelled key is an error naming the accepted ones)",
    )


def add_model(p: argparse.ArgumentParser, help: str, *, from_help: str | None = None) -> None:
    """``--model SPEC`` with ``--model-kwargs`` and the versatile-filter flags.

    With ``from_help`` the model comes from exactly one of ``--model`` and ``--from DIR`` (a
    saved prunekit model folder, ``args.from_dir``).
    """
    if from_help is None:
        p.add_argument("--model", required=True, help=help)
    else:
        src = p.add_mutually_exclusive_group(required=True)
        src.add_argument("--model", help=help)
        src.add_argument("--from", dest="from_dir", metavar="DIR", help=from_help)
    add_model_kwargs(p)
    add_versatile(p)


def add_output(p: argparse.ArgumentParser, *, required: bool = True, resume: bool = False) -> None:
    """``--out`` and ``--overwrite`` (and ``--resume`` for a run folder)."""
    kind = "run folder (checkpoints, metrics, model)" if resume else "output folder"
    p.add_argument("--out", required=required, metavar="DIR", help=f"{kind}; must not exist yet "
                   "or be empty, unless --overwrite" + (" or --resume" if resume else ""))  # fmt: skip
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --out (the old one is removed only once the new one is complete)",
    )
    if resume:
        p.add_argument(
            "--resume",
            action=argparse.BooleanOptionalAction,
            default=False,
            help="continue the run in --out from its last checkpoint (skipping finished stages)",
        )


def add_latency(p: argparse.ArgumentParser) -> None:
    """``--latency`` / ``--no-latency`` (default off)."""
    p.add_argument(
        "--latency", action=argparse.BooleanOptionalAction, default=False, help=LATENCY_HELP
    )


def add_limits(p: argparse.ArgumentParser, *, train: bool = True, test: bool = True) -> None:
    """``--limit-train N`` / ``--limit-test N``: a class-balanced slice for a quick try-out."""
    what = "an equal number per class, rounded down to a multiple of the classes; for a quick try"
    if train:
        p.add_argument("--limit-train", type=positive_int, default=None, metavar="N",
                       help=f"use only N training images ({what})")  # fmt: skip
    if test:
        p.add_argument("--limit-test", type=positive_int, default=None, metavar="N",
                       help=f"use only N test images ({what})")  # fmt: skip


def add_seed(p: argparse.ArgumentParser, default: int | None = None) -> None:
    """``--seed``: seeds python, numpy and torch before any model or data is built."""
    shown = "the library default" if default is None else str(default)
    p.add_argument("--seed", type=int, default=default,
                   help=f"random seed, set before the model and data are built (default {shown}); "
                   "the same seed gives the same run")  # fmt: skip


def add_versatile(p: argparse.ArgumentParser) -> None:
    """``--versatile``, ``--delta``, ``--g``: build the model with Versatile Filters."""
    g = p.add_argument_group("versatile filters (Wang et al. 2018)")
    g.add_argument(
        "--versatile",
        choices=["spatial", "channel", "spatial+channel"],
        default=None,
        help="convert the model's convolutions to versatile filters (see README)",
    )
    g.add_argument("--delta", type=positive_int, default=None,
                   help="channel variant: channels left out δ")  # fmt: skip
    g.add_argument("--g", type=positive_int, default=None,
                   help="channel variant: stride g (default δ)")  # fmt: skip


def versatile_config(args: argparse.Namespace) -> Any:
    """The :class:`prunekit.versatile.VersatileConfig` of the flags, or None without them."""
    from prunekit.errors import ConfigError
    from prunekit.versatile import VersatileConfig

    if args.versatile is None:
        if args.delta is not None or args.g is not None:
            raise ConfigError("--delta/--g need --versatile spatial+channel (or channel)")
        return None
    return VersatileConfig(mode=args.versatile, delta=args.delta, g=args.g)
