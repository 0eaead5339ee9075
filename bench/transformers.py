"""Transformer benchmark: params cut at ratio 0.5 on ViT-B/16, Swin-T, ConvNeXt-T (torchvision)
and poolformer_s12 (timm), prunekit beside Torch-Pruning in the same run.

The setting is the coverage benchmark's (``bench/coverage.py``): ``weights=None`` /
``pretrained=False``, batch 1 at 224×224, constant near-zero parameters redrawn for both tools
(so the equivalence check can fail), 50% of every group ranked locally by the L2 norm, the final
classifier kept. prunekit's row is ok when the pruned model runs, keeps its output shape and
computes what its soft mask computes (``max_rel_diff <= 1e-4``); Torch-Pruning's when its model
runs and keeps its output shape (it has no soft-mask reference). Each (tool, model) pair runs in
its own subprocess.

Usage (the numbers in ``bench/results/transformers.{json,md}``):
    flock /work/.bench.lock nice -n 5 python bench/transformers.py
    python bench/transformers.py --render --note "..."   # add a note, re-render the table
    python bench/transformers.py --models vit_b_16 --tools prunekit --out /tmp/t
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import copy
import importlib.util
import json
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from _common import REPO, atomic_write_json, atomic_write_text, child_env, env_meta, read_json


def _coverage_bench() -> Any:
    """``bench/coverage.py``, loaded by path: ``coverage`` may also be the coverage.py package."""
    spec = importlib.util.spec_from_file_location(
        "bench_coverage", Path(__file__).with_name("coverage.py")
    )
    assert spec is not None and spec.loader is not None
    module = sys.modules.get("bench_coverage") or importlib.util.module_from_spec(spec)
    if "bench_coverage" not in sys.modules:
        sys.modules["bench_coverage"] = module
        spec.loader.exec_module(module)
    return module


cov = _coverage_bench()
MAX_DIFF, RATIO, ROW_FIELDS, TOOLS = cov.MAX_DIFF, cov.RATIO, cov.ROW_FIELDS, cov.TOOLS
param_cut = cov.param_cut

#: model -> library it comes from
MODELS = {
    "vit_b_16": "torchvision",
    "swin_t": "torchvision",
    "convnext_tiny": "torchvision",
    "poolformer_s12": "timm",
}
DEFAULT_OUT = REPO / "bench" / "results"


def build(name: str) -> Any:
    """A fresh, randomly initialised model in eval mode (nothing is downloaded)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if MODELS[name] == "timm":
            import timm

            return timm.create_model(name, pretrained=False).eval()
        import torchvision

        return torchvision.models.get_model(name, weights=None).eval()


def run_worker(tool: str, name: str) -> dict[str, Any]:
    """Prune one model with one tool and measure it; every exception becomes ``error``."""
    import torch

    from prunekit.report import count_macs, count_params
    from prunekit.verify import max_rel_diff, soft_copy

    torch.manual_seed(0)
    row: dict[str, Any] = dict.fromkeys(ROW_FIELDS)
    row.update(tool=tool, model=name, ok=False, forward_ok=False, out_shape_ok=False)
    x = torch.randn(1, 3, 224, 224)
    model = cov._stage(row, "build", lambda: build(name))
    if model is None:
        return row
    row["zero_params_filled"] = cov.fill_zero_params(model)
    with torch.no_grad():
        ref = cov._stage(row, "dense forward", lambda: cov._shapes(model(x)))
    row["params_before"] = count_params(model)
    row["macs_before"] = cov._stage(row, "macs", lambda: count_macs(model, x))
    dense = copy.deepcopy(model) if tool == "prunekit" else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prune = (lambda: cov._prune_prunekit(model, x)) if tool == "prunekit" else None
        done = cov._stage(row, "prune", prune or (lambda: cov._prune_tp(model, x, name)))
    if done is None:
        return row
    plan, row["seconds"], row["cpu_seconds"] = done
    cov._check_pruned(row, model, x, ref)
    row["params_after"] = count_params(model)
    if dense is not None and row["forward_ok"]:
        row["max_rel_diff"] = cov._stage(
            row, "equivalence", lambda: max_rel_diff(soft_copy(dense, plan), model, x)
        )
    if row["forward_ok"]:
        row["macs_after"] = cov._stage(row, "macs after", lambda: count_macs(model, x))
    diff = row.get("max_rel_diff")
    exact = tool != "prunekit" or (diff is not None and diff <= MAX_DIFF)
    row["ok"] = row["error"] is None and bool(row["out_shape_ok"]) and exact
    return row


