"""``prunekit prune`` and ``prunekit info``."""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from prunekit.cli import _run
from prunekit.cli._args import (
    add_latency,
    add_limits,
    add_model,
    add_output,
    add_seed,
    fraction,
    input_shape,
    positive_int,
    versatile_config,
)
from prunekit.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune", help="structured pruning of a model (trace, score, plan, surgery)")
    add_model(p, "model spec, e.g. torchvision:resnet50 or zoo:vgg19",
              from_help="a saved prunekit model folder (its plans are kept and extended)")  # fmt: skip
    p.add_argument("--input-shape", type=input_shape, required=True, metavar="N,C,H,W",
                   help="shape of the example input used to trace the model, e.g. 1,3,224,224")  # fmt: skip
    p.add_argument("--method", choices=["structured", "slim"], default="structured",
                   help="structured: any criterion (default); slim: Network Slimming's one "
                   "global |γ| ranking of BatchNorm scales")  # fmt: skip
    p.add_argument("--ratio", "--percent", dest="ratio", type=fraction, default=None,
                   help="fraction of channels removed, in [0, 1) (default 0.5)")  # fmt: skip
    p.add_argument("--criterion", default=None,
                   help="importance: l1, l2 (default), bn_scale, random; taylor, activation and "
                   "apoz need --data")  # fmt: skip
    p.add_argument("--global", dest="global_ranking", action="store_true", default=None,
                   help="rank all layers' channels together (one threshold) instead of removing "
                   "--ratio of every layer")  # fmt: skip
    p.add_argument("--floor", type=positive_int, default=1,
                   help="channels every layer keeps at least (default 1)")  # fmt: skip
    p.add_argument("--round-to", type=positive_int, default=None, metavar="N",
                   help="keep multiples of N channels per layer (default: the device's fast "
                   "width, e.g. 16 on AVX-512 CPUs, for layers >= 4 multiples wide; 1 = exact "
                   "counts)")  # fmt: skip
    p.add_argument("--allocator", default=None,
                   help="how many channels each layer keeps: a registered allocator "
                   "(local, global, macs, params, latency, ...)")  # fmt: skip
    p.add_argument("--target-macs", type=fraction, default=None, metavar="F",
                   help="remove this fraction of the MACs (instead of a channel ratio)")  # fmt: skip
    p.add_argument("--target-params", type=fraction, default=None, metavar="F",
                   help="remove this fraction of the parameters")  # fmt: skip
    p.add_argument("--ignore", action="append", default=[], metavar="MODULE",
                   help="module path whose output channels stay whole (repeatable)")  # fmt: skip
    p.add_argument("--unknown-ops", choices=["error", "barrier"], default="error",
                   help="an op the tracer does not know: error (default) or keep its channels "
                   "whole (barrier)")  # fmt: skip
    p.add_argument("--data", default=None,
                   help="dataset spec for data criteria (taylor, activation, apoz), e.g. digits")  # fmt: skip
    add_limits(p, test=False)
    p.add_argument("--calib-batches", type=positive_int, default=8,
                   help="calibration batches read from --data (default 8)")  # fmt: skip
    p.add_argument("--batch-size", type=positive_int, default=64,
                   help="calibration batch size (default 64)")  # fmt: skip
    p.add_argument("--no-verify", action="store_true",
                   help="skip checking the pruned model against its soft-masked twin")  # fmt: skip
    add_latency(p)
    add_seed(p, default=0)
    add_output(p)
    p.set_defaults(func=run_prune)

    i = sub.add_parser("info", help="describe a saved prunekit model folder")
    i.add_argument("dir", metavar="DIR", help="a folder written by prunekit prune/train/save")
    i.add_argument("--input-shape", type=input_shape, default=None, metavar="N,C,H,W",
                   help="also count MACs on an input of this shape, e.g. 1,3,224,224")  # fmt: skip
    i.add_argument("--json", action="store_true", help="print JSON instead of a table")
    i.set_defaults(func=run_info)


def _config(args: argparse.Namespace) -> Any:
    from prunekit.pipeline import PruneConfig

    if args.target_macs is not None and args.target_params is not None:
        raise ConfigError("give at most one of --target-macs and --target-params")
    target = (
        {"macs": args.target_macs}
        if args.target_macs is not None
        else {"params": args.target_params}
        if args.target_params is not None
        else None
    )
    return PruneConfig(
        method=args.method,
        ratio=0.5 if args.ratio is None else args.ratio,
        criterion=args.criterion,
        global_ranking=args.global_ranking,
        allocator=args.allocator,
        floor=args.floor,
        round_to=args.round_to,
        target=target,
        ignored_layers=list(args.ignore),
        unknown_ops=args.unknown_ops,
    )


def _source(args: argparse.Namespace, versatile: Any) -> tuple[Any, Any]:
    """(model in eval mode, its record) from ``--model`` or ``--from``."""
    from prunekit import io
    from prunekit.record import ModelRecord
    from prunekit.versatile import versatile_record

    if args.from_dir:
        if args.model_kwargs:
            raise ConfigError("--model-kwargs applies to --model; a --from folder has its own")
        if versatile is not None:
            raise ConfigError("--versatile builds --model; a --from folder loads as it was saved")
        return io.load(args.from_dir), io.load_record(args.from_dir)
    kwargs = args.model_kwargs or {}
    record = versatile_record(ModelRecord(args.model, kwargs), versatile)
    return record.build().eval(), record


