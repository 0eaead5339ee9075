"""Coverage benchmark: structured pruning of every torchvision classification and segmentation
model (``--suite timm``: the smallest model of every timm family) with prunekit and with
Torch-Pruning, in the same run, on this CPU.

Each tool prunes each model (``weights=None``, batch 1, 224×224 input, 299 for inception_v3)
by 50% of every group, ranked locally by the L2 norm. Every (tool, model) pair runs in its own
subprocess with a timeout, so a crash, a hang or running out of memory costs one row only.

* prunekit: ``prune(model, x, PruneConfig(ratio=0.5, criterion="l2"))`` (trace + score + plan +
  surgery) is timed; then the pruned model must run, keep its output shape, compute exactly what
  the soft-masked dense model computes (``max_rel_diff <= 1e-4``) and lose >= 30% of its params.
* torch-pruning: ``MetaPruner`` with ``MagnitudeImportance(p=2)``, ``pruning_ratio=0.5``, local
  ranking and the final classifier ignored, otherwise defaults; construction + ``step()`` is
  timed; the pruned model must run and keep its output shape (it has no soft-mask reference).

``--timing`` compares the prune call on resnet50 (3 fresh subprocesses per tool, interleaved).
Both workers run ``gc.collect()`` just before their timed window, so garbage left by the
worker's own setup is not charged to whichever tool happens to allocate first.

Usage:
    python bench/coverage.py                          # everything; resumes bench/results/coverage.json
    python bench/coverage.py --models resnet18,swin_t --tools prunekit
    python bench/coverage.py --redo --models vit_b_16 # recompute those rows
    python bench/coverage.py --timing                 # only the resnet50 timing comparison
    python bench/coverage.py --worker prunekit resnet18 --json-out /tmp/r.json --input-size 64
    python bench/coverage.py --suite timm             # bench/results/coverage_timm.{json,md}

timm suite: a family is a timm model module (``timm.list_modules()``: resnet, convnext,
vision_transformer...); its smallest model by parameter count (counted on the meta device, the
choice cached in ``coverage_timm_models.json``) is built with ``pretrained=False`` and pruned at
its default input size (224 where the default is larger and the model accepts ``img_size``).
prunekit rows also record whether tracing changed the model (``mutated``) and whether the
pruned model runs but differs from its soft mask (``silently_wrong``: the library's own check
is turned off for the timed call and done by the benchmark).
"""

from __future__ import annotations

import os

# Passive OpenMP waiting; spinning threads are much slower when other processes share the cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import contextlib
import copy
import gc
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from _common import (
    REPO,
    atomic_write_json,
    atomic_write_text,
    child_env,
    ensure_src_on_path,
    env_meta,
    read_json,
)

TOOLS = ("prunekit", "torch-pruning")
RATIO = 0.5
CRITERION = "l2"
MAX_DIFF = 1e-4  # soft-mask equivalence tolerance (float32 reassociation noise is ~1e-6)
MIN_PARAM_CUT = 0.30  # prunekit must remove at least this fraction of parameters
DEFAULT_OUT = REPO / "bench" / "results"
TIMING_MODEL = "resnet50"
TIMING_LIMIT_S = 2.0  # the goal for trace + prune of resnet50 on this CPU
SUITES = ("torchvision", "timm")
TIMM_MAX_SIDE = 256  # larger default inputs are built at 224 where the model allows it

ROW_FIELDS = (
    "tool", "model", "ok", "error", "forward_ok", "out_shape_ok", "max_rel_diff",
    "params_before", "params_after", "macs_before", "macs_after", "seconds", "family",
)  # fmt: skip


# --------------------------------------------------------------------------- models


def model_names() -> list[str]:
    """All torchvision classification models, then all segmentation models."""
    import torchvision

    cls = torchvision.models.list_models(module=torchvision.models)
    seg = torchvision.models.list_models(module=torchvision.models.segmentation)
    return list(cls) + [m for m in seg if m not in cls]


def is_segmentation(name: str) -> bool:
    """Whether ``name`` is a torchvision segmentation model."""
    import torchvision

    return name in torchvision.models.list_models(module=torchvision.models.segmentation)


def build(name: str) -> Any:
    """A fresh, randomly initialised torchvision model in eval mode (nothing is downloaded)."""
    import torchvision

    kwargs: dict[str, Any] = {"weights": None}
    if is_segmentation(name):
        # The default backbone weights would be downloaded; the benchmark needs none.
        kwargs["weights_backbone"] = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # googlenet/inception warn about init_weights' default
        return torchvision.models.get_model(name, **kwargs).eval()


def input_size(name: str, override: int | None = None) -> int:
    """Input side length: inception_v3 needs 299, the rest use 224 (unless overridden)."""
    if override is not None:
        return override
    return 299 if name == "inception_v3" else 224


