"""``prunekit slim``: the whole Network Slimming pipeline in one command.

Sparse training with the BN-L1 penalty, one global |γ| threshold, physical pruning and
fine-tuning (Liu et al., ICCV 2017), each stage saved under ``--out`` and skipped on re-run
with ``--resume``.

Example::

    prunekit slim --model zoo:vgg19 --data cifar10:../shared/data/cifar10-jpeg.tar.gz \\
        --percent 0.7 --sparsity 1e-4 --epochs 160 --finetune-epochs 160 --out runs/vgg19-slim
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from prunekit.cli import _run
from prunekit.cli._args import (
    add_limits,
    add_model,
    add_output,
    add_seed,
    fraction,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
    versatile_config,
)


def register(subparsers: Any) -> None:
    """Add the ``slim`` subcommand."""
    p = subparsers.add_parser(
        "slim", help="Network Slimming: sparse-train, prune by |γ|, fine-tune (one command)"
    )
    add_model(p, "model spec, e.g. zoo:vgg19")
    p.add_argument("--data", required=True, help="dataset spec, e.g. digits or cifar10:PATH")
    add_limits(p)
    p.add_argument("--percent", "--ratio", dest="percent", type=fraction, default=None,
                   help="fraction of channels removed by the global |γ| threshold (default 0.7)")  # fmt: skip
    p.add_argument("--sparsity", type=nonnegative_float, default=None, metavar="S",
                   help="BN-L1 strength s (default 1e-4 VGG; 1e-5 ResNet/DenseNet)")  # fmt: skip
    p.add_argument(
        "--threshold",
        choices=["prunekit", "reference"],
        default=None,
        help="prunekit: global ranking with a per-layer floor (default); "
        "reference: the paper code's threshold (reports layers it would empty)",
    )
    p.add_argument("--floor", type=positive_int, default=None,
                   help="channels every layer keeps (default 1)")  # fmt: skip
    p.add_argument(
        "--count",
        choices=["bn", "units"],
        default=None,
        help="what --percent counts: bn = BatchNorm channels (paper, default) or units",
    )
    p.add_argument("--round-to", type=positive_int, default=None, metavar="N",
                   help="keep multiples of N channels")  # fmt: skip
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="sparse-training epochs (default 160)")  # fmt: skip
    p.add_argument("--finetune-epochs", type=nonnegative_int, default=None,
                   help="fine-tune epochs (default 160; 0 = stop after pruning)")  # fmt: skip
    p.add_argument("--dense-epochs", type=nonnegative_int, default=None,
                   help="epochs of a no-penalty baseline (default 0 = skip)")  # fmt: skip
    p.add_argument("--lr", type=positive_float, default=None, help="learning rate (default 0.1)")
    p.add_argument("--finetune-lr", type=positive_float, default=None,
                   help="fine-tuning learning rate (default: --lr)")  # fmt: skip
    p.add_argument("--batch-size", type=positive_int, default=None, help="batch size (default 64)")
    p.add_argument("--schedule", choices=["step", "onecycle", "cosine", "constant"], default=None,
                   help="learning-rate schedule of every stage (default step)")  # fmt: skip
    p.add_argument("--weight-decay", "--wd", dest="weight_decay", type=nonnegative_float,
                   default=None, help="weight decay (default 1e-4)")  # fmt: skip
    p.add_argument("--augment", default=None, help="auto (default), cifar, flip or none")
    p.add_argument("--compile", choices=["none", "cuda-graphs", "reduce-overhead"], default=None,
                   help="torch.compile the training step (GPU; default none)")  # fmt: skip
    add_seed(p, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if present)")
    add_output(p, resume=True)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run_slim)


def _config(args: argparse.Namespace) -> Any:
    from prunekit.methods.slimming import SlimmingConfig

    return SlimmingConfig.from_dict(
        {
            "model": args.model,
            "model_kwargs": args.model_kwargs,
            "versatile": versatile_config(args),
            "data": args.data,
            "percent": args.percent,
            "sparsity": args.sparsity,
            "threshold": args.threshold,
            "floor": args.floor,
            "round_to": args.round_to,
            "count": args.count,
            "epochs": args.epochs,
            "finetune_epochs": args.finetune_epochs,
            "dense_epochs": args.dense_epochs,
            "lr": args.lr,
            "finetune_lr": args.finetune_lr,
            "batch_size": args.batch_size,
            "schedule": args.schedule,
            "weight_decay": args.weight_decay,
            "augment": args.augment,
            "compile": args.compile,
            "seed": args.seed,
            "device": args.device,
            "progress": not args.no_progress,
        }
    )


def _print_stage(name: str, summary: dict[str, Any], skipped: bool) -> None:
    acc = summary.get("acc")
    text = f"{name:<10} acc {acc:.4f}" if acc is not None else f"{name:<10} acc -"
    text += f"  params {summary['params']:,}  MACs {summary['macs']:,}"
    text += f"  {summary.get('seconds', 0.0):.1f} s" + (
        "  (done before, skipped)" if skipped else ""
    )
    print(text, flush=True)


def run_slim(args: argparse.Namespace) -> int:
    """``prunekit slim``: run (or resume) every stage, print one line per stage."""
    from prunekit._fileio import run_dir
    from prunekit.methods.slimming import NetworkSlimming

    cfg = _config(args)
    out = _run.check_out(args, resume=True)
    _run.seed(cfg.seed)
    data = {}
    if args.limit_train is not None or args.limit_test is not None:
        data = dict(zip(("train_data", "test_data"), _run.datasets(args.data, args)))
    if not logging.getLogger().handlers:  # one line per epoch on stderr
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    with run_dir(out, replace=args.overwrite):  # a failed start leaves no folder behind
        result = NetworkSlimming(cfg, **data).run(out, resume=args.resume)
    for name, stage in result.stages.items():
        _print_stage(name, stage.summary, stage.skipped)
    report = result.stages["pruned"].summary["report"]
    line = f"threshold |γ| <= {report['threshold']:.4g} ({report['method']})"
    if report["collapsed"]:
        line += f"; it empties {len(report['collapsed_layers'])} BatchNorm layer(s)"
        line += " (the reference code would crash)" if report["method"] == "reference" else ""
        line += " -- kept by the floor" if report["method"] == "prunekit" else ""
    print(line)
    print(f"saved to {out}")
    return 0
