"""Speed benchmark: do fewer MACs make a faster model? prunekit and Torch-Pruning, same run.

For each model (torchvision resnet50, vgg16_bn, mobilenet_v2, efficientnet_b0, densenet121,
convnext_tiny, vit_b_16 at 224×224; the CIFAR zoo vgg19, preresnet164, densenet40 at 32×32),
``weights=None``, pruned by L2 norm, local ranking, at ratios 0.3/0.5/0.7:

* prunekit with its default widths (``round_to=None``: the device's multiple,
  ``prunekit.latency.widths``) and with exact counts (``round_to=1``), Torch-Pruning
  (``MetaPruner``, ``MagnitudeImportance(p=2)``, final classifier ignored);
* MACs ratio = dense MACs / pruned MACs; speed-up = dense latency / pruned latency, measured
  **interleaved in one run** (dense and every pruned copy of the model alternate) in eager
  PyTorch, onnxruntime fp32 and onnxruntime int8 (static QDQ, calibrated on 8 random batches:
  speed only — accuracy is tested on real data elsewhere); efficiency = speed-up / MACs ratio;
* latency-target rows: :func:`prunekit.latency.latency_target_plan` at 0.7 and 0.5 of the
  dense eager latency, target vs achieved (measured again, interleaved with dense).

Each model runs in its own subprocess; results are saved after every model and a rerun resumes.
Timings need a quiet machine: the load average is recorded before and after each model.

Usage:
    python bench/speed.py                 # everything -> bench/results/speed.{json,md,png}
    python bench/speed.py --quick         # resnet18 + zoo vgg11, small inputs, to /tmp/pk-speed
    python bench/speed.py --models mobilenet_v2 --redo
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/_common.child_env

import argparse
import copy
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from _common import REPO, atomic_write_json, atomic_write_text, child_env, env_meta, read_json

TV = ["resnet50", "vgg16_bn", "mobilenet_v2", "efficientnet_b0", "densenet121", "convnext_tiny",
      "vit_b_16"]  # fmt: skip
ZOO = ["zoo:vgg19", "zoo:preresnet164", "zoo:densenet40"]
RATIOS = (0.3, 0.5, 0.7)
VARIANTS = ("prunekit", "prunekit-exact", "torch-pruning")
TARGETS = (0.7, 0.5)


def build(name: str) -> Any:
    """Dense model in eval mode and its input side length."""
    import torch

    torch.manual_seed(0)
    if name.startswith("zoo:"):
        from prunekit.zoo import build as zoo_build

        return zoo_build(name[4:]).eval(), 32
    import torchvision

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torchvision.models.get_model(name, weights=None).eval(), 224


def last_linear(model: Any) -> list[Any]:
    from torch import nn

    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1:]


def prune_copy(variant: str, dense: Any, x: Any, ratio: float) -> Any:
    """A pruned copy of ``dense`` by one tool."""
    model = copy.deepcopy(dense)
    if variant == "torch-pruning":
        import torch_pruning as tp

        tp.pruner.MetaPruner(model, x, importance=tp.importance.MagnitudeImportance(p=2),
                             pruning_ratio=ratio, global_pruning=False,
                             ignored_layers=last_linear(model)).step()  # fmt: skip
        return model
    from prunekit.pipeline import PruneConfig, prune

    names = [n for n, m in model.named_modules() if m in last_linear(model)]
    cfg = PruneConfig(ratio=ratio, criterion="l2", ignored_layers=names,
                      round_to=1 if variant == "prunekit-exact" else None)  # fmt: skip
    prune(model, x, cfg)
    return model


def _ort_times(models: dict[str, Any], x: Any, tmp: Path, cfg: Any, int8: bool) -> dict[str, float]:
    from prunekit.export import ort_latency, to_onnx

    files = {k: to_onnx(m, x, tmp / f"{k}.onnx", verify=True).path for k, m in models.items()}
    if int8:
        import torch

        from prunekit.quantize import quantize_int8

        calib = [torch.randn_like(x) for _ in range(8)]
        files = {k: quantize_int8(p, tmp / f"{k}.int8.onnx", calib) for k, p in files.items()}
    return {k: s.median_ms for k, s in ort_latency(files, x, cfg).items()}


def run_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """All rows of one model (runs in a worker process)."""
    import torch

    from prunekit.latency import LatencyConfig, compare_latency
    from prunekit.report import count_macs

    torch.set_num_threads(args.threads)
    dense, size = build(name)
    size = size if name.startswith("zoo:") else (args.input_size or size)  # zoo: CIFAR 32x32
    x = torch.randn(args.batch, 3, size, size)
    out: dict[str, Any] = {"model": name, "input": list(x.shape), "loadavg_before": os.getloadavg()}
    models = {"dense": dense}
    for r in args.ratios:
        for v in args.variants:
            step = "prune"
            try:
                pruned = prune_copy(v, dense, x, r)
                step = "pruned forward"  # a model that no longer runs cannot be timed
                with torch.no_grad():
                    pruned(x)
                models[f"{v}@{r}"] = pruned
            except Exception as exc:  # a tool failing on a model is a result, not a crash
                msg = f"{step}: {type(exc).__name__}: {exc}"
                out.setdefault("errors", {})[f"{v}@{r}"] = msg[:200]
    macs = {k: count_macs(m, x) for k, m in models.items()}
    cfg = LatencyConfig(warmup=3, repeats=args.repeats, threads=args.threads)
    eager = {k: s.median_ms for k, s in compare_latency(models, x, cfg).items()}
    times = {"eager": eager}
    with tempfile.TemporaryDirectory(prefix="pk-speed-") as tmp:
        for rt, int8 in (("ort", False), ("ort_int8", True)):
            try:
                times[rt] = _ort_times(models, x, Path(tmp), cfg, int8)
            except Exception as exc:
                out.setdefault("errors", {})[rt] = f"{type(exc).__name__}: {exc}"[:200]
    out["rows"] = [_row(k, macs, times) for k in models if k != "dense"]
    out["dense"] = {"macs": macs["dense"], **{rt: t.get("dense") for rt, t in times.items()}}
    out["latency_targets"] = _targets(dense, x, args) if args.targets else []
    out["loadavg_after"] = os.getloadavg()
    return out


def _row(key: str, macs: dict[str, int], times: dict[str, dict[str, float]]) -> dict[str, Any]:
    variant, ratio = key.split("@")
    row: dict[str, Any] = {"variant": variant, "ratio": float(ratio),
                           "macs_ratio": macs["dense"] / max(macs[key], 1)}  # fmt: skip
    for rt, t in times.items():
        if key in t and "dense" in t:
            row[f"speedup_{rt}"] = t["dense"] / t[key]
            row[f"efficiency_{rt}"] = row[f"speedup_{rt}"] / row["macs_ratio"]
            row[f"ms_{rt}"] = t[key]
    return row


def _targets(dense: Any, x: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    from prunekit import score, trace
    from prunekit.latency import LatencyConfig, latency_target_plan

    names = [n for n, m in dense.named_modules() if m in last_linear(dense)]
    graph = trace(dense, x, ignored_layers=names)
    scores = score(dense, graph, "l2")
    rows = []
    for t in TARGETS:
        res = latency_target_plan(graph, scores, dense, x, target=t, round_to=8,
                                  config=LatencyConfig(warmup=3, repeats=args.repeats,
                                                       threads=args.threads))  # fmt: skip
        rows.append({"target": t, "target_ms": res.target_ms, "achieved_ms": res.achieved_ms,
                     "dense_ms": res.dense_ms, "error": res.error,
                     "trials": len(res.trials)})  # fmt: skip
    return rows


# --------------------------------------------------------------------------- report


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Median efficiency per (variant, ratio, runtime) and the issue's checks."""
    out: dict[str, Any] = {}
    rows = [dict(r, model=m["model"]) for m in results for r in m.get("rows", [])]
    for v in VARIANTS:
        for ratio in RATIOS:
            for rt in ("eager", "ort", "ort_int8"):
                vals = [r[f"efficiency_{rt}"] for r in rows
                        if r["variant"] == v and r["ratio"] == ratio and f"efficiency_{rt}" in r]  # fmt: skip
                if vals:
                    out[f"{v}@{ratio}/{rt}"] = statistics.median(vals)
    slower = [f"{r['model']} {r['variant']}@{r['ratio']} {rt}" for r in rows
              for rt in ("eager", "ort") if r.get(f"speedup_{rt}", 2) < 1.0]  # fmt: skip
    out["slower_than_dense"] = slower
    tgt = [t for m in results for t in m.get("latency_targets", [])]
    out["targets_within_10pct"] = all(abs(t["error"]) <= 0.10 for t in tgt) if tgt else None
    return out