def fill_zero_params(model: Any, std: float = 0.02) -> int:
    """Redraw constant, near-zero parameters from N(0, std²); returns how many were redrawn.

    torchvision initialises biases, norm shifts, ViT's class token and head to 0 and ConvNeXt's
    layer scale to 1e-6. With those the equivalence check is blind: ViT's output is exactly 0
    whatever the pruning does, and a ConvNeXt block adds only 1e-6 of its output to the residual
    stream, so a wrong slice inside it would not show. Same seed and rule for both tools.
    """
    import torch

    n = 0
    with torch.no_grad():
        for p in model.parameters():
            if not p.is_floating_point() or p.numel() == 0:
                continue
            first = p.flatten()[0]
            if first.abs() < 1e-3 and bool((p == first).all()):
                p.normal_(0.0, std)
                n += 1
    return n


def final_layers(model: Any, name: str) -> list[Any]:
    """The layer(s) producing the model's outputs, which must keep all output channels.

    Classification: the last ``nn.Linear`` (squeezenet has none: its classifier conv).
    Segmentation: the convs of ``classifier``/``aux_classifier`` that emit the class maps
    (LR-ASPP adds two of them, so all class-map convs are returned).
    """
    from torch import nn

    if is_segmentation(name):
        heads = [getattr(model, h, None) for h in ("classifier", "aux_classifier")]
        convs = [m for h in heads if h is not None for m in h.modules() if isinstance(m, nn.Conv2d)]
        n_cls = convs[-1].out_channels if convs else 0
        return [c for c in convs if c.out_channels == n_cls]
    if name.startswith("squeezenet"):
        return [m for m in model.classifier.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1:]


def family(name: str) -> str:
    """Model family used to group the summary (``resnet50`` -> ``resnet``)."""
    prefixes = (
        "wide_resnet", "resnext", "resnet", "vgg", "densenet", "efficientnet_v2", "efficientnet",
        "regnet_x", "regnet_y", "mobilenet_v2", "mobilenet_v3", "mnasnet", "shufflenet_v2",
        "squeezenet", "convnext", "swin_v2", "swin", "vit", "maxvit", "googlenet", "inception",
        "alexnet", "deeplabv3", "fcn", "lraspp",
    )  # fmt: skip
    return next((p for p in prefixes if name.startswith(p)), name.split("_")[0])


# --------------------------------------------------------------------------- timm suite


def timm_family_models(cache: Path) -> dict[str, str]:
    """timm family (model module) -> its smallest model, chosen once and cached in ``cache``.

    timm's ``test_*`` models (minimal configurations for its own unit tests) are left out."""
    known = read_json(cache)
    if known:
        return dict(known["families"])
    import timm
    import torch

    out: dict[str, str] = {}
    params: dict[str, int] = {}
    for module in timm.list_modules():
        best: tuple[int, str] | None = None
        for name in timm.list_models(module=module, exclude_filters=["test_*"]):
            n = _meta_params(timm, torch, name)
            if n is not None and (best is None or (n, name) < best):
                best = (n, name)
        print(f"family {module}: {best}", flush=True)
        if best is None:  # nothing builds on meta: the shortest name
            names = sorted(timm.list_models(module=module, exclude_filters=["test_*"]),
                           key=lambda m: (len(m), m))  # fmt: skip
            best = (-1, names[0]) if names else None
        if best is not None:
            out[module], params[module] = best[1], best[0]
    atomic_write_json(cache, {"families": out, "params": params, "timm": timm.__version__})
    return out


def _meta_params(timm: Any, torch: Any, name: str, limit_s: int = 10) -> int | None:
    """Parameter count of timm model ``name`` built on the meta device (None: fails or hangs)."""

    def _alarm(signum: int, frame: Any) -> None:
        raise TimeoutError(name)

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(limit_s)
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return int(sum(p.numel() for p in timm.create_model(name).parameters()))
    except Exception:
        return None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def build_timm(name: str) -> tuple[Any, int]:
    """A randomly initialised timm model in eval mode and its input side length."""
    import timm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = timm.create_model(name, pretrained=False)
        side = int(timm.data.resolve_model_data_config(model)["input_size"][-1])
        if side > TIMM_MAX_SIDE:
            with contextlib.suppress(Exception):  # no img_size argument: the default size
                model, side = timm.create_model(name, pretrained=False, img_size=224), 224
    return model.eval(), side


def timm_final_layers(model: Any) -> list[Any]:
    """The classifier of a timm model (``get_classifier()``), for Torch-Pruning's ignore list."""
    from torch import nn

    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if isinstance(head, nn.Module) and any(True for _ in head.parameters()):
        return [m for m in head.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1:] or [head]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1:]


def fingerprint(model: Any) -> dict[str, Any]:
    """What tracing must leave unchanged: state values, devices, dtypes, flags, attributes."""
    named = list(model.named_parameters(remove_duplicate=False))
    named += list(model.named_buffers(remove_duplicate=False))
    return {
        "state": {n: (t.device, t.dtype, t.requires_grad, t.detach().clone()) for n, t in named},
        "modes": {p: m.training for p, m in model.named_modules(remove_duplicate=False)},
        "attrs": {p: sorted((k, id(v)) for k, v in vars(m).items())
                  for p, m in model.named_modules(remove_duplicate=False)},
    }  # fmt: skip