def spawn(tool: str, name: str, timeout: float) -> dict[str, Any]:
    """:func:`run_worker` in a fresh subprocess; a crash or timeout becomes a failed row."""
    with tempfile.TemporaryDirectory(prefix="pk-tf-") as tmp:
        out = Path(tmp) / "row.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", tool, name, str(out)]
        try:
            proc = subprocess.run(cmd, env=child_env(), capture_output=True, text=True,
                                  timeout=timeout, cwd=REPO)  # fmt: skip
        except subprocess.TimeoutExpired:
            return cov._failed_row(tool, name, f"timeout after {timeout:.0f} s")
        row = read_json(out)
        if row is None:
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] or [""]
            return cov._failed_row(tool, name, cov._crash_message(proc.returncode, tail[0]))
        return row


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, check=True)  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=REPO,
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    return out.stdout.strip() + (" (src modified)" if dirty else "")


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.1%}"


def _secs(row: dict[str, Any]) -> str:
    return "–" if row.get("seconds") is None else f"{row['seconds']:.2f}"


def _macs_cut(row: dict[str, Any]) -> float | None:
    b, a = row.get("macs_before"), row.get("macs_after")
    return 1.0 - a / b if b and a is not None else None


def render_md(state: dict[str, Any]) -> str:
    """The Markdown table: per model, both tools' params/MACs cut, prunekit's exactness."""
    meta, by = state["meta"], {(r["tool"], r["model"]): r for r in state["rows"]}
    lines = [
        "# Transformers at ratio 0.5: prunekit vs Torch-Pruning",
        "",
        f"Run: {meta.get('date')} on {meta.get('hardware')} ({meta.get('cpu')}), torch "
        f"{meta.get('torch')}, torchvision {meta.get('torchvision')}, timm {meta.get('timm')}, "
        f"torch-pruning {meta.get('torch_pruning')}, prunekit commit {meta.get('commit')}. "
        f"Command: `{meta.get('command')}`.",
        "",
        "Setting of `bench/coverage.py`: random weights with constant near-zero parameters "
        "redrawn, 224×224, 50% of every group by L2 norm, local ranking, classifier kept; "
        "Torch-Pruning's `MetaPruner` with its defaults (no head options). prunekit is ok when "
        f"its pruned model equals its soft mask (max rel diff ≤ {MAX_DIFF:g}) and runs.",
        "",
        "| model | prunekit | params cut | MACs cut | max rel diff | s | torch-pruning "
        "| params cut | MACs cut | s | ≥ TP | error |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes = meta.get("notes") or []
    for name in MODELS:
        pk, tp = by.get(("prunekit", name), {}), by.get(("torch-pruning", name), {})
        if not pk and not tp:
            continue
        pc, tc = param_cut(pk), param_cut(tp)
        geq = "–" if pc is None or tc is None else ("yes" if pc >= tc - 1e-9 else "**no**")
        diff = pk.get("max_rel_diff")
        errs = " / ".join(str(r.get("error")) for r in (pk, tp) if r.get("error"))
        lines.append(
            f"| {name} | {'ok' if pk.get('ok') else '**fail**'} | {_pct(pc)} "
            f"| {_pct(_macs_cut(pk))} | {'–' if diff is None else f'{diff:.1e}'} "
            f"| {_secs(pk)} | {'ok' if tp.get('ok') else '**fail**'} "
            f"| {_pct(tc)} | {_pct(_macs_cut(tp))} | {_secs(tp)} | {geq} "
            f"| {errs.replace('|', '/')[:160]} |"
        )
    lines += ["", *(f"Note: {n}" for n in notes)] if notes else []
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or one worker) and write ``transformers.{json,md}``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--tools", default=",".join(TOOLS))
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--worker", nargs=3, metavar=("TOOL", "MODEL", "JSON_OUT"))
    p.add_argument("--note", action="append", default=[], help="add a note to the results")
    p.add_argument("--render", action="store_true", help="only re-render the Markdown")
    args = p.parse_args(argv)
    if args.render:
        state = read_json(args.out / "transformers.json")
        state["meta"]["notes"] = [*state["meta"].get("notes", []), *args.note]
        atomic_write_json(args.out / "transformers.json", state)
        atomic_write_text(args.out / "transformers.md", render_md(state))
        return 0
    if args.worker:
        tool, name, out = args.worker
        atomic_write_json(out, run_worker(tool, name))
        return 0
    meta = env_meta(("torch", "torchvision", "timm", "torch-pruning"))
    meta["commit"], meta["ratio"], meta["notes"] = _git_commit(), RATIO, args.note
    state: dict[str, Any] = {"meta": meta, "rows": []}
    for name in args.models.split(","):
        for tool in args.tools.split(","):
            row = spawn(tool, name, args.timeout)
            state["rows"].append(row)
            print(f"{name:<16} {tool:<13} ok={row['ok']} cut={_pct(param_cut(row))} "
                  f"diff={row.get('max_rel_diff')} {row.get('error') or ''}", flush=True)  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "transformers.json", state)
    atomic_write_text(args.out / "transformers.md", render_md(state))
    print(json.dumps({"written": str(args.out / "transformers.md")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