def render_md(state: dict[str, Any]) -> str:
    meta, results = state["meta"], state["results"]
    lines = ["# Speed: measured speed-up vs MACs ratio (prunekit, Torch-Pruning)", "",
             f"Run: {meta.get('date')} on {meta.get('hardware')} ({meta.get('cpu')}), "
             f"{meta.get('bench_threads')} threads, batch {meta.get('batch')}, torch "
             f"{meta.get('torch')}, onnxruntime {meta.get('onnxruntime')}, torch-pruning "
             f"{meta.get('torch_pruning')}. Commands, in order: "
             f"{', '.join(f'`{c}`' for c in meta.get('commands', [meta.get('command')]))}. Load average "
             "before/after each model is in speed.json; timings on a loaded machine are noisy.",
             "", "Efficiency = speed-up / MACs ratio (1.0 = the model got as much faster as its "
             "MACs say). Median over models:", "",
             "| variant | ratio | eager | ORT fp32 | ORT int8 |", "|---|---|---|---|---|"]  # fmt: skip
    summ = summarize(results)
    for v in VARIANTS:
        for ratio in RATIOS:
            cells = [summ.get(f"{v}@{ratio}/{rt}") for rt in ("eager", "ort", "ort_int8")]
            if any(c is not None for c in cells):
                lines.append(f"| {v} | {ratio} | " + " | ".join(_f(c) for c in cells) + " |")
    lines += ["", f"Pruned models slower than dense (eager or ORT fp32): "
              f"{', '.join(summ['slower_than_dense']) or 'none'}.", "",
              "## Per model", "",
              "| model | variant | ratio | MACs ratio | speed-up eager | ORT | ORT int8 "
              "| efficiency eager | ORT | ORT int8 |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for m in results:
        for r in m.get("rows", []):
            lines.append(f"| {m['model']} | {r['variant']} | {r['ratio']} | {r['macs_ratio']:.2f} | "
                         + " | ".join(_f(r.get(f"speedup_{rt}")) for rt in ("eager", "ort", "ort_int8"))
                         + " | " + " | ".join(_f(r.get(f"efficiency_{rt}"))
                                              for rt in ("eager", "ort", "ort_int8")) + " |")  # fmt: skip
    fails = [f"- {m['model']}: {m['error']}" for m in results if m.get("error")]
    fails += [f"- {m['model']} {k}: {e}" for m in results for k, e in m.get("errors", {}).items()]
    if fails:
        lines += ["", "## Failures (not timed)", "", *(f.replace("\n", " ") for f in fails)]
    lines += ["", "## Latency targets (eager, round_to=8)", "",
              "| model | target | dense ms | target ms | achieved ms | error |", "|---|---|---|---|---|---|"]  # fmt: skip
    for m in results:
        for t in m.get("latency_targets", []):
            lines.append(f"| {m['model']} | {t['target']} | {t['dense_ms']:.2f} | {t['target_ms']:.2f} "
                         f"| {t['achieved_ms']:.2f} | {t['error']:+.1%} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def _f(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"


def plot(state: dict[str, Any], path: Path) -> None:
    """Speed-up vs MACs ratio, one marker per variant and runtime."""
    from prunekit._plot import new_figure, save_figure

    fig = new_figure(12, 4)
    axes = fig.subplots(1, 3, sharey=True)
    for ax, rt in zip(axes, ("eager", "ort", "ort_int8")):
        for v, mk in zip(VARIANTS, "os^"):
            pts = [(r["macs_ratio"], r[f"speedup_{rt}"]) for m in state["results"]
                   for r in m.get("rows", []) if r["variant"] == v and f"speedup_{rt}" in r]  # fmt: skip
            if pts:
                ax.scatter(*zip(*pts), marker=mk, label=v, alpha=0.7)
        top = max([3.0] + [r["macs_ratio"] for m in state["results"] for r in m.get("rows", [])])
        ax.plot([1, top], [1, top], color="grey", lw=0.8, ls="--")
        ax.axhline(1, color="grey", lw=0.5)
        ax.set_title(rt)
        ax.set_xlabel("MACs ratio (dense / pruned)")
    axes[0].set_ylabel("measured speed-up")
    axes[0].legend(fontsize="small")
    save_figure(fig, path)


# --------------------------------------------------------------------------- driver


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=lambda s: s.split(","), default=None)
    p.add_argument(
        "--ratios", type=lambda s: [float(v) for v in s.split(",")], default=list(RATIOS)
    )
    p.add_argument("--variants", type=lambda s: s.split(","), default=list(VARIANTS))
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--input-size", type=int, default=None)
    p.add_argument("--no-targets", dest="targets", action="store_false")
    p.add_argument("--quick", action="store_true", help="resnet18 + zoo:vgg11, small, to /tmp")
    p.add_argument("--redo", action="store_true")
    p.add_argument("--out-dir", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--json-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.models = args.models or ["resnet18", "zoo:vgg11"]
        args.ratios, args.repeats, args.input_size = [0.5], 8, args.input_size or 64
        args.out_dir = Path(tempfile.gettempdir()) / "pk-speed"
    args.models = args.models or TV + ZOO
    return args


def _worker_cmd(name: str, args: argparse.Namespace, out: Path) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--json-out", str(out),
           "--batch", str(args.batch), "--threads", str(args.threads), "--repeats", str(args.repeats),
           "--ratios", ",".join(map(str, args.ratios)), "--variants", ",".join(args.variants)]  # fmt: skip
    if args.input_size:
        cmd += ["--input-size", str(args.input_size)]
    if not args.targets:
        cmd.append("--no-targets")
    return cmd


def _worker_failure(proc: subprocess.CompletedProcess[str]) -> str:
    """Why a worker wrote no result: its last stderr lines, or how it was killed."""
    tail = proc.stderr.strip()[-500:]
    if proc.returncode == -9:  # SIGKILL without a word is the kernel's out-of-memory killer
        return f"worker killed (SIGKILL, most likely out of memory) {tail}".strip()
    return tail or f"worker exited with status {proc.returncode} and no result"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        atomic_write_json(args.json_out, run_model(args.worker, args))
        return 0
    jpath, mpath = args.out_dir / "speed.json", args.out_dir / "speed.md"
    state = read_json(jpath) or {"results": []}
    old = state.get("meta", {})
    history = [c for c in old.get("commands", [old.get("command")]) if isinstance(c, str)]
    state["meta"] = {**env_meta(("torch", "torchvision", "torch-pruning", "onnxruntime")),
                     "bench_threads": args.threads, "batch": args.batch, "ratios": args.ratios}  # fmt: skip
    state["meta"]["commands"] = [*history, state["meta"]["command"]]  # a resumed run keeps all
    done = {r["model"] for r in state["results"]}
    for name in args.models:
        if name in done and not args.redo:
            continue
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "r.json"
            try:
                proc = subprocess.run(_worker_cmd(name, args, out), env=child_env(args.threads),
                                      capture_output=True, text=True, timeout=args.timeout)  # fmt: skip
                res = read_json(out) or {"model": name, "error": _worker_failure(proc)}
            except subprocess.TimeoutExpired:
                res = {"model": name, "error": f"timeout after {args.timeout:.0f} s"}
        res["seconds"] = round(time.perf_counter() - t0, 1)
        state["results"] = [r for r in state["results"] if r["model"] != name] + [res]
        atomic_write_json(jpath, state)
        atomic_write_text(mpath, render_md(state))
        print(f"{name}: {res.get('error') or 'ok'} ({res['seconds']} s)", flush=True)
    state["summary"] = summarize(state["results"])
    atomic_write_json(jpath, state)
    atomic_write_text(mpath, render_md(state))
    plot(state, args.out_dir / "speed.png")
    print(render_md(state).split("## Per model")[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
