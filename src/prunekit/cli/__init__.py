"""Command-line interface: a thin layer over the library.

Each module in this package that defines ``register(subparsers)`` adds its subcommands; a
subcommand sets ``func`` (taking the parsed ``argparse.Namespace``, returning an exit code).
Nothing in the library imports this package.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence
from typing import NoReturn

from prunekit.errors import PrunekitError

#: set to 1 to see the Python traceback of an error (for bug reports)
TRACEBACK_ENV = "PRUNEKIT_TRACEBACK"


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error: the problem and where to read about the fix."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every subcommand module registered."""
    parser = _Parser(
        prog="prunekit",
        description="Prune PyTorch models and measure accuracy, size and speed.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``prunekit`` console script; returns the exit code.

    Every mistake a user can make is one line on stderr (``prunekit: error: ...``, exit 2; a
    file-system failure exits 1), never a traceback (set ``PRUNEKIT_TRACEBACK=1`` to see one).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors and --help: an exit code, also when called in-process
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return int(args.func(args) or 0)
    except PrunekitError as exc:
        if os.environ.get(TRACEBACK_ENV):
            raise
        print(f"prunekit: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # the disk, not the input: full, read-only, vanished...
        if os.environ.get(TRACEBACK_ENV):
            raise
        where = f": {exc.filename}" if exc.filename else ""
        print(f"prunekit: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("prunekit: interrupted", file=sys.stderr)
        return 130


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.strip().splitlines() if part.strip())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
