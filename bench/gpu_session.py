"""One GPU window of the Network Slimming study (issue 15): a ≤ 60 s smoke, then the next
unfinished rows that fit, each whole or not at all; merged result files in the output folder.

A GPU window is one command of at most ~9 minutes on a fresh machine, and only a few small files
come back (no checkpoints). So each call:

1. **smoke** (≤ 60 s): on every architecture (VGG-19, DenseNet-40, PreResNet-164), a few steps
   of each training path the study uses — eager and CUDA-graph SGD, each plain and with the
   BN-L1 penalty — and bf16 inference timing (CUDA graphs, batch 256/4096). A failing CUDA-graph
   path makes that architecture train eagerly; every failure is recorded with its error.
2. **rows** in priority order — VGG-19 70%, DenseNet-40 40/60%, PreResNet-164 40/60% — skipping
   those already in ``--results`` (``bench/results/slimming.json`` of the checkout). An
   architecture keeps the epochs of its existing rows (epochs never mix within one); a new one
   takes the longest of 160/80/40/20 epochs whose estimate (from the smoke's measured img/s)
   fits the time left. A unit (one architecture's dense + sparse + every tool at the chosen
   percents) that cannot fit is skipped with the reason; one that runs out of time anyway stops
   at an epoch boundary and adds no row, so every tool of a percent comes from one sparse model.
3. writes ``slimming.json``/``slimming.md`` (the checkout's rows plus the new ones), the session
   record ``gpu_session.json`` and the plots into the output folder (≤ 8 files).

Torch-Pruning rows need ``torch_pruning`` importable (carry its wheel); without it they are
skipped with that reason. Afterwards, here: ``bench/gpu_session.sh --merge FILE`` merges a
returned ``slimming.json`` (and the plots beside it) into ``bench/results/``.

Example (on the GPU machine, via bench/gpu_session.sh)::

    bench/gpu_session.sh .carry/cifar10-jpeg.tar.gz "$OUT"
    PYTHONPATH=src python bench/gpu_session.py --quick DATA OUT   # CPU check, tiny subset
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see bench/mnist.py

import argparse
import datetime as dt
import importlib.util
import logging
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import slimming  # first: it puts src/ on sys.path for the prunekit imports below
from _common import atomic_write_json, env_meta, read_json
from prunekit.data import ImageTensors, TensorLoader, stratified_subset
from prunekit.methods import StageInterrupted
from prunekit.models import build_model
from prunekit.train import BNL1Regularizer, TrainConfig, Trainer
from slimming_cpu import plot_channel_panels

LOG = logging.getLogger("bench.gpu_session")
REPO = Path(__file__).resolve().parents[1]
PRIORITY: tuple[tuple[str, tuple[float, ...]], ...] = (
    ("vgg19", (0.7,)),
    ("densenet40", (0.4, 0.6)),
    ("preresnet164", (0.4, 0.6)),
)
EPOCH_LADDER = (160, 80, 40, 20)
SMOKE_SECONDS = 60.0
SMOKE_STEPS = 4  # per epoch, 2 epochs: 3 eager warm-up steps, the capture, then replays only
FT_COST = 0.75  # a pruned model's epoch relative to the dense one's (estimate)
OVERHEAD = 1.2  # evaluation, checkpoints, tracing, capture (estimate)
END_MARGIN = 20.0  # seconds kept for writing the files after the last unit


# -------------------------------------------------------------------------------------- smoke
def smoke_fit(
    spec: str, data: ImageTensors, mode: str, batch: int, sparsity: float | None, epochs: int
) -> dict[str, Any]:
    """A few real training steps of ``spec`` with one compile mode (and the BN-L1 penalty).

    Returns:
        ``{"ok", "seconds", "img_per_s"}`` (the last epoch's rate), or ``ok: False`` and the
        error's last line.
    """
    cuda = torch.cuda.is_available()
    t0 = time.perf_counter()
    try:
        model = build_model(spec, num_classes=data.num_classes)
        device = "cuda" if cuda else "cpu"
        loader = TensorLoader(
            data, batch, shuffle=True, drop_last=True, device=device, augment="cifar"
        )
        cfg = TrainConfig(
            epochs=epochs, lr=0.05, compile=mode, bf16=cuda, device=device, progress=False
        )
        regs = [] if sparsity is None else [BNL1Regularizer(sparsity)]
        trainer = Trainer(model, loader, None, cfg, regularizers=regs)
        t_fit = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            hist = trainer.fit(tmp).history
        fit = time.perf_counter() - t_fit
        loss = hist[-1].get("train_loss")
        ok = loss is not None and loss == loss  # NaN loss is a broken path too
        # What an epoch costs besides its steps: the per-epoch checkpoint (weights + momentum,
        # fsynced), logging. A stage of 160 epochs pays it 160 times, so the estimate adds it.
        overhead = max(0.0, fit - sum(r["seconds"] for r in hist)) / len(hist)
        return {
            "ok": ok,
            "seconds": round(time.perf_counter() - t0, 2),
            "img_per_s": hist[-1]["img_per_s"],
            "epoch_overhead_s": round(overhead, 4),
            "loss": loss,
        }
    except Exception as exc:  # a broken path is a result here, not a crash
        LOG.warning("smoke %s %s: %s", spec, mode, traceback.format_exc(limit=3))
        return {
            "ok": False,
            "seconds": round(time.perf_counter() - t0, 2),
            "error": repr(exc)[-300:],
        }


def run_smoke(args: argparse.Namespace, train: ImageTensors) -> dict[str, Any]:
    """Every (selected) architecture × training path (eager/CUDA graphs × plain/BN-L1), then
    bf16 inference timing of VGG-19."""
    cuda = torch.cuda.is_available()
    modes = ["none", "cuda-graphs"] if cuda else ["none"]
    steps, epochs = (1, 1) if args.quick else (SMOKE_STEPS, 2)
    batch = args.smoke_batch or (4 if args.quick else args.batch_size)
    data = stratified_subset(train, -(-batch * steps // train.num_classes), seed=slimming.SEED)
    end = time.monotonic() + SMOKE_SECONDS
    paths: dict[str, dict[str, Any]] = {}
    for name, _ in selected_units(args.only):
        arch = slimming.ARCHS[name]
        for mode in modes:
            for label, s in (("plain", None), ("bn-l1", arch.sparsity)):
                key = f"{mode}/{label}"
                if time.monotonic() > end:
                    paths.setdefault(name, {})[key] = {"ok": None, "error": "smoke time used up"}
                    continue
                paths.setdefault(name, {})[key] = smoke_fit(
                    arch.model, data, mode, batch, s, epochs
                )
    vgg = build_model("zoo:vgg19", num_classes=train.num_classes)
    inference = {
        f"img_per_s_bs{b}": slimming.inference_img_per_s(vgg, train.image_shape, b)
        for b in (256, 4096)
    }
    failed = [f"{n} {k}" for n, p in paths.items() for k, r in p.items() if r.get("ok") is False]
    verdict = "ok" if not failed else "FAILED: " + ", ".join(failed)
    if cuda and inference["img_per_s_bs256"] is None:
        verdict += "; bf16 inference timing failed"
    return {"verdict": verdict, "batch": batch, "paths": paths, "inference_vgg19": inference}


def compile_for(smoke: dict[str, Any], name: str) -> str:
    """``cuda-graphs`` when both its smoke paths passed for ``name``, else ``none`` (eager)."""
    paths = smoke["paths"].get(name, {})
    graphs = [r for k, r in paths.items() if k.startswith("cuda-graphs/")]
    return "cuda-graphs" if graphs and all(r.get("ok") for r in graphs) else "none"


def epoch_overhead(smoke: dict[str, Any], name: str) -> float:
    """The largest per-epoch overhead (checkpoint, logging) the smoke measured for ``name``."""
    paths = smoke["paths"].get(name, {}).values()
    return max([r.get("epoch_overhead_s", 0.0) for r in paths if r.get("ok")], default=0.0)


def img_per_s(smoke: dict[str, Any], name: str, mode: str) -> float | None:
    """The slower of the smoke's plain and BN-L1 training rates of ``name`` in ``mode``."""
    rates = [
        r["img_per_s"]
        for k, r in smoke["paths"].get(name, {}).items()
        if k.startswith(f"{mode}/") and r.get("ok")
    ]
    return min(rates) if rates else None


# -------------------------------------------------------------------------------------- plan
def tool_plan(tools: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The tools that can run here, and the reason for each one that cannot."""
    run, skipped = [], {}
    for tool in tools:
        if tool == "torch-pruning" and importlib.util.find_spec("torch_pruning") is None:
            skipped[tool] = (
                "torch_pruning is not installed here (carry its wheel: see gpu_session.sh)"
            )
        else:
            run.append(tool)
    return run, skipped


def arch_epochs(results: dict[str, Any], name: str) -> int | None:
    """The epochs of ``name``'s existing rows (the one count a new row of it may use)."""
    counts = {r["epochs"] for r in results["rows"] if r["arch"] == name}
    if len(counts) > 1:
        raise ValueError(f"{name} has rows with mixed epochs {sorted(counts)} in the results")
    return counts.pop() if counts else None


def pending(
    results: dict[str, Any], name: str, percents: Sequence[float], tools: Sequence[str], epochs: int
) -> list[float]:
    """The percents of ``name`` that lack a row of some tool at ``epochs``."""
    have = {
        (r["percent"], r["tool"])
        for r in results["rows"]
        if r["arch"] == name and r["epochs"] == epochs
    }
    return [p for p in percents if any((p, t) not in have for t in tools)]


def estimate_seconds(
    epochs: int,
    images: int,
    rate: float,
    n_percents: int,
    n_tools: int,
    base_done: bool,
    epoch_overhead: float = 0.0,
) -> float:
    """Seconds a unit should take: dense + sparse (unless done) + a fine-tune per tool/percent,
    each epoch its images at ``rate`` plus ``epoch_overhead`` seconds (the checkpoint)."""
    dense_epochs = 0 if base_done else 2 * epochs
    ft_epochs = epochs * n_percents * n_tools
    steps = (dense_epochs + ft_epochs * FT_COST) * images / rate * OVERHEAD
    return steps + (dense_epochs + ft_epochs) * epoch_overhead


def choose_unit(
    results: dict[str, Any],
    name: str,
    percents: Sequence[float],
    tools: Sequence[str],
    rate: float | None,
    left: float,
    args: argparse.Namespace,
    epoch_overhead: float = 0.0,
) -> tuple[int, list[float], float] | str:
    """``(epochs, percents, estimate)`` of the biggest unit of ``name`` that fits ``left``
    seconds, or the reason nothing does (or nothing is left to do)."""
    try:
        fixed = args.epochs or arch_epochs(results, name)
    except ValueError as exc:
        return str(exc)
    ladder = (fixed,) if fixed else EPOCH_LADDER
    for epochs in ladder:
        todo = pending(results, name, percents, tools, epochs)
        if not todo:
            return f"done at {epochs} epochs"
        if rate is None:
            return "no training rate: its smoke paths failed"
        for k in range(len(todo), 0, -1):
            est = estimate_seconds(
                epochs, args.train_images, rate, k, len(tools), False, epoch_overhead
            )
            if est <= left:
                return epochs, todo[:k], est
    return f"does not fit: {ladder[-1]} epochs need more than the {left:.0f} s left"


# -------------------------------------------------------------------------------------- units
def study_args(
    args: argparse.Namespace,
    name: str,
    epochs: int,
    percents: Sequence[float],
    mode: str,
    tools: Sequence[str],
    left: float,
) -> argparse.Namespace:
    """The bench/slimming.py settings of one unit (s matched to the paper's shrinkage)."""
    argv = [
        "--data",
        str(args.data),
        "--epochs",
        str(epochs),
        "--batch-size",
        str(args.batch_size),
        "--lr",
        str(args.lr),
        "--schedule",
        args.schedule,
        "--compile",
        mode,
        "--only",
        *[f"{name}:{p}" for p in percents],
        "--tools",
        *tools,
        "--budget-seconds",
        str(left),
        "--work",
        str(args.work),
        "--match-sparsity",
        "--no-progress",
        "--out-json",
        str(args.out / "slimming.json"),
    ]
    if args.cache_dir:
        argv += ["--cache-dir", str(args.cache_dir)]
    if args.quick:
        argv += [
            "--quick",
            "--train-per-class",
            str(args.train_per_class),
            "--test-per-class",
            str(args.test_per_class),
        ]
    return slimming.parse_args(argv)


def run_unit(
    args: argparse.Namespace,
    data: tuple[ImageTensors, ImageTensors],
    results: dict[str, Any],
    unit: tuple[str, int, list[float], str, list[str]],
    left: float,
) -> list[dict[str, Any]]:
    """Train and prune one unit; its rows, or raise :class:`StageInterrupted` (no rows)."""
    name, epochs, percents, mode, tools = unit
    study = slimming.Study(study_args(args, name, epochs, percents, mode, tools, left), *data)
    scratch = {"rows": list(results["rows"])}
    slimming.run_study(study, scratch, lambda: None)
    before = {slimming.row_key(r) for r in results["rows"]}
    rows = [r for r in scratch["rows"] if slimming.row_key(r) not in before]
    hist = Path(args.work) / f"{name}-e{epochs}" / "sparse" / "bn_gamma_hist.png"
    if hist.exists():
        shutil.copyfile(hist, args.out / f"slimming_{name}_gamma.png")
    return rows


def run_rows(
    args: argparse.Namespace,
    data: tuple[ImageTensors, ImageTensors],
    results: dict[str, Any],
    smoke: dict[str, Any],
    session: dict[str, Any],
    deadline: float,
) -> None:
    """The units in priority order that fit the time left; results written after each."""
    tools, skipped_tools = tool_plan(args.tools)
    session["skipped"].update({f"tool {t}": why for t, why in skipped_tools.items()})
    for name, percents in selected_units(args.only):
        left = deadline - time.monotonic() - END_MARGIN
        mode = compile_for(smoke, name)
        rate, extra = img_per_s(smoke, name, mode), epoch_overhead(smoke, name)
        choice = choose_unit(results, name, percents, tools, rate, left, args, extra)
        if isinstance(choice, str):
            session["skipped"][name] = choice
            LOG.info("%s: %s", name, choice)
            continue
        epochs, todo, est = choice
        LOG.info(
            "%s: %s at %d epochs (%s), estimated %.0f s of %.0f s left",
            name,
            todo,
            epochs,
            mode,
            est,
            left,
        )
        t0 = time.monotonic()
        try:
            rows = run_unit(args, data, results, (name, epochs, todo, mode, tools), left)
        except StageInterrupted as exc:
            session["skipped"][name] = f"interrupted ({exc}); estimate was {est:.0f} s"
            continue
        slimming.merge_rows(results, rows)
        session["units"].append(
            {
                "arch": name,
                "epochs": epochs,
                "percents": todo,
                "compile": mode,
                "estimate_s": round(est),
                "seconds": round(time.monotonic() - t0),
                "rows": len(rows),
            }
        )
        session["rows_added"] += len(rows)
        write_all(args, results, session)


def selected_units(only: Sequence[str] | None) -> list[tuple[str, tuple[float, ...]]]:
    """The priority list, restricted by ``--only ARCH[:PCT]`` (e.g. ``densenet40:0.4``)."""
    if not only:
        return list(PRIORITY)
    wanted: dict[str, list[float]] = {}
    for item in only:
        name, _, pct = item.partition(":")
        if name not in dict(PRIORITY):
            raise SystemExit(
                f"--only: unknown arch {name!r}; choose from {[n for n, _ in PRIORITY]}"
            )
        wanted.setdefault(name, []).extend([float(pct)] if pct else dict(PRIORITY)[name])
    return [(n, tuple(wanted[n])) for n, _ in PRIORITY if n in wanted]


def record_throughput(results: dict[str, Any], smoke: dict[str, Any], gpu: str | None) -> None:
    """VGG-19 training img/s of the smoke's steady (replay-only) epoch, into ``throughput``."""
    if gpu is None:
        return
    for mode in ("none", "cuda-graphs"):
        rate = img_per_s(smoke, "vgg19", mode)
        if rate is None:
            continue
        rec = {
            "model": "vgg19",
            "mode": mode,
            "batch": smoke["batch"],
            "dtype": "bf16",
            "img_per_s": rate,
            "gpu": gpu,
            "source": f"gpu_session smoke: epoch 2 of 2 x {SMOKE_STEPS} steps, min of plain/BN-L1",
        }
        rows = [
            r
            for r in results.get("throughput", [])
            if (r["mode"], r["batch"], r.get("gpu")) != (mode, rec["batch"], gpu)
        ]
        results["throughput"] = [*rows, rec]


# ------------------------------------------------------------------------------------ results
def write_all(args: argparse.Namespace, results: dict[str, Any], session: dict[str, Any]) -> None:
    """``slimming.json/.md``, ``gpu_session.json`` and the channels plot, into ``args.out``."""
    sessions = [s for s in results.get("sessions", []) if s.get("id") != session["id"]]
    results["sessions"] = [*sessions, session]
    plot_channel_panels(results["rows"], args.out / "slimming_channels.png")
    plots = sorted(p.name for p in args.out.glob("slimming_*.png"))
    results["plots"] = sorted(set(results.get("plots", [])) | set(plots))
    slimming.write_results(results, args.out / "slimming.json", None)
    atomic_write_json(args.out / "gpu_session.json", session)


def merge_files(files: Sequence[Path], target: Path) -> int:
    """Merge returned ``slimming.json`` files (rows, throughput, sessions, plots) into ``target``."""
    results = read_json(target) or {"rows": []}
    for f in files:
        other = read_json(f)
        if other is None:
            raise SystemExit(f"--merge: {f} does not exist")
        slimming.merge_rows(results, other.get("rows", []))
        ids = {s.get("id") for s in other.get("sessions", [])}
        results["sessions"] = [
            s for s in results.get("sessions", []) if s.get("id") not in ids
        ] + other.get("sessions", [])
        results["throughput"] = other.get("throughput", results.get("throughput", []))
        for png in Path(f).parent.glob("slimming_*.png"):
            if png.resolve().parent != target.parent.resolve():
                shutil.copyfile(png, target.parent / png.name)
        results["plots"] = sorted(set(results.get("plots", [])) | set(other.get("plots", [])))
        if other.get("meta"):
            results["meta"] = other["meta"]
    slimming.write_results(results, target, None)
    print(f"merged {len(files)} file(s) into {target}: {len(results['rows'])} rows")
    return 0


# ------------------------------------------------------------------------------------ command
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("data", type=Path, nargs="?", help="cifar10-jpeg.tar.gz")
    p.add_argument("out", type=Path, nargs="?", help="output folder ($OUT)")
    p.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=None,
        metavar="FILE",
        help="merge returned slimming.json file(s) into --results and stop",
    )
    p.add_argument(
        "--results", type=Path, default=slimming.DEFAULT_JSON, help="finished rows (skipped)"
    )
    p.add_argument(
        "--budget-seconds", type=float, default=510.0, help="the whole call, smoke included"
    )
    p.add_argument(
        "--only", nargs="*", default=None, metavar="ARCH[:PCT]", help="e.g. vgg19 densenet40:0.4"
    )
    p.add_argument("--tools", nargs="*", default=list(slimming.TOOLS), choices=slimming.TOOLS)
    p.add_argument("--epochs", type=int, default=None, help="force the epochs of new rows")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--smoke-batch", type=int, default=None)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--schedule", default="onecycle")
    p.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "prunekit-gpu-session"
    )
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--smoke-only", action="store_true")
    p.add_argument("--quick", action="store_true", help="CPU check: tiny subset, 1 epoch")
    args = p.parse_args(argv)
    if args.merge is None and (args.data is None or args.out is None):
        p.error("give DATA and OUT (or --merge FILE)")
    args.train_per_class, args.test_per_class = (2, 2) if args.quick else (None, None)
    if args.quick:
        args.epochs = args.epochs or 1
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Smoke, then the rows that fit; 0 unless the arguments are wrong."""
    start = time.monotonic()
    args = parse_args(argv)
    if args.merge is not None:
        return merge_files(args.merge, args.results)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    deadline = start + args.budget_seconds
    args.out.mkdir(parents=True, exist_ok=True)
    ns = argparse.Namespace(
        data=args.data,
        cache_dir=args.cache_dir,
        train_per_class=args.train_per_class,
        test_per_class=args.test_per_class,
    )
    train, test = slimming.load_data(ns)
    args.train_images = len(train)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    session: dict[str, Any] = {
        "id": dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ"),
        "gpu": gpu,
        "env": env_meta(("torch", "torchvision", "torch-pruning")),
        "quick": args.quick,
        "rows_added": 0,
        "units": [],
        "skipped": {},
    }
    results = read_json(args.results) or {"rows": []}
    session["smoke"] = run_smoke(args, train)
    LOG.info("smoke: %s (%.0f s)", session["smoke"]["verdict"], time.monotonic() - start)
    record_throughput(results, session["smoke"], gpu)
    write_all(args, results, session)
    if not args.smoke_only:
        run_rows(args, (train, test), results, session["smoke"], session, deadline)
    session["seconds"] = round(time.monotonic() - start, 1)
    write_all(args, results, session)
    print(
        f"session {session['id']}: {session['rows_added']} rows added; smoke {session['smoke']['verdict']}; files in {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