def same_fingerprint(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two :func:`fingerprint` s are identical (tensor values compared exactly)."""
    import torch

    if (
        a["modes"] != b["modes"]
        or a["attrs"] != b["attrs"]
        or a["state"].keys() != b["state"].keys()
    ):
        return False
    for k, (dev, dt, grad, v) in a["state"].items():
        dev2, dt2, grad2, v2 = b["state"][k]
        if (dev, dt, grad) != (dev2, dt2, grad2) or not torch.equal(v, v2):
            return False
    return True


# --------------------------------------------------------------------------- worker


def _shapes(out: Any) -> Any:
    """Output shapes, keeping the structure of dict/tuple outputs (e.g. segmentation's dict)."""
    if isinstance(out, dict):
        return {k: _shapes(v) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return [_shapes(v) for v in out]
    return list(out.shape) if hasattr(out, "shape") else None


def _err(stage: str, exc: BaseException) -> str:
    """One short line: stage, exception type and the first line of its message."""
    lines = str(exc).strip().splitlines()
    return f"{stage}: {type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def _settle() -> None:
    """Collect the garbage the worker's own setup left (model build, dense forward) before a
    timed window, for both tools alike: otherwise a full collection that the setup made due
    lands in whichever tool allocates first (~0.25 s with torch imported), a property of the
    harness rather than of the tool."""
    gc.collect()


def _prune_prunekit(model: Any, x: Any) -> tuple[Any, float, float]:
    from prunekit.pipeline import PruneConfig, prune

    _settle()
    c0, t0 = time.process_time(), time.perf_counter()
    # The benchmark compares with the soft mask itself (after the timed call), so the
    # library's own check is off here: the times are trace + score + plan + surgery.
    result = prune(model, x, PruneConfig(ratio=RATIO, criterion=CRITERION), verify=False)
    return result.plan, time.perf_counter() - t0, time.process_time() - c0


def _prune_tp(
    model: Any, x: Any, name: str, suite: str = "torchvision"
) -> tuple[None, float, float]:
    import torch_pruning as tp

    # found before timing: it is not part of pruning
    ignored = timm_final_layers(model) if suite == "timm" else final_layers(model, name)
    _settle()
    c0, t0 = time.process_time(), time.perf_counter()
    pruner = tp.pruner.MetaPruner(
        model,
        x,
        importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=RATIO,
        global_pruning=False,
        ignored_layers=ignored,
    )
    pruner.step()
    return None, time.perf_counter() - t0, time.process_time() - c0


def _stage(row: dict[str, Any], stage: str, fn: Callable[[], Any]) -> Any:
    """Run one worker stage; on failure record the first error and return ``None``."""
    try:
        return fn()
    except Exception as exc:  # every failure becomes a row, never a crashed benchmark
        if row.get("error") is None:
            row["error"] = _err(stage, exc)
        row.setdefault("traceback", traceback.format_exc(limit=-3))
        return None


def run_worker(
    tool: str,
    name: str,
    *,
    size: int | None = None,
    macs_before: int | None = None,
    timing_only: bool = False,
    suite: str = "torchvision",
) -> dict[str, Any]:
    """Prune one model with one tool and measure it; every exception becomes ``error``.

    Args:
        tool: ``"prunekit"`` or ``"torch-pruning"``.
        name: torchvision (or, with ``suite="timm"``, timm) model name.
        size: input side length override (default: 224, 299 for inception_v3; timm: the
            model's own).
        macs_before: dense MACs measured earlier (skips recounting a huge model).
        timing_only: only prune and check the forward pass (for the timing comparison).
        suite: ``"torchvision"`` or ``"timm"``.

    Returns:
        A result row (see ``ROW_FIELDS``), plus ``cpu_seconds`` and ``input_shape``.
    """
    import torch

    ensure_src_on_path()
    from prunekit.report import count_macs, count_params

    torch.manual_seed(0)
    row: dict[str, Any] = dict.fromkeys(ROW_FIELDS)
    row.update(tool=tool, model=name, ok=False, forward_ok=False, out_shape_ok=False)
    if timing_only:
        row["timing_only"] = True
    built = _stage(row, "build", lambda: _build(suite, name, size))
    if built is None:
        return row
    model, x = built
    row["input_shape"] = list(x.shape)
    row["zero_params_filled"] = fill_zero_params(model)
    with torch.no_grad():
        ref_shapes = _stage(row, "dense forward", lambda: _shapes(model(x)))
    row["params_before"] = count_params(model)
    if not timing_only:
        row["macs_before"] = macs_before or _stage(row, "macs", lambda: count_macs(model, x))
    if tool == "prunekit" and suite == "timm":
        _stage(row, "trace", lambda: _mutation_check(row, model, x))
    dense = copy.deepcopy(model) if tool == "prunekit" and not timing_only else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if tool == "prunekit":
            done = _stage(row, "prune", lambda: _prune_prunekit(model, x))
        else:
            done = _stage(row, "prune", lambda: _prune_tp(model, x, name, suite))
    if done is None:
        return row
    plan, row["seconds"], row["cpu_seconds"] = done
    _check_pruned(row, model, x, ref_shapes)
    row["params_after"] = count_params(model)
    if dense is not None and row["forward_ok"]:
        _equivalence(row, dense, plan, model, x)
    if not timing_only and row["forward_ok"]:
        row["macs_after"] = _stage(row, "macs after", lambda: count_macs(model, x))
    row["ok"] = row_ok(row)
    return row


def _build(suite: str, name: str, size: int | None) -> tuple[Any, Any]:
    import torch

    if suite == "timm":
        model, side = build_timm(name)
        side = size or side
    else:
        model, side = build(name), input_size(name, size)
    return model, torch.randn(1, 3, side, side)


def _mutation_check(row: dict[str, Any], model: Any, x: Any) -> None:
    """Trace once on its own and record whether the model changed (it must not)."""
    from prunekit.graph import trace

    before = fingerprint(model)
    trace(model, x)
    row["mutated"] = not same_fingerprint(before, fingerprint(model))


def _equivalence(row: dict[str, Any], dense: Any, plan: Any, model: Any, x: Any) -> None:
    from prunekit.verify import max_rel_diff, soft_copy

    diff = _stage(row, "equivalence", lambda: max_rel_diff(soft_copy(dense, plan), model, x))
    row["max_rel_diff"] = diff
    # Runs, keeps its output shape, yet computes something else than its soft mask.
    row["silently_wrong"] = bool(row["out_shape_ok"] and diff is not None and not diff <= MAX_DIFF)


def _check_pruned(row: dict[str, Any], model: Any, x: Any, ref_shapes: Any) -> None:
    import torch

    with torch.no_grad():
        shapes = _stage(row, "pruned forward", lambda: _shapes(model(x)))
    row["forward_ok"] = shapes is not None
    row["out_shape_ok"] = shapes is not None and shapes == ref_shapes
    if row["forward_ok"] and not row["out_shape_ok"] and row["error"] is None:
        row["error"] = f"output shape changed: {ref_shapes} -> {shapes}"


def param_cut(row: dict[str, Any]) -> float | None:
    """Fraction of parameters removed, or ``None`` when unknown."""
    b, a = row.get("params_before"), row.get("params_after")
    return 1.0 - a / b if b and a is not None else None


def row_ok(row: dict[str, Any]) -> bool:
    """The success rule for a row (stricter for prunekit: exact equivalence and a real cut)."""
    base = (
        row.get("error") is None and bool(row.get("forward_ok")) and bool(row.get("out_shape_ok"))
    )
    if row.get("tool") != "prunekit" or row.get("timing_only"):
        return base  # torch-pruning, or a timing run (no equivalence check there)
    diff, cut = row.get("max_rel_diff"), param_cut(row)
    return (
        base and diff is not None and diff <= MAX_DIFF and cut is not None and cut >= MIN_PARAM_CUT
    )


# --------------------------------------------------------------------------- driver


def spawn_worker(
    tool: str, name: str, *, timeout: float, size: int | None = None,
    macs_before: int | None = None, timing_only: bool = False, threads: int | None = None,
    suite: str = "torchvision",
) -> dict[str, Any]:  # fmt: skip
    """Run :func:`run_worker` in a fresh subprocess; a crash or timeout becomes a failed row."""
    with tempfile.TemporaryDirectory(prefix="pk-cov-") as tmp:
        out = Path(tmp) / "row.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", tool, name,
               "--json-out", str(out)]  # fmt: skip
        if size is not None:
            cmd += ["--input-size", str(size)]
        if macs_before is not None:
            cmd += ["--macs-before", str(macs_before)]
        if timing_only:
            cmd.append("--timing-only")
        cmd += ["--suite", suite]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, env=child_env(threads), capture_output=True, text=True,
                                  timeout=timeout, cwd=REPO, preexec_fn=_oom_first)  # fmt: skip
        except subprocess.TimeoutExpired:
            return _failed_row(tool, name, f"timeout: worker killed after {timeout:.0f} s")
        row = read_json(out)
        if row is None:
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] or [""]
            return _failed_row(tool, name, _crash_message(proc.returncode, tail[0]))
        row["wall_seconds_total"] = round(time.perf_counter() - t0, 2)
        return row


