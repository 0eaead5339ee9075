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

from prunekit.cli._args import add_versatile, input_shape, json_object, versatile_config
from prunekit.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune", help="structured pruning of a model (trace, score, plan, surgery)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="model spec, e.g. torchvision:resnet50 or zoo:vgg19")
    src.add_argument("--from", dest="from_dir", help="a saved prunekit model folder")
    p.add_argument("--kwargs", type=json_object, default={}, help="model constructor kwargs (JSON)")
    add_versatile(p)
    p.add_argument("--input-shape", type=input_shape, required=True, help="e.g. 1,3,224,224")
    p.add_argument("--method", choices=["structured", "slim"], default="structured")
    p.add_argument("--ratio", type=float, default=None, help="fraction of channels removed")
    p.add_argument("--percent", type=float, default=None, help="alias of --ratio (slimming)")
    p.add_argument("--criterion", default=None, help="l1 l2 bn_scale taylor activation random")
    p.add_argument("--global", dest="global_ranking", action="store_true", default=None)
    p.add_argument("--floor", type=int, default=1, help="channels every layer keeps (>=1)")
    p.add_argument("--round-to", type=int, default=None)
    p.add_argument(
        "--allocator",
        default=None,
        help="how many channels each layer keeps: a registered allocator (local, global, ...)",
    )
    p.add_argument("--target-macs", type=float, default=None, help="fraction of MACs to remove")
    p.add_argument("--target-params", type=float, default=None, help="fraction of params to remove")
    p.add_argument("--ignore", action="append", default=[], help="module path to keep whole")
    p.add_argument("--unknown-ops", choices=["error", "barrier"], default="error")
    p.add_argument("--data", default=None, help="dataset spec for taylor/activation criteria")
    p.add_argument("--calib-batches", type=int, default=8, help="calibration batches (with --data)")
    p.add_argument("--batch-size", type=int, default=64, help="calibration batch size")
    p.add_argument("--no-verify", action="store_true", help="skip the soft-vs-pruned check (faster)")
    p.add_argument("--no-latency", action="store_true", help="skip latency measurement")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run_prune)

    i = sub.add_parser("info", help="describe a saved prunekit model folder")
    i.add_argument("dir")
    i.add_argument("--input-shape", type=input_shape, default=None)
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=run_info)

    e = sub.add_parser("export", help="export a saved prunekit model to ONNX")
    e.add_argument("dir")
    e.add_argument("--onnx", required=True, help="output .onnx file")
    e.add_argument("--input-shape", type=input_shape, required=True)
    e.add_argument("--opset", type=int, default=17)
    e.add_argument("--fold-bn", action="store_true", help="fold conv/linear + BatchNorm first")
    e.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check")
    e.add_argument("--no-latency", action="store_true", help="skip ORT latency dense vs pruned")
    e.add_argument("--threads", type=int, default=None, help="CPU threads for latency")
    e.add_argument("--int8", action="store_true", help="also write a static int8 model")
    e.add_argument("--calib", default=None, help="dataset spec calibrating int8 (e.g. mnist:PATH)")
    e.add_argument("--calib-batches", type=int, default=16, help="calibration batches of 32")
    e.set_defaults(func=run_export)


def _config(args: argparse.Namespace) -> Any:
    from prunekit.pipeline import PruneConfig

    ratio = args.ratio if args.ratio is not None else args.percent
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
        ratio=0.5 if ratio is None else ratio,
        criterion=args.criterion,
        global_ranking=args.global_ranking,
        allocator=args.allocator,
        floor=args.floor,
        round_to=args.round_to,
        target=target,
        ignored_layers=list(args.ignore),
        unknown_ops=args.unknown_ops,
    )


