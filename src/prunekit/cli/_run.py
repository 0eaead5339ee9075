"""What every CLI command does the same way before its work: check outputs, seed, load data.

The checks run before any model is built or any data is read, so a mistake costs seconds, not
the run (and nothing is written).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from prunekit.errors import ConfigError


def check_out(args: argparse.Namespace, *, resume: bool = False) -> Path:
    """Check ``args.out`` can take the results; returns it as a Path.

    A non-empty ``--out`` is refused unless ``--overwrite`` (or, for a run folder, ``--resume``)
    was given; a path under a regular file or in an unwritable place is refused too.
    """
    from prunekit._fileio import check_output_dir

    fix = (
        "pass --resume to continue it, --overwrite to start over"
        if resume
        else ("pass --overwrite to replace it")
    )
    reuse = bool(args.overwrite or (resume and args.resume))
    if resume and args.resume and args.overwrite:
        raise ConfigError("give --resume (continue the run) or --overwrite (start over), not both")
    check_output_dir(args.out, what="--out", reuse=reuse, fix=fix)
    return Path(args.out)


def seed(value: int | None) -> None:
    """Seed python, numpy and torch — the one seeding point, before any model or data."""
    if value is None:
        return
    from prunekit.train import seed_everything

    seed_everything(value)


def limit(ds: Any, n: int | None, flag: str, seed: int = 0) -> Any:
    """A class-balanced slice of ``n`` images of ``ds`` (all of it when ``n`` is None)."""
    if n is None or n >= len(ds):
        return ds
    from prunekit.data import stratified_subset

    classes = ds.num_classes
    if n < classes:
        raise ConfigError(
            f"{flag} {n} is fewer than the {classes} classes of the data; give at least {classes}"
        )
    return stratified_subset(ds, n // classes, seed=seed)


def datasets(spec: str, args: argparse.Namespace) -> tuple[Any, Any]:
    """(train, test) splits of dataset ``spec``, sliced by ``--limit-train/--limit-test``."""
    from prunekit.data import load_dataset

    train = limit(load_dataset(spec, "train"), getattr(args, "limit_train", None), "--limit-train")
    test = limit(load_dataset(spec, "test"), getattr(args, "limit_test", None), "--limit-test")
    return train, test


def needs_data(criterion: str | None, data: str | None, flag: str = "--data") -> None:
    """A data-driven criterion (taylor, activation, apoz) without data is an error up front."""
    from prunekit.importance import needs_data as what_it_needs

    if criterion is not None and data is None and what_it_needs(criterion) is not None:
        raise ConfigError(
            f"criterion {criterion!r} scores channels on real batches; pass {flag} SPEC "
            "(e.g. digits or cifar10:PATH), or pick a data-free criterion such as l1 or l2"
        )