def _oom_first() -> None:
    """In the worker, before exec: if memory runs out, the kernel kills this worker first
    (a failed row), not the driver or anything else on the machine."""
    with contextlib.suppress(OSError):
        Path("/proc/self/oom_score_adj").write_text("1000")


def _crash_message(code: int, last_line: str) -> str:
    """Why a worker died: a signal by name (SIGKILL is what the kernel's OOM killer sends)."""
    if code < 0:
        sig = signal.Signals(-code).name
        hint = " (on Linux usually the out-of-memory killer; see dmesg)" if sig == "SIGKILL" else ""
        return f"worker killed by {sig}{hint}"
    return f"worker crashed (exit {code}): {last_line}"


def _failed_row(tool: str, name: str, error: str) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(ROW_FIELDS)
    row.update(tool=tool, model=name, ok=False, error=error[:300], forward_ok=False,
               out_shape_ok=False)  # fmt: skip
    return row


def _fmt_row(row: dict[str, Any]) -> str:
    cut = param_cut(row)
    parts = [f"{row['tool']:<13}", "ok  " if row["ok"] else "FAIL"]
    if row.get("seconds") is not None:
        parts.append(f"{row['seconds']:7.2f}s")
    if cut is not None:
        parts.append(f"params -{cut:.0%}")
    if row.get("max_rel_diff") is not None:
        parts.append(f"diff {row['max_rel_diff']:.1e}")
    if row.get("error"):
        parts.append(row["error"][:120])
    return "  ".join(parts)


