"""``prunekit demo``: the end-to-end workflow on embedded real data, in about a minute."""

from __future__ import annotations

import argparse

from prunekit.cli._args import (
    add_latency,
    add_limits,
    add_output,
    add_seed,
    flag_values,
    fraction,
    nonnegative_int,
    positive_int,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train, prune, fine-tune and measure a CNN on sklearn digits")
    p.add_argument("--epochs", type=positive_int, default=20,
                   help="dense training epochs (default 20)")  # fmt: skip
    p.add_argument("--finetune-epochs", type=nonnegative_int, default=8,
                   help="fine-tuning epochs after pruning (default 8; 0 = none)")  # fmt: skip
    p.add_argument("--ratio", type=fraction, default=0.5,
                   help="fraction of channels removed, in [0, 1) (default 0.5)")  # fmt: skip
    p.add_argument("--criterion", default="l2",
                   help="importance criterion: l1, l2 (default), bn_scale, random, taylor, "
                   "activation, apoz (data criteria use the digits training images)")  # fmt: skip
    add_output(p, required=False)
    add_seed(p, default=0)
    add_latency(p)
    add_limits(p)
    p.set_defaults(func=run)


#: the flags named as the :class:`~prunekit.demo.DemoConfig` fields they set
_DEMO_FLAGS = (
    "epochs", "finetune_epochs", "out", "overwrite", "seed", "latency", "limit_train", "limit_test"
)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from prunekit.cli._run import check_out
    from prunekit.demo import DemoConfig, run_demo
    from prunekit.pipeline import PruneConfig

    if args.out is not None:
        check_out(args)  # named as the flag; the library checks again for API users

    cfg = DemoConfig(
        **flag_values(args, *_DEMO_FLAGS),
        prune=PruneConfig(ratio=args.ratio, criterion=args.criterion),
    )
    r = run_demo(config=cfg)
    print(f"done in {r.seconds:.1f}s")
    return 0
