"""``prunekit sensitivity``: prune one layer (or channel group) at a time and plot the accuracy.

Writes to ``--out``:

* ``sensitivity.csv`` — ``target,level,metric`` rows (level 0 = the unpruned baseline);
* ``sensitivity.png`` — one curve per layer/group, as Distiller's sensitivity plots;
* ``ratios.json`` — per target, the highest level within ``--max-drop`` of the baseline
  (:func:`prunekit.sensitivity.ratios_from_budget`), ready to use as per-layer ratios.

Examples::

    prunekit sensitivity --from runs/vgg19 --data cifar10:../shared/data/cifar10-jpeg.tar.gz \\
        --structured --levels 0.1,0.3,0.5,0.7,0.9 --max-batches 20 --out runs/vgg19-sens
    prunekit sensitivity --model zoo:lenet5 --data mnist:../shared/data/mnist-png.tar.gz \\
        --unstructured --out runs/lenet5-sens
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prunekit.cli import _run
from prunekit.cli._args import (
    add_limits,
    add_model,
    add_output,
    add_seed,
    input_shape,
    nonnegative_float,
    positive_int,
    versatile_config,
)
from prunekit.device import resolve_device
from prunekit.errors import ConfigError


def _levels(text: str) -> list[float]:
    try:
        levels = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--levels must be comma-separated numbers such as 0.1,0.5,0.9, got {text!r}"
        ) from None
    if not levels or any(not 0.0 <= v <= 1.0 for v in levels):
        raise argparse.ArgumentTypeError(f"--levels must be numbers in [0, 1], got {text!r}")
    return levels


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``sensitivity`` subcommand."""
    p = sub.add_parser(
        "sensitivity",
        help="per-layer sensitivity analysis (accuracy vs pruning level), CSV + plot + ratios",
    )
    add_model(p, "model spec, e.g. zoo:vgg19 (untrained unless loaded)",
              from_help="a saved prunekit model folder")  # fmt: skip
    p.add_argument("--data", required=True, help="dataset spec, e.g. digits or mnist:PATH")
    p.add_argument("--split", choices=["train", "test"], default="test",
                   help="split to measure on (default test)")  # fmt: skip
    add_limits(p)
    p.add_argument("--input-shape", type=input_shape, default=None, metavar="N,C,H,W",
                   help="trace shape (default: one data sample)")  # fmt: skip
    p.add_argument("--levels", type=_levels, default=None,
                   help="comma-separated pruning levels in [0, 1] (default 0.1,0.2,...,0.9)")  # fmt: skip
    kind = p.add_mutually_exclusive_group()
    kind.add_argument(
        "--structured",
        dest="structured",
        action="store_true",
        default=True,
        help="prune channel groups (default)",
    )
    kind.add_argument(
        "--unstructured", dest="structured", action="store_false", help="prune single weights"
    )
    p.add_argument("--criterion", default=None,
                   help="structured: l1 (default) l2 bn_scale random ...; unstructured: "
                   "magnitude (default)")  # fmt: skip
    p.add_argument("--max-batches", type=positive_int, default=None,
                   help="evaluate on this many batches (default: the whole split)")  # fmt: skip
    p.add_argument("--batch-size", type=positive_int, default=256,
                   help="evaluation batch size (default 256)")  # fmt: skip
    p.add_argument("--max-drop", type=nonnegative_float, default=0.01,
                   help="accuracy budget for ratios.json (default 0.01 = one point)")  # fmt: skip
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_seed(p, default=0)
    add_output(p)
    p.set_defaults(func=run_sensitivity)


