"""``prunekit train`` and ``prunekit finetune``: train a model (optionally with Network Slimming's
BN-L1 sparsity penalty) or fine-tune a pruned one, then save it with :mod:`prunekit.io`.

Examples::

    prunekit train --model zoo:vgg19 --data cifar10:../shared/data/cifar10-jpeg.tar.gz \\
        --epochs 160 --batch-size 64 --lr 0.1 --sparsity 1e-4 --schedule step --out runs/vgg19-s
    prunekit finetune runs/vgg19-pruned --data cifar10:... --epochs 40 --out runs/vgg19-ft
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
from pathlib import Path
from typing import Any

from prunekit.cli._args import add_versatile, versatile_config
from prunekit.errors import ConfigError


def _lazy(module: str, what: str) -> Any:
    # The data layer and model I/O live in other modules; import on use so the CLI (and every
    # other subcommand) still loads when one of them is missing.
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"{what} needs {module}, which cannot be imported ({exc})") from None


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="dataset spec for prunekit.data.load_dataset")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 160)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 0.1)")
    p.add_argument("--weight-decay", type=float, default=None, help="default 1e-4")
    p.add_argument("--optimizer", choices=["sgd", "adamw"], default=None)
    p.add_argument("--schedule", choices=["step", "onecycle", "cosine", "constant"], default=None)
    p.add_argument("--warmup", type=float, default=None, help="warm-up epochs")
    p.add_argument(
        "--sparsity",
        type=float,
        default=0.0,
        metavar="S",
        help="BN-L1 strength s (Network Slimming; 1e-4 VGG, 1e-5 ResNet); 0 = off",
    )
    p.add_argument(
        "--augment",
        default=None,
        help="TensorLoader augmentation preset, e.g. cifar (crop+flip), flip, none (default)",
    )
    p.add_argument("--compile", choices=["none", "cuda-graphs", "reduce-overhead"], default=None)
    p.add_argument("--out", required=True, type=Path, help="run folder")
    p.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="continue from the last checkpoint in --out",
    )
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if present)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def register(subparsers: Any) -> None:
    """Add the ``train`` and ``finetune`` subcommands."""
    p = subparsers.add_parser("train", help="train a model (optionally with BN-L1 sparsity)")
    p.add_argument("--model", required=True, help="model spec, e.g. zoo:vgg19")
    p.add_argument("--model-kwargs", default=None, help="extra JSON kwargs, e.g. '{\"depth\": 19}'")
    add_versatile(p)
    _add_common(p)
    p.set_defaults(func=run_train)
    f = subparsers.add_parser("finetune", help="fine-tune a saved (pruned) model")
    f.add_argument("src", type=Path, metavar="SRC_DIR", help="folder written by prunekit.io.save")
    _add_common(f)
    f.set_defaults(func=run_finetune)


def _config(args: argparse.Namespace) -> Any:
    from prunekit.train import TrainConfig

    return TrainConfig(
        epochs=args.epochs,
        lr=args.lr,
        weight_decay=args.weight_decay,
        optimizer=args.optimizer,
        schedule=args.schedule,
        warmup=args.warmup,
        compile=args.compile,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
    )


def _datasets(args: argparse.Namespace) -> tuple[Any, Any]:
    """(train, test) splits of ``--data`` as ``prunekit.data`` image tensors."""
    data = _lazy("prunekit.data", "--data")
    return data.load_dataset(args.data, split="train"), data.load_dataset(args.data, split="test")


def _loaders(args: argparse.Namespace, config: Any, train: Any, test: Any) -> tuple[Any, Any]:
    """(train loader, test loader) on the training device."""
    from prunekit.train.distributed import resolve_device, setup_distributed

    data = _lazy("prunekit.data", "--data")
    device = resolve_device(config.device, setup_distributed())
    train_loader = data.TensorLoader(
        train,
        args.batch_size,
        shuffle=True,
        drop_last=False,
        device=device,
        augment=args.augment,
        seed=config.seed,
    )
    test_loader = data.TensorLoader(test, 512, shuffle=False, drop_last=False, device=device)
    return train_loader, test_loader


def _preflight(model: Any, loader: Any, data_spec: str) -> None:
    """Run one test batch through the model so a shape mismatch is one clear error up front."""
    import torch

    x, _ = next(iter(loader))
    device = next(model.parameters()).device
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(x[:2].to(device))
    except RuntimeError as exc:
        raise ConfigError(
            f"the model does not accept --data {data_spec} inputs of shape "
            f"{tuple(x.shape[1:])}: {str(exc).splitlines()[0]}; pick a model for this input size"
        ) from None
    finally:
        model.train(was_training)


def _train_and_save(
    args: argparse.Namespace,
    model: Any,
    record: Any,
    splits: tuple[Any, Any],
) -> int:
    from prunekit.train import BNL1Regularizer, Trainer, bn_scales, plot_bn_histogram

    if not logging.getLogger().handlers:  # one line per epoch on stderr
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = _config(args)
    train_loader, test_loader = _loaders(args, config, *splits)
    _preflight(model, test_loader, args.data)
    regs = [BNL1Regularizer(args.sparsity)] if args.sparsity > 0 else []
    before = bn_scales(model)
    trainer = Trainer(model, train_loader, test_loader, config, regularizers=regs)
    result = trainer.fit(args.out, resume=args.resume)
    if not trainer.dist.is_main:
        return 0
    if before:
        plot_bn_histogram(before, bn_scales(result.model), args.out / "bn_gamma_hist.png")
    io = _lazy("prunekit.io", "saving the model")
    # The record (base spec + the plans/conversions that shaped the model) travels with it, so a
    # fine-tuned pruned model is saved together with its plans.
    io.save(result.model, args.out / "model", record)
    keys = ("epoch", "train_loss", "train_acc", "val_acc", "val_top5")
    print(json.dumps({"out": str(args.out), **{k: result.final.get(k) for k in keys}}))
    return 0


def _model_kwargs(text: str | None) -> dict[str, Any]:
    try:
        kwargs = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--model-kwargs is not valid JSON ({exc}): {text!r}") from None
    if not isinstance(kwargs, dict):
        raise ConfigError(f"--model-kwargs must be a JSON object, got {text!r}")
    return kwargs


def run_train(args: argparse.Namespace) -> int:
    """``prunekit train``: build ``--model`` for the dataset's classes, train, save."""
    from prunekit.models import kwargs_for_data
    from prunekit.versatile import versatile_record

    train, test = _datasets(args)
    kwargs = kwargs_for_data(
        args.model,
        _model_kwargs(args.model_kwargs),
        num_classes=len(train.classes),
        in_channels=int(train.images.shape[1]),
    )
    from prunekit.record import ModelRecord
    from prunekit.train import seed_everything

    # Seed before building: the initial weights come from the RNG (same --seed, same run).
    seed_everything(_config(args).seed)
    record = versatile_record(ModelRecord(args.model, kwargs), versatile_config(args))
    return _train_and_save(args, record.build(), record, (train, test))


def run_finetune(args: argparse.Namespace) -> int:
    """``prunekit finetune SRC_DIR``: load a saved (pruned) model, train it, save it."""
    io = _lazy("prunekit.io", "finetune")
    model = io.load(args.src)
    return _train_and_save(args, model, io.load_record(args.src), _datasets(args))