def run_coverage(args: argparse.Namespace, state: dict[str, Any], save: Callable[[], None]) -> None:
    """Run every missing (tool, model) pair (or all with ``--redo``), saving after each row."""
    names = args.models or suite_models(args)
    rows = {(r["tool"], r["model"]): r for r in state["rows"]}
    todo = [(n, t) for n in names for t in args.tools if args.redo or (t, n) not in rows]
    print(
        f"coverage: {len(names)} models x {len(args.tools)} tools, {len(todo)} to run", flush=True
    )
    fams = {m: f for f, m in args.families.items()}
    for i, (name, tool) in enumerate(todo, 1):
        known = [r.get("macs_before") for (_, m), r in rows.items() if m == name]
        macs = next((m for m in known if m), None) if args.input_size is None else None
        t0 = time.perf_counter()
        row = spawn_worker(tool, name, timeout=args.timeout, size=args.input_size,
                           macs_before=macs, threads=args.threads, suite=args.suite)  # fmt: skip
        row["family"] = fams.get(name, family(name))
        rows[(tool, name)] = row
        state["rows"] = _ordered(rows.values(), names)
        save()
        print(f"[{i}/{len(todo)}] {name:<30} {_fmt_row(row)}  ({time.perf_counter() - t0:.0f}s)",
              flush=True)  # fmt: skip


def suite_models(args: argparse.Namespace) -> list[str]:
    """The suite's models: every torchvision model, or one per timm family."""
    return list(args.families.values()) if args.suite == "timm" else model_names()


def _ordered(rows: Iterable[dict[str, Any]], names: Sequence[str] = ()) -> list[dict[str, Any]]:
    try:
        order = {n: i for i, n in enumerate(names or model_names())}
    except Exception:
        order = {}
    return sorted(rows, key=lambda r: (order.get(r["model"], 10**6), r["model"],
                                       TOOLS.index(r["tool"]) if r["tool"] in TOOLS else 9))  # fmt: skip


def run_timing(args: argparse.Namespace) -> dict[str, Any]:
    """Time the prune call of each tool on resnet50 in fresh subprocesses, interleaved."""
    runs: dict[str, list[dict[str, Any]]] = {t: [] for t in args.tools}
    for i in range(args.repeats):
        for tool in args.tools:  # interleaved, so background load hits both tools alike
            row = spawn_worker(tool, TIMING_MODEL, timeout=args.timeout, timing_only=True,
                               threads=args.threads)  # fmt: skip
            runs[tool].append({k: row.get(k) for k in ("seconds", "cpu_seconds", "ok", "error")})
            print(f"timing {i + 1}/{args.repeats} {_fmt_row(row)}", flush=True)
    return summarize_timing(runs, loadavg=list(os.getloadavg()))


def summarize_timing(runs: dict[str, list[dict[str, Any]]], loadavg: Any = None) -> dict[str, Any]:
    """Medians per tool, the prunekit/torch-pruning ratio and the issue's two checks."""
    out: dict[str, Any] = {"model": TIMING_MODEL, "ratio": RATIO, "criterion": CRITERION,
                           "limit_s": TIMING_LIMIT_S, "loadavg_after": loadavg, "runs": runs}  # fmt: skip
    for tool, rs in runs.items():
        secs = [r["seconds"] for r in rs if r.get("seconds") is not None and r.get("ok")]
        cpu = [r["cpu_seconds"] for r in rs if r.get("cpu_seconds") is not None and r.get("ok")]
        out[tool] = {"median_s": statistics.median(secs) if secs else None,
                     "median_cpu_s": statistics.median(cpu) if cpu else None, "n_ok": len(secs)}  # fmt: skip
    pk = out.get("prunekit", {}).get("median_s")
    tpm = out.get("torch-pruning", {}).get("median_s")
    out["prunekit_over_tp"] = pk / tpm if pk is not None and tpm else None
    out["within_limit"] = pk is not None and pk <= TIMING_LIMIT_S
    out["not_slower_than_tp"] = pk is not None and tpm is not None and pk <= tpm
    return out


