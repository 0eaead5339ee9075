"""``prunekit export``: a saved model to ONNX, checked in onnxruntime (optionally int8 too)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from prunekit.cli._args import LATENCY_HELP, input_shape, positive_int
from prunekit.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("export", help="export a saved prunekit model to ONNX")
    e.add_argument("dir", metavar="DIR", help="a saved prunekit model folder")
    e.add_argument("--onnx", required=True, metavar="FILE",
                   help="the .onnx file to write (NAME.export.json and, with --int8, "
                   "NAME.int8.onnx go beside it)")  # fmt: skip
    e.add_argument("--input-shape", type=input_shape, required=True, metavar="N,C,H,W",
                   help="example input shape the model is exported for, e.g. 1,3,224,224")  # fmt: skip
    e.add_argument("--opset", type=positive_int, default=17, help="ONNX opset (default 17)")
    e.add_argument("--fold-bn", action="store_true", help="fold conv/linear + BatchNorm first")
    e.add_argument("--no-verify", action="store_true",
                   help="skip running the ONNX file in onnxruntime against PyTorch")  # fmt: skip
    e.add_argument("--latency", action=argparse.BooleanOptionalAction, default=False,
                   help=LATENCY_HELP.replace("the model(s)", "dense and pruned in onnxruntime"))  # fmt: skip
    e.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads for onnxruntime timing (default: all)")  # fmt: skip
    e.add_argument("--int8", action="store_true",
                   help="also write a static int8 model (needs --calib)")  # fmt: skip
    e.add_argument("--calib", default=None, metavar="DATA",
                   help="dataset spec calibrating and scoring int8 (e.g. digits or mnist:PATH)")  # fmt: skip
    e.add_argument("--calib-batches", type=positive_int, default=16,
                   help="calibration batches of 32 images (default 16)")  # fmt: skip
    e.add_argument("--overwrite", action="store_true", help="replace existing output files")
    e.set_defaults(func=run_export)


def _outputs(onnx: Path, int8: bool) -> list[Path]:
    """Every file ``export_model`` writes for ``onnx``."""
    files = [onnx, onnx.with_suffix(".export.json")]
    return files + ([onnx.with_name(onnx.stem + ".int8.onnx")] if int8 else [])


def run_export(args: argparse.Namespace) -> int:
    from prunekit import io
    from prunekit._fileio import atomic_files, atomic_write_text, check_output_file
    from prunekit.deploy import ExportConfig, export_model
    from prunekit.models import check_inputs

    if args.int8 and args.calib is None:
        raise ConfigError("--int8 needs --calib DATA (e.g. mnist:../shared/data/mnist-png.tar.gz)")
    onnx = Path(args.onnx)
    if onnx.suffix != ".onnx":
        raise ConfigError(f"--onnx {onnx} must end in .onnx (e.g. {onnx.with_suffix('.onnx')})")
    for f in _outputs(onnx, args.int8):
        check_output_file(f, what="--onnx" if f == onnx else "output", replace=args.overwrite)
    cfg = ExportConfig(opset=args.opset, fold_bn=args.fold_bn, verify=not args.no_verify,
                       latency=args.latency, threads=args.threads, int8=args.int8,
                       calib=args.calib, calib_batches=args.calib_batches)  # fmt: skip
    record = io.load_record(args.dir)
    model = io.load(args.dir)
    x = torch.randn(*args.input_shape)
    check_inputs(model, x, hint="pass a matching --input-shape")
    dense = None
    if record.steps and args.latency:
        from prunekit.record import ModelRecord

        dense = ModelRecord(record.model, record.kwargs).build().eval()
    # Written aside and moved in only when everything (check, int8, timing) succeeded.
    with atomic_files(onnx.parent) as tmp:
        result = export_model(model, x, tmp / onnx.name, cfg, dense=dense)
        files = _outputs(onnx, result.int8 is not None)
        result.onnx, result.int8 = str(files[0]), str(files[2]) if len(files) > 2 else None
        atomic_write_text(tmp / files[1].name, json.dumps(result.to_dict(), indent=1))
    print(result.summary())
    return 0
