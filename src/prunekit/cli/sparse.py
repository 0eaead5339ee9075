"""``prunekit sparsity PATH``: print the sparsity report of saved weights.

PATH is a ``.safetensors`` file or a folder holding one or more (all are read, as shards of one
state dict). Only tensors are read, so no model code runs and nothing is unpickled.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prunekit.errors import CheckpointError


def _load_tensors(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise CheckpointError(
                f"no .safetensors file in {path}; pass a file or a saved model dir"
            )
    elif path.is_file():
        files = [path]
    else:
        raise CheckpointError(f"{path} does not exist; pass a .safetensors file or a folder")
    tensors: dict = {}
    for f in files:
        try:
            tensors.update(load_file(str(f)))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"cannot read {f} as safetensors: {exc}") from None
    return tensors


def _run(args: argparse.Namespace) -> int:
    from prunekit.sparse import sparsity_report

    report = sparsity_report(_load_tensors(Path(args.path)))
    print(report.to_json() if args.json else report.to_table())
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``sparsity`` subcommand."""
    p = subparsers.add_parser(
        "sparsity",
        help="print non-zeros per tensor of saved weights",
        description="Per-tensor and total sparsity of a .safetensors file or model folder.",
    )
    p.add_argument("path", metavar="DIR_OR_SAFETENSORS", help="saved model folder or .safetensors")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_run)
