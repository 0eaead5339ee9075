"""``prunekit demo``: the end-to-end workflow on embedded real data, in about a minute."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train, prune, fine-tune and measure a CNN on sklearn digits")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--finetune-epochs", type=int, default=8)
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--criterion", default="l2")
    p.add_argument("--out", default=None, help="save the pruned model here")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from prunekit.demo import run_demo

    r = run_demo(
        epochs=args.epochs,
        finetune_epochs=args.finetune_epochs,
        ratio=args.ratio,
        criterion=args.criterion,
        out=args.out,
        seed=args.seed,
    )
    print(f"done in {r.seconds:.1f}s")
    return 0