# --------------------------------------------------------------------------- report


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.0%}"


def _secs(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def _diff(x: float | None) -> str:
    return "–" if x is None else f"{x:.1e}"


def _cell_err(row: dict[str, Any] | None) -> str:
    if row is None:
        return "not run"
    return (row.get("error") or "").replace("|", "\\|")[:160]


def render_md(state: dict[str, Any]) -> str:
    """The Markdown report: summary, per-family notes, per-model table, timing."""
    meta, rows = state["meta"], state["rows"]
    by = {(r["tool"], r["model"]): r for r in rows}
    names = list(dict.fromkeys(r["model"] for r in rows))
    suite = meta.get("suite", "torchvision")
    what = "timm families (the smallest model of each)" if suite == "timm" else "torchvision models"
    lines = [f"# Coverage: prunekit vs Torch-Pruning on {what}", ""]
    lines += _md_intro(meta) + _md_summary(by, names) + _md_families(by, names)
    lines += ["## Per model", "",
              "| model | prunekit | max rel diff | params cut | MACs cut | s | torch-pruning "
              "| params cut | MACs cut | s | error (prunekit / torch-pruning) |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for n in names:
        pk, tp = by.get(("prunekit", n)), by.get(("torch-pruning", n))
        errs = " / ".join(e for e in (_cell_err(pk), _cell_err(tp)) if e)
        lines.append(f"| {n} | {_okcell(pk)} | {_diff((pk or {}).get('max_rel_diff'))} "
                     f"| {_pct(param_cut(pk or {}))} | {_pct(_mac_cut(pk))} "
                     f"| {_secs((pk or {}).get('seconds'))} | {_okcell(tp)} "
                     f"| {_pct(param_cut(tp or {}))} | {_pct(_mac_cut(tp))} "
                     f"| {_secs((tp or {}).get('seconds'))} | {errs} |")  # fmt: skip
    lines += ["", *_md_timing(state.get("timing"))]
    return "\n".join(lines) + "\n"


def _okcell(row: dict[str, Any] | None) -> str:
    return "–" if row is None else ("ok" if row["ok"] else "**fail**")


def _mac_cut(row: dict[str, Any] | None) -> float | None:
    if not row or not row.get("macs_before") or row.get("macs_after") is None:
        return None
    return 1.0 - row["macs_after"] / row["macs_before"]


def _md_intro(meta: dict[str, Any]) -> list[str]:
    commands = meta.get("commands", [meta.get("command")])
    return [
        f"Run: {meta.get('date')} on {meta.get('hardware')} ({meta.get('cpu')}, "
        f"{meta.get('threads')} threads), torch {meta.get('torch')}, torchvision "
        f"{meta.get('torchvision')}, torch-pruning {meta.get('torch_pruning')}, prunekit "
        f"{meta.get('prunekit')}. "
        + ("Commands, in order (a resumed run): " if len(commands) > 1 else "Command: ")
        + ", ".join(f"`{c}`" for c in commands)
        + ".",
        "",
        (
            "Setting: timm `pretrained=False`, batch 1, each model's default input size (224 where "
            f"it is larger than {TIMM_MAX_SIDE} and the model takes `img_size`), ratio {RATIO}, "
            if meta.get("suite") == "timm"
            else f"Setting: `weights=None`, batch 1, 224×224 (inception_v3 299×299), ratio {RATIO}, "
        )
        + f"{CRITERION.upper()} criterion, local ranking, each (tool, model) in its own subprocess "
        f"with a {meta.get('timeout_s', 600):g} s timeout; if memory runs out, the kernel's "
        "out-of-memory killer takes that worker first (`oom_score_adj` 1000). "
        f"prunekit **ok** = pruned model runs, output shape unchanged, max relative difference to "
        f"its soft-masked dense copy ≤ {MAX_DIFF:g}, and ≥ {MIN_PARAM_CUT:.0%} of parameters "
        "removed. torch-pruning **ok** = `MetaPruner(MagnitudeImportance(p=2))` with the final "
        "classifier ignored runs, and the pruned model runs with unchanged output shape (it has no "
        "soft-mask equivalence check). Times are wall seconds of the prune call only (prunekit: "
        "trace + score + plan + surgery; torch-pruning: pruner construction + `step()`), after "
        "`gc.collect()` in both workers, on a shared machine, so they are noisy. Before pruning, parameters that torchvision "
        "initialises to a constant near 0 (biases, norm shifts, ViT's class token and head, "
        "ConvNeXt's 1e-6 layer scale) are redrawn from N(0, 0.02²), the same for both tools: "
        "otherwise ViT's output is identically 0 and the equivalence check could not fail.",
        "",
    ]


def _md_summary(by: dict[tuple[str, str], dict[str, Any]], names: list[str]) -> list[str]:
    lines = ["## Summary", ""]
    for tool in TOOLS:
        rs = [by[(tool, n)] for n in names if (tool, n) in by]
        lines.append(f"- **{tool}**: ok {sum(r['ok'] for r in rs)}/{len(rs)}")
    both = [n for n in names if all((t, n) in by for t in TOOLS)]  # compare only where both ran
    pk_only = [n for n in both if _ok(by, "prunekit", n) and not _ok(by, "torch-pruning", n)]
    tp_only = [n for n in both if _ok(by, "torch-pruning", n) and not _ok(by, "prunekit", n)]
    pk = [by[("prunekit", n)] for n in names if ("prunekit", n) in by]
    wrong = [r["model"] for r in pk if r.get("silently_wrong")]
    mutated = [r["model"] for r in pk if r.get("mutated")]
    lines.append(f"- prunekit silently wrong models (run, same shape, differ from the soft mask): "
                 f"{len(wrong)}{' (' + ', '.join(wrong) + ')' if wrong else ''}")  # fmt: skip
    if any("mutated" in r for r in pk):
        lines.append(f"- prunekit traces that changed the model: {len(mutated)}"
                     f"{' (' + ', '.join(mutated) + ')' if mutated else ''}")  # fmt: skip
    lines.append(f"- ok with prunekit only: {', '.join(pk_only) or 'none'}")
    lines.append(f"- ok with torch-pruning only: {', '.join(tp_only) or 'none'}")
    return [*lines, ""]


def _ok(by: dict[tuple[str, str], dict[str, Any]], tool: str, name: str) -> bool:
    return bool(by.get((tool, name), {}).get("ok"))


def _md_families(by: dict[tuple[str, str], dict[str, Any]], names: list[str]) -> list[str]:
    fams: dict[str, list[str]] = {}
    for n in names:
        fam = next(
            (r.get("family") for (_, m), r in by.items() if m == n and r.get("family")), None
        )
        fams.setdefault(fam or family(n), []).append(n)
    lines = ["## Per family", "",
             "| family | models | prunekit ok | torch-pruning ok | notes |", "|---|---|---|---|---|"]  # fmt: skip
    for fam, ns in fams.items():
        cells = []
        for tool in TOOLS:
            rs = [by[(tool, n)] for n in ns if (tool, n) in by]
            cells.append(f"{sum(r['ok'] for r in rs)}/{len(rs)}")
        lines.append(f"| {fam} | {len(ns)} | {cells[0]} | {cells[1]} | {_family_note(by, ns)} |")
    return [*lines, ""]


def _family_note(by: dict[tuple[str, str], dict[str, Any]], ns: list[str]) -> str:
    """Distinct failure reasons in a family (error text with numbers/names normalised)."""
    notes = []
    for tool in TOOLS:
        errs: dict[str, int] = {}
        for n in ns:
            r = by.get((tool, n))
            if r is not None and not r["ok"]:
                key = _error_kind(r)
                errs[key] = errs.get(key, 0) + 1
        notes += [f"{tool}: {k} (×{c})" for k, c in errs.items()]
    return "; ".join(notes).replace("|", "\\|")[:400]


def _error_kind(row: dict[str, Any]) -> str:
    if row.get("error"):
        return re.sub(r"\d+", "N", row["error"])[:100]
    cut, diff = param_cut(row), row.get("max_rel_diff")
    if diff is not None and diff > MAX_DIFF:
        return f"max rel diff {diff:.1e} > {MAX_DIFF:g}"
    if cut is not None and cut < MIN_PARAM_CUT:
        return f"only {cut:.0%} of params removed"
    return "failed check"


def _md_timing(t: dict[str, Any] | None) -> list[str]:
    if not t:
        return ["## Timing", "", "Not run yet (`python bench/coverage.py --timing`).", ""]
    pk, tp = t.get("prunekit", {}), t.get("torch-pruning", {})
    runs = t.get("runs", {})
    fmt = {k: ", ".join(_secs(r.get("seconds")) for r in v) for k, v in runs.items()}
    ratio = t.get("prunekit_over_tp")
    return [
        f"## Timing: {t['model']} at ratio {t['ratio']}, {len(runs.get('prunekit', []))} fresh "
        "subprocesses per tool (interleaved)", "",
        "| tool | median s | median CPU s | runs (s) |", "|---|---|---|---|",
        f"| prunekit | {_secs(pk.get('median_s'))} | {_secs(pk.get('median_cpu_s'))} | "
        f"{fmt.get('prunekit', '')} |",
        f"| torch-pruning | {_secs(tp.get('median_s'))} | {_secs(tp.get('median_cpu_s'))} | "
        f"{fmt.get('torch-pruning', '')} |", "",
        f"prunekit / torch-pruning = {'–' if ratio is None else f'{ratio:.2f}'}; "
        f"prunekit ≤ {t['limit_s']:g} s: **{'yes' if t.get('within_limit') else 'no'}**; "
        f"not slower than torch-pruning: **{'yes' if t.get('not_slower_than_tp') else 'no'}**. "
        f"Load average after the runs: {t.get('loadavg_after')}.", "",
    ]  # fmt: skip


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--models",
        type=lambda s: [m for m in s.split(",") if m],
        default=None,
        help="comma-separated model names (default: all)",
    )
    p.add_argument(
        "--tools",
        type=lambda s: s.split(","),
        default=list(TOOLS),
        help="comma-separated: prunekit,torch-pruning",
    )
    p.add_argument("--suite", choices=SUITES, default="torchvision", help="which models")
    p.add_argument("--redo", action="store_true", help="recompute rows that already exist")
    p.add_argument("--timing", action="store_true", help="only the resnet50 timing comparison")
    p.add_argument("--repeats", type=int, default=3, help="timing runs per tool")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per worker")
    p.add_argument("--jobs", type=int, default=1, help="parallel workers")
    p.add_argument("--input-size", type=int, default=None, help="override the input side length")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    p.add_argument("--worker", nargs=2, metavar=("TOOL", "MODEL"), help=argparse.SUPPRESS)
    p.add_argument("--json-out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--macs-before", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--timing-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)  # fmt: skip
    bad = [t for t in args.tools if t not in TOOLS]
    if bad:
        p.error(f"unknown tool(s) {bad}; choose from {list(TOOLS)}")
    if args.jobs < 1 or args.repeats < 1:
        p.error("--jobs and --repeats must be >= 1")
    args.threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else None
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: worker mode, or the driver (coverage and/or timing) with resume."""
    args = parse_args(argv)
    if args.worker:
        if args.json_out is None:
            raise SystemExit("--worker needs --json-out FILE")
        row = run_worker(args.worker[0], args.worker[1], size=args.input_size,
                         macs_before=args.macs_before, timing_only=args.timing_only,
                         suite=args.suite)  # fmt: skip
        atomic_write_json(args.json_out, row)
        return 0
    stem = "coverage" if args.suite == "torchvision" else f"coverage_{args.suite}"
    json_path, md_path = args.out_dir / f"{stem}.json", args.out_dir / f"{stem}.md"
    args.families = (
        timm_family_models(args.out_dir / "coverage_timm_models.json")
        if args.suite == "timm"
        else {}
    )
    state = read_json(json_path) or {"meta": {}, "rows": []}
    # A resumed result is built by several invocations: keep all their command lines.
    history = [c for c in state["meta"].get("commands", []) if isinstance(c, str)]
    packages = ("torch", "torchvision", "torch-pruning") + (
        ("timm",) if args.suite == "timm" else ()
    )
    state["meta"] = {**env_meta(packages), "suite": args.suite,
                     "ratio": RATIO, "criterion": CRITERION, "ranking": "local",
                     "timeout_s": args.timeout, "input_size": args.input_size or "224 (299 inception_v3)"}  # fmt: skip
    state["meta"]["commands"] = [*history, state["meta"]["command"]]

    def save() -> None:
        atomic_write_json(json_path, state)
        atomic_write_text(md_path, render_md(state))

    if args.timing:
        state["timing"] = run_timing(args)
    elif args.jobs > 1:
        run_coverage_parallel(args, state, save)
    else:
        run_coverage(args, state, save)
    save()
    print(_summary_line(state), flush=True)
    return 0


def run_coverage_parallel(args: argparse.Namespace, state: dict[str, Any],
                          save: Callable[[], None]) -> None:  # fmt: skip
    """Like :func:`run_coverage` with ``--jobs`` workers at once (threads only wait on children)."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    names = args.models or suite_models(args)
    rows = {(r["tool"], r["model"]): r for r in state["rows"]}
    todo = [(n, t) for n in names for t in args.tools if args.redo or (t, n) not in rows]
    print(f"coverage: {len(todo)} to run with {args.jobs} jobs", flush=True)
    fams = {m: f for f, m in args.families.items()}
    with ThreadPoolExecutor(args.jobs) as pool:
        futs = {pool.submit(spawn_worker, t, n, timeout=args.timeout, size=args.input_size,
                            threads=args.threads, suite=args.suite): (n, t) for n, t in todo}  # fmt: skip
        for i, fut in enumerate(as_completed(futs), 1):
            n, t = futs[fut]
            rows[(t, n)] = {**fut.result(), "family": fams.get(n, family(n))}
            state["rows"] = _ordered(rows.values(), names)
            save()
            print(f"[{i}/{len(todo)}] {n:<30} {_fmt_row(rows[(t, n)])}", flush=True)


def _summary_line(state: dict[str, Any]) -> str:
    parts = []
    for tool in TOOLS:
        rs = [r for r in state["rows"] if r["tool"] == tool]
        parts.append(f"{tool} ok {sum(r['ok'] for r in rs)}/{len(rs)}")
    return "; ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
