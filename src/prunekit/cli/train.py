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

from prunekit.cli import _run
from prunekit.cli._args import (
    add_limits,
    add_model,
    add_output,
    add_seed,
    flag_values,
    nonnegative_float,
    positive_float,
    positive_int,
    versatile_config,
)
from prunekit.errors import ConfigError


def _lazy(module: str, what: str) -> Any:
    # The data layer and model I/O live in other modules; import on use so the CLI (and every
    # other subcommand) still loads when one of them is missing.
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"{what} needs {module}, which cannot be imported ({exc})") from None


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True,
                   help="dataset spec, e.g. digits, mnist:PATH, cifar10:PATH (see prunekit.data)")  # fmt: skip
    add_limits(p)
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="training epochs (default 160)")  # fmt: skip
    p.add_argument("--batch-size", type=positive_int, default=64, help="batch size (default 64)")
    p.add_argument("--lr", type=positive_float, default=None,
                   help="peak learning rate (default 0.1)")  # fmt: skip
    p.add_argument("--weight-decay", "--wd", dest="weight_decay", type=nonnegative_float,
                   default=None, help="weight decay (default 1e-4)")  # fmt: skip
    p.add_argument("--optimizer", choices=["sgd", "adamw"], default=None,
                   help="sgd with momentum 0.9 (default) or adamw")  # fmt: skip
    p.add_argument("--schedule", choices=["step", "onecycle", "cosine", "constant"], default=None,
                   help="learning-rate schedule (default step: x0.1 at 50%% and 75%% of the epochs)")  # fmt: skip
    p.add_argument("--warmup", type=nonnegative_float, default=None,
                   help="linear warm-up epochs (default 0)")  # fmt: skip
    p.add_argument("--sparsity", type=nonnegative_float, default=0.0, metavar="S",
                   help="BN-L1 strength s (Network Slimming; 1e-4 VGG, 1e-5 ResNet); 0 = off")  # fmt: skip
    p.add_argument("--augment", default=None,
                   help="TensorLoader augmentation preset: cifar (crop+flip), flip, none (default)")  # fmt: skip
    p.add_argument("--compile", choices=["none", "cuda-graphs", "reduce-overhead"], default=None,
                   help="torch.compile the training step (GPU; default none)")  # fmt: skip
    add_output(p, resume=True)
    add_seed(p, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if present)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def register(subparsers: Any) -> None:
    """Add the ``train`` and ``finetune`` subcommands."""
    p = subparsers.add_parser("train", help="train a model (optionally with BN-L1 sparsity)")
    add_model(p, "model spec, e.g. zoo:vgg19")
    _add_common(p)
    p.set_defaults(func=run_train)
    f = subparsers.add_parser("finetune", help="fine-tune a saved (pruned) model")
    f.add_argument("src", type=Path, metavar="SRC_DIR", help="folder written by prunekit.io.save")
    _add_common(f)
    f.set_defaults(func=run_finetune)


#: the flags named as the :class:`~prunekit.train.TrainConfig` fields they set
_TRAIN_FLAGS = (
    "epochs", "lr", "weight_decay", "optimizer", "schedule", "warmup", "compile", "seed", "device"
)  # fmt: skip


def _config(args: argparse.Namespace) -> Any:
    from prunekit.train import TrainConfig

    return TrainConfig(**flag_values(args, *_TRAIN_FLAGS), progress=not args.no_progress)


def _datasets(args: argparse.Namespace) -> tuple[Any, Any]:
    """(train, test) splits of ``--data`` (sliced by ``--limit-train/--limit-test``)."""
    _lazy("prunekit.data", "--data")
    return _run.datasets(args.data, args)


def _loaders(args: argparse.Namespace, config: Any, train: Any, test: Any) -> tuple[Any, Any]:
    """(train loader, test loader) on the training device."""
    from prunekit.device import resolve_device
    from prunekit.train.distributed import setup_distributed

    data = _lazy("prunekit.data", "--data")
    device = resolve_device(config.device, local_rank=setup_distributed().rank_device())
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
    from prunekit._fileio import atomic_dir, run_dir

    config = _config(args)
    train_loader, test_loader = _loaders(args, config, *splits)
    _preflight(model, test_loader, args.data)
    regs = [BNL1Regularizer(args.sparsity)] if args.sparsity > 0 else []
    before = bn_scales(model)
    trainer = Trainer(model, train_loader, test_loader, config, regularizers=regs)
    out = Path(args.out)
    # A failed start leaves no run folder behind; --overwrite drops the old run only once the
    # new one has a checkpoint of its own.
    with run_dir(out, replace=args.overwrite and trainer.dist.is_main):
        result = trainer.fit(out, resume=args.resume)
        if not trainer.dist.is_main:
            return 0
        if before:
            plot_bn_histogram(before, bn_scales(result.model), out / "bn_gamma_hist.png")
        io = _lazy("prunekit.io", "saving the model")
        # The record (base spec + the plans/conversions that shaped the model) travels with it,
        # so a fine-tuned pruned model is saved together with its plans.
        with atomic_dir(out / "model", replace=True) as tmp:
            io.save(result.model, tmp, record)
    keys = ("epoch", "train_loss", "train_acc", "val_acc", "val_top5")
    print(json.dumps({"out": str(out), **{k: result.final.get(k) for k in keys}}))
    return 0


def run_train(args: argparse.Namespace) -> int:
    """``prunekit train``: build ``--model`` for the dataset's classes, train, save."""
    from prunekit.models import kwargs_for_data, parse_spec
    from prunekit.record import ModelRecord
    from prunekit.versatile import versatile_record

    parse_spec(args.model)
    config = _config(args)  # settings checked before any data is read
    versatile = versatile_config(args)
    _run.check_out(args, resume=True)
    train, test = _datasets(args)
    kwargs = kwargs_for_data(
        args.model,
        args.model_kwargs,
        num_classes=len(train.classes),
        in_channels=int(train.images.shape[1]),
    )
    # Seed before building: the initial weights come from the RNG (same --seed, same run).
    _run.seed(config.seed)
    record = versatile_record(ModelRecord(args.model, kwargs), versatile)
    return _train_and_save(args, record.build(), record, (train, test))


def run_finetune(args: argparse.Namespace) -> int:
    """``prunekit finetune SRC_DIR``: load a saved (pruned) model, train it, save it."""
    io = _lazy("prunekit.io", "finetune")
    config = _config(args)
    if Path(args.src).resolve() == Path(args.out).resolve():
        raise ConfigError(f"--out {args.out} is the model being fine-tuned; choose another --out")
    _run.check_out(args, resume=True)
    record = io.load_record(args.src)
    model = io.load(args.src)
    _run.seed(config.seed)
    return _train_and_save(args, model, record, _datasets(args))