def _model(args: argparse.Namespace, classes: int, channels: int) -> Any:
    from prunekit import io
    from prunekit.models import kwargs_for_data
    from prunekit.record import ModelRecord
    from prunekit.versatile import versatile_record

    versatile = versatile_config(args)
    if args.from_dir:
        if args.model_kwargs:
            raise ConfigError("--model-kwargs applies to --model; a --from folder has its own")
        if versatile is not None:
            raise ConfigError("--versatile builds --model; a --from folder loads as it was saved")
        return io.load(args.from_dir)
    kwargs = kwargs_for_data(
        args.model, args.model_kwargs, num_classes=classes, in_channels=channels
    )
    return versatile_record(ModelRecord(args.model, kwargs), versatile).build()


class _FirstBatches:
    """Re-iterable view of the first ``n`` batches of ``loader`` (all when ``n`` is None)."""

    def __init__(self, loader: Any, n: int | None) -> None:
        self.loader, self.n = loader, n

    def __iter__(self) -> Iterator[Any]:
        for i, batch in enumerate(self.loader):
            if self.n is not None and i >= self.n:
                return
            yield batch


def _targets(args: argparse.Namespace, model: Any, sample: Any) -> list[Any]:
    import torch

    from prunekit.graph import trace
    from prunekit.sparse import default_param_names

    if not args.structured:
        return list(default_param_names(model))
    shape = args.input_shape or (1, *sample.shape[1:])
    device = next(model.parameters()).device
    groups = trace(model, torch.randn(*shape, device=device)).groups
    if not groups:
        raise ConfigError("the model has no prunable channel groups; try --unstructured")
    return list(groups)


def _write(args: argparse.Namespace, folder: Path, result: Any, spec: str) -> dict[str, Any]:
    from prunekit._fileio import atomic_write_text
    from prunekit.sensitivity import ratios_from_budget

    result.to_csv(folder / "sensitivity.csv")
    mode = "structured" if args.structured else "unstructured"
    result.plot(
        folder / "sensitivity.png",
        metric_name=f"top-1 accuracy ({args.split})",
        title=f"{mode} sensitivity of {spec}",
    )
    info = {
        "model": spec,
        "data": args.data,
        "mode": mode,
        "metric": "top1",
        "baseline": result.baseline,
        "max_drop": args.max_drop,
        "ratios": ratios_from_budget(result, max_drop=args.max_drop),
    }
    atomic_write_text(folder / "ratios.json", json.dumps(info, indent=1) + "\n")
    return info


def run_sensitivity(args: argparse.Namespace) -> int:
    """``prunekit sensitivity``: measure, then write CSV, plot and ratios.json."""
    import sys

    from prunekit._fileio import atomic_dir
    from prunekit.data import TensorLoader, load_dataset
    from prunekit.sensitivity import DEFAULT_LEVELS, sensitivity_analysis
    from prunekit.train import evaluate

    out = _run.check_out(args)
    _run.seed(args.seed)
    device = resolve_device(args.device)
    flag = f"--limit-{args.split}"
    data = _run.limit(
        load_dataset(args.data, split=args.split), getattr(args, f"limit_{args.split}"), flag
    )
    model = _model(args, len(data.classes), int(data.images.shape[1])).to(device).eval()
    loader = _FirstBatches(TensorLoader(data, args.batch_size, device=device), args.max_batches)
    targets = _targets(args, model, data.images[:1])
    method = args.criterion or "magnitude"
    spec = args.from_dir or args.model
    print(f"{len(targets)} {'groups' if args.structured else 'layers'} of {spec}", flush=True)
    result = sensitivity_analysis(
        model,
        lambda m: evaluate(m, loader, device=device)["acc"],
        targets,
        levels=args.levels or DEFAULT_LEVELS,
        method=method,
        progress=False if args.no_progress else None,
    )
    with atomic_dir(out, replace=args.overwrite) as tmp:  # all three files or none
        info = _write(args, tmp, result, spec)
    print(f"baseline top-1 {result.baseline:.4f}; within {args.max_drop} of it:", file=sys.stdout)
    for target, level in info["ratios"].items():
        print(f"  {target:<40} {level:.2f}")
    print(f"wrote {out}/sensitivity.csv, sensitivity.png, ratios.json")
    return 0