def run_prune(args: argparse.Namespace) -> int:
    from prunekit.pipeline import prune
    from prunekit.report import compare, layer_channels
    from prunekit.versatile import summary_line, versatile_summary

    cfg, versatile = _config(args), versatile_config(args)
    _run.needs_data(cfg.criterion, args.data)
    out = _run.check_out(args)
    _run.seed(args.seed)
    model, record = _source(args, versatile)
    x = torch.randn(*args.input_shape)
    before = copy.deepcopy(model)
    layers = layer_channels(model)
    what = "trace + score + plan + " + ("" if args.no_verify else "check + ") + "surgery"
    with _stage(f"{what} of {record.model} on {tuple(args.input_shape)}"), _quiet_plan_warnings():
        result = prune(model, x, cfg, batches=_calibration(args), verify=not args.no_verify)
    print(f"  {len(result.graph.groups)} groups, {result.plan.removed_units()} channels removed")
    for note in result.warnings:
        print(f"warning: {note}")
    with _stage("measuring params, MACs" + (", latency (interleaved)" if args.latency else "")):
        report = compare(before, model, x, latency=args.latency, before_layers=layers)
    costs = versatile_summary(model, x)
    if costs is not None:
        report.extra["versatile"] = summary_line(costs)
    if result.max_rel_diff is not None:  # checked before surgery (VerificationError otherwise)
        report.extra["max_rel_diff"] = f"{result.max_rel_diff:.2e}"
    _save(args, out, model, record.then(result.plan), report, result)
    print(report.to_table())
    print(f"saved to {out} (report.json, report.png, report.html)")
    return 0


@contextlib.contextmanager
def _quiet_plan_warnings() -> Iterator[None]:
    """The CLI prints the plan's warnings itself (``result.warnings``), once."""
    from prunekit.errors import PruneWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PruneWarning)
        yield


def _save(args: argparse.Namespace, out: Path, model: Any, record: Any, report: Any,
          result: Any) -> None:  # fmt: skip
    """Model + reports into a temp folder, renamed to ``out`` once all of it is written."""
    from prunekit import io
    from prunekit._fileio import atomic_dir, atomic_write_text

    title = f"{record.model} pruned with prunekit"
    with atomic_dir(out, replace=args.overwrite) as tmp:
        io.save(model, tmp, record)
        atomic_write_text(tmp / "report.json", json.dumps(report.to_dict(), indent=1))
        report.plot(tmp / "report.png", title=title)
        _html(report, result, tmp / "report.html", title, args)


def _html(report: Any, result: Any, path: Path, title: str, args: argparse.Namespace) -> None:
    from prunekit.html_report import HtmlReport, Section, prune_sections

    html = HtmlReport(title, meta={"command": "prunekit prune", "input": args.input_shape})
    for sec in prune_sections(report, title=title):
        html.add(sec)
    html.add(Section("Plan", table=[[k, str(v)] for k, v in result.plan.meta.items()],
                     header=["setting", "value"]))  # fmt: skip
    html.write(path)


@contextlib.contextmanager
def _stage(what: str) -> Iterator[None]:
    """Print a step and how long it took (progress for the long steps)."""
    print(f"{what} ...", flush=True)
    t0 = time.perf_counter()
    yield
    print(f"  done in {time.perf_counter() - t0:.1f}s", flush=True)


def _calibration(args: argparse.Namespace) -> Any:
    """Real batches for data-driven criteria (``--data``), or None."""
    if args.data is None:
        return None
    from prunekit.data import TensorLoader, load_dataset

    train = _run.limit(load_dataset(args.data, "train"), args.limit_train, "--limit-train")
    loader = TensorLoader(train, args.batch_size, shuffle=True, seed=0)
    batches = []
    for i, batch in enumerate(loader):
        if i >= args.calib_batches:
            break
        batches.append(batch)
    return batches


def run_info(args: argparse.Namespace) -> int:
    from prunekit import io
    from prunekit.models import check_inputs
    from prunekit.plan import PruningPlan
    from prunekit.report import count_macs, count_params
    from prunekit.versatile import versatile_summary

    record = io.load_record(args.dir)
    plans = [s for s in record.steps if isinstance(s, PruningPlan)]
    model = io.load(args.dir)
    info: dict[str, Any] = {
        "model": record.model,
        "kwargs": dict(record.kwargs),
        "plans": len(plans),
        "conversions": [s.kind for s in record.steps if not isinstance(s, PruningPlan)],
        "channels_removed": sum(p.removed_units() for p in plans),
        "params": count_params(model),
        "plan_meta": [p.meta for p in plans],
    }
    x = torch.randn(*args.input_shape) if args.input_shape else None
    if x is not None:
        check_inputs(model, x, hint="pass a matching --input-shape")
        info["macs"] = count_macs(model, x)
    versatile = versatile_summary(model, x)
    if versatile is not None:  # stored vs dense params/MB, MACs executed vs paper-counted
        info["versatile"] = versatile
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        for k, v in info.items():
            print(f"{k:<18} {v}")
    return 0
