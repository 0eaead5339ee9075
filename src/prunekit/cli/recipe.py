"""``prunekit recipe check`` (print a recipe's per-epoch plan) and ``prunekit run`` (execute it).

Examples:
    prunekit recipe check examples/recipes/distiller/resnet18_agp_fine.yaml \\
        --model torchvision:resnet18 --epochs 20
    prunekit run examples/recipes/lenet300_agp_mnist.yaml --out runs/lenet
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from prunekit.cli._args import (
    add_output,
    add_versatile,
    input_shape,
    nonnegative_float,
    positive_float,
    positive_int,
    versatile_config,
)
from prunekit.cli._run import check_out
from prunekit.errors import ConfigError


def register(subparsers: Any) -> None:
    """Add the ``recipe`` and ``run`` subcommands."""
    recipe = subparsers.add_parser("recipe", help="inspect pruning recipes")
    rsub = recipe.add_subparsers(dest="recipe_command", metavar="ACTION")
    rsub.required = True
    check = rsub.add_parser(
        "check", help="validate a recipe (native or Distiller) and print its per-epoch plan"
    )
    check.add_argument("recipe", help="recipe YAML (native or Distiller schedule)")
    _common(check)
    check.add_argument("--epochs", type=int, default=None,
                       help="run length to lay out (default: the recipe's)")  # fmt: skip
    check.add_argument("--json", action="store_true", help="print the plan as JSON")
    check.set_defaults(func=_check)

    run = subparsers.add_parser("run", help="execute a recipe (train, prune, save)")
    run.add_argument("recipe", help="recipe YAML (native or Distiller schedule)")
    _common(run)
    add_output(run, required=False, resume=True)
    run.add_argument("--epochs", "--epochs-override", dest="epochs_override", type=int,
                     default=None, help="run length in epochs (default: the recipe's)")  # fmt: skip
    run.add_argument("--data", default=None, help="dataset spec (overrides the recipe's)")
    run.add_argument("--device", default=None, help="cpu / cuda (default: cuda if available)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    # The training knobs of Distiller's compress_classifier.py; each overrides the recipe's.
    run.add_argument("--lr", type=positive_float, default=None,
                     help="base learning rate (training.lr)")  # fmt: skip
    run.add_argument("--weight-decay", "--wd", dest="wd", type=nonnegative_float, default=None,
                     help="weight decay (training.weight_decay)")  # fmt: skip
    run.add_argument("--batch-size", type=positive_int, default=None,
                     help="batch size (data.batch_size)")  # fmt: skip
    run.add_argument(
        "--input-shape",
        type=input_shape,
        default=None,
        help="trace shape, e.g. 1,3,32,32 (default: the recipe's, else one training image)",
    )
    run.add_argument(
        "--checkpoint",
        default=None,
        help="a prunekit model folder (safetensors) to start from (model.checkpoint)",
    )
    run.set_defaults(func=_run)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model spec, e.g. torchvision:resnet18")
    p.add_argument(
        "--model-kwargs", default=None, help="JSON keyword arguments, e.g. '{\"num_classes\": 10}'"
    )
    add_versatile(p)
    p.add_argument(
        "--format",
        choices=("auto", "native", "distiller"),
        default="auto",
        help="recipe format (default: detect)",
    )
    p.add_argument(
        "--skip-quantizers",
        action="store_true",
        help="Distiller schedule with a quantizers section: run its pruning part only (warned)",
    )


def _load(args: argparse.Namespace) -> Any:
    """Load the recipe and apply --model / --model-kwargs."""
    from prunekit.recipes import load_recipe
    from prunekit.recipes.native import ModelSection

    recipe = load_recipe(args.recipe, format=args.format, skip_quantizers=args.skip_quantizers)
    kwargs: dict[str, Any] | None = None
    if args.model_kwargs is not None:
        try:
            kwargs = json.loads(args.model_kwargs)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--model-kwargs is not valid JSON: {exc.msg}") from None
        if not isinstance(kwargs, dict):
            raise ConfigError("--model-kwargs must be a JSON object, e.g. '{\"num_classes\": 10}'")
    versatile = versatile_config(args)
    if args.model is not None or kwargs is not None or versatile is not None:
        base = recipe.model.model_dump() if recipe.model is not None else {}
        if args.model is not None:
            base["spec"] = args.model
        if kwargs is not None:
            base["kwargs"] = kwargs
        if versatile is not None:
            base["versatile"] = versatile.to_dict()
        if "spec" not in base:
            raise ConfigError("--model-kwargs given but no model: pass --model SPEC")
        recipe.model = ModelSection.model_validate(base)
    if recipe.model is None:
        raise ConfigError(
            f"{args.recipe}: no model to match the recipe against; pass --model SPEC "
            "(e.g. --model torchvision:resnet18)"
        )
    return recipe


def _print_plan_warnings(recipe: Any, args: argparse.Namespace) -> None:
    """The resolved plan's warnings (e.g. a final sparsity the schedule never reaches)."""
    from prunekit.recipes import resolve

    model = recipe.model.record().build()
    for warning in resolve(recipe, model, epochs=args.epochs_override).warnings:
        print(f"warning: {warning}", file=sys.stderr)


def _check(args: argparse.Namespace) -> int:
    from prunekit.recipes import resolve

    recipe = _load(args)
    model = recipe.model.record().build()
    resolved = resolve(recipe, model, epochs=args.epochs)
    print(resolved.to_json() if args.json else resolved.to_table())
    return 0


def _run(args: argparse.Namespace) -> int:
    from prunekit._fileio import run_dir
    from prunekit.recipes import Executor

    if args.out is None and (args.resume or args.overwrite):
        raise ConfigError("--resume/--overwrite need --out DIR (the run folder)")
    if args.out is not None:
        check_out(args, resume=True)
    recipe = _load(args)
    model = {"input_shape": list(args.input_shape) if args.input_shape else None,
             "checkpoint": args.checkpoint}  # fmt: skip
    data: dict[str, Any] = {"batch_size": args.batch_size}
    if recipe.data is None and args.data is not None:
        data["dataset"] = args.data
    elif recipe.data is None and args.batch_size is not None:
        raise ConfigError("--batch-size needs a dataset: the recipe has none, so pass --data SPEC")
    recipe = recipe.overridden(
        training={"lr": args.lr, "weight_decay": args.wd},
        data=data if recipe.data is not None or args.data is not None else None,
        model=model,
    )
    for note in recipe.notes:  # e.g. skipped quantizers
        print(f"warning: {note}", file=sys.stderr)
    _print_plan_warnings(recipe, args)
    executor = Executor(
        recipe,
        epochs=args.epochs_override,
        data_spec=args.data,
        out_dir=args.out,
        device=args.device,
        progress=False if args.no_progress else None,
    )
    if args.out is None:
        result = executor.run()
    else:
        with run_dir(args.out, replace=args.overwrite):  # a failed start leaves no folder
            result = executor.run(resume=args.resume)
    last = result.history[-1] if result.history else {}
    summary = ", ".join(f"{k}={v:.4g}" for k, v in last.items() if k != "epoch")
    print(f"done: {len(result.history)} epochs; last epoch: {summary}")
    if result.out_dir is not None:
        print(f"saved to {result.out_dir}")
    return 0