def run_prune(args: argparse.Namespace) -> int:
    from prunekit import io
    from prunekit.pipeline import prune
    from prunekit.record import ModelRecord
    from prunekit.report import compare, layer_channels
    from prunekit.versatile import summary_line, versatile_record, versatile_summary

    cfg, versatile = _config(args), versatile_config(args)
    if args.from_dir:
        if versatile is not None:
            raise ConfigError("--versatile builds --model; a --from folder loads as it was saved")
        model = io.load(args.from_dir)
        record = io.load_record(args.from_dir)
    else:
        record = versatile_record(ModelRecord(args.model, args.kwargs), versatile)
        model = record.build().eval()
    x = torch.randn(*args.input_shape)
    before = copy.deepcopy(model)
    layers = layer_channels(model)
    what = "trace + score + plan + " + ("" if args.no_verify else "check + ") + "surgery"
    with _stage(f"{what} of {record.model} on {tuple(args.input_shape)}"), _quiet_plan_warnings():
        result = prune(model, x, cfg, batches=_calibration(args), verify=not args.no_verify)
    print(f"  {len(result.graph.groups)} groups, {result.plan.removed_units()} channels removed")
    for note in result.warnings:
        print(f"warning: {note}")
    with _stage("measuring params, MACs" + ("" if args.no_latency else ", latency")):
        report = compare(before, model, x, latency=not args.no_latency, before_layers=layers)
    if result.max_rel_diff is not None:
        report.extra["max_rel_diff"] = f"{result.max_rel_diff:.2e}"
    costs = versatile_summary(model, x)
    if costs is not None:
        report.extra["versatile"] = summary_line(costs)
    out = io.save(model, args.out, record.then(result.plan))
    from prunekit._fileio import atomic_write_text

    atomic_write_text(Path(out) / "report.json", json.dumps(report.to_dict(), indent=1))
    title = f"{record.model} pruned with prunekit"
    report.plot(Path(out) / "report.png", title=title)
    _html(report, result, Path(out) / "report.html", title, args)
    print(report.to_table())
    print(f"saved to {out} (report.json, report.png, report.html)")
    return 0


def _html(report: Any, result: Any, path: Path, title: str, args: argparse.Namespace) -> None:
    from prunekit.html_report import HtmlReport, Section, prune_sections

    html = HtmlReport(title, meta={"command": "prunekit prune", "input": args.input_shape})
    for sec in prune_sections(report, title=title):
        html.add(sec)
    html.add(Section("Plan", table=[[k, str(v)] for k, v in result.plan.meta.items()],
                     header=["setting", "value"]))  # fmt: skip
    html.write(path)


@contextlib.contextmanager
def _quiet_plan_warnings() -> Iterator[None]:
    """The CLI prints the plan's warnings itself (``result.warnings``), once."""
    from prunekit.errors import PruneWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PruneWarning)
        yield


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

    train = load_dataset(args.data, "train")
    loader = TensorLoader(train, args.batch_size, shuffle=True, seed=0)
    batches = []
    for i, batch in enumerate(loader):
        if i >= args.calib_batches:
            break
        batches.append(batch)
    return batches


def run_info(args: argparse.Namespace) -> int:
    from prunekit import io
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


def run_export(args: argparse.Namespace) -> int:
    from prunekit import io
    from prunekit.deploy import ExportConfig, export_model

    if args.int8 and args.calib is None:
        raise ConfigError("--int8 needs --calib DATA (e.g. mnist:../shared/data/mnist-png.tar.gz)")
    cfg = ExportConfig(opset=args.opset, fold_bn=args.fold_bn, verify=not args.no_verify,
                       latency=not args.no_latency, threads=args.threads, int8=args.int8,
                       calib=args.calib, calib_batches=args.calib_batches)  # fmt: skip
    record = io.load_record(args.dir)
    dense = None
    if record.steps and not args.no_latency:
        from prunekit.record import ModelRecord

        dense = ModelRecord(record.model, record.kwargs).build().eval()
    result = export_model(io.load(args.dir), torch.randn(*args.input_shape), args.onnx, cfg,
                          dense=dense)  # fmt: skip
    print(result.summary())
    return 0
