"""Network Slimming on CIFAR-10 (Liu et al., ICCV 2017): prunekit vs the reference threshold vs
Torch-Pruning, on the same sparse checkpoint with the same fine-tuning, measured on a GPU.

Rows (``--only`` selects some): VGG-19 at 70%, PreResNet-164 at 40% and 60%, DenseNet-40 at 40%
and 60%. Per architecture: a dense baseline (no penalty), one sparse-trained model (BN-L1 with
s = 1e-4 for VGG, 1e-5 otherwise), then for each percent and each tool — ``prunekit`` (global
|γ| ranking with a per-layer floor), ``reference`` (the paper code's global threshold, no floor;
collapses reported), ``torch-pruning`` (``tp.pruner.BNScalePruner(global_pruning=True)``, its
default ``BNScaleImportance``) — prune, then fine-tune for the same number of epochs. Every row
records accuracy (dense, sparse, pruned, fine-tuned), params, MACs, bf16 inference throughput at
batch 256 and 4096 (CUDA graphs), training throughput and the wall time of each stage. Torch-
Pruning's channel choice is applied by prunekit's surgery after checking that both pruned models
compute the same function (``tp_max_rel_diff``), so every row is saved and reloaded the same way.

Resumable: each call does what fits in ``--budget-seconds`` and exits cleanly (training stops at
an epoch boundary; its checkpoint is in ``--work``); re-running the same command continues.
Finished rows merge into ``--out-json`` (and ``.md``) one by one, so a study can span several
sessions: rows already there are skipped.

On the GPU machine (torch 2.11 preinstalled, no internet; carry the data as
``.carry/cifar10-jpeg.tar.gz``: ``mkdir -p .carry && cp ../shared/data/cifar10-jpeg.tar.gz .carry/``
here, then ``carry: [".carry"]``)::

    # training throughput claim (VGG-19, bf16, batch 512, eager vs CUDA graphs), ~1-2 min
    PYTHONPATH=src python bench/slimming.py --throughput-only \\
        --data .carry/cifar10-jpeg.tar.gz --also-write $OUT

    # the study; repeat the same command in each 10-minute call until it prints "all rows done"
    PYTHONPATH=src python bench/slimming.py --data .carry/cifar10-jpeg.tar.gz --epochs 40 \\
        --budget-seconds 540 --also-write $OUT [--only vgg19:0.7]

Copy ``slimming.json``/``slimming.md`` from the returned files into ``bench/results/`` (they hold
the merged rows). ``--work`` (default ``runs/bench-slimming``, git-ignored) keeps stage folders
and checkpoints; it survives between calls only while the device stays warm, so a fresh lease
redoes unfinished stages (finished rows are never redone). The paper trains 160 + 160 epochs;
``--epochs`` sets every stage (dense, sparse, fine-tune) so rows stay comparable.

CPU smoke test (tiny CIFAR subset, 1 epoch, results under /tmp)::

    PYTHONPATH=src python bench/slimming.py --quick
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see bench/mnist.py

import argparse
import copy
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import atomic_write_json, atomic_write_text, ensure_src_on_path, env_meta, read_json

ensure_src_on_path()

from prunekit.data import ImageTensors, TensorLoader, load_dataset, stratified_subset  # noqa: E402
from prunekit.graph import DependencyGraph  # noqa: E402
from prunekit.methods import (  # noqa: E402
    NetworkSlimming,
    SlimmingConfig,
    SlimReport,
    StageInterrupted,
    describe_plan,
)
from prunekit.models import build_model  # noqa: E402
from prunekit.plan import PruningPlan, plan_from_keep  # noqa: E402
from prunekit.surgery import apply_plan  # noqa: E402
from prunekit.train import LRSchedule, TrainConfig, Trainer, bn_scales  # noqa: E402
from prunekit.verify import max_rel_diff  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
DEFAULT_JSON = REPO / "bench" / "results" / "slimming.json"
QUICK_DIR = Path(tempfile.gettempdir()) / "prunekit-bench-slimming-quick"
TOOLS = ("prunekit", "reference", "torch-pruning")
SEED = 0
LOG = logging.getLogger("bench.slimming")
# The paper's sparse-training schedule (CIFAR, batch 64), against which ``s`` can be matched.
PAPER_EPOCHS, PAPER_STEPS, PAPER_LR = 160, 782, 0.1


@dataclass(frozen=True)
class Arch:
    """One architecture of the study: zoo spec, BN-L1 strength (the paper's) and percents."""

    model: str
    sparsity: float
    percents: tuple[float, ...]


ARCHS = {
    "vgg19": Arch("zoo:vgg19", 1e-4, (0.7,)),
    "preresnet164": Arch("zoo:preresnet164", 1e-5, (0.4, 0.6)),
    "densenet40": Arch("zoo:densenet40", 1e-5, (0.4, 0.6)),
}
# The paper's numbers (CIFAR-10, original lossless images, 160 + 160 epochs), for the report.
PAPER = {
    ("vgg19", 0.7): "93.77 → 93.78, 20.04M → 2.25M params",
    ("preresnet164", 0.4): "94.75 → 95.05, 1.71M → 1.45M",
    ("preresnet164", 0.6): "94.75 → 93.81",
    ("densenet40", 0.4): "94.11 → 94.32, 1.07M → 0.69M",
    ("densenet40", 0.6): "94.11 → 94.22",
}


def matched_sparsity(
    paper_s: float, epochs: int, steps_per_epoch: int, lr: float, kind: str
) -> float:
    """``s`` giving a run the paper's total BN-L1 shrinkage ``Σ_t s·lr_t`` (2 significant digits).

    BN-L1 moves each |γ| by ``s·lr_t`` per step (Liu et al. 2017, eq. 1, as a subgradient), so a
    run with fewer steps (a bigger batch, fewer epochs) or another LR schedule needs a larger
    ``s`` to polarise γ as much as the paper's 160 epochs at batch 64 (782 steps) with lr 0.1,
    ×0.1 at 50% and 75%.

    Example:
        >>> matched_sparsity(1e-4, 160, 782, 0.1, "step")
        0.0001
    """
    paper = LRSchedule("step", PAPER_LR, PAPER_EPOCHS, PAPER_STEPS)
    ours = LRSchedule(kind, lr, epochs, steps_per_epoch)
    total = sum(paper.lr(i) for i in range(paper.total_steps))
    short = sum(ours.lr(i) for i in range(ours.total_steps))
    return float(f"{paper_s * total / short:.2g}")


# ---------------------------------------------------------------------------------------- data
def load_data(args: argparse.Namespace) -> tuple[ImageTensors, ImageTensors]:
    """CIFAR-10 train/test (stratified subsets with ``--train-per-class``/``--test-per-class``)."""
    spec = f"cifar10:{args.data}"
    cache = args.cache_dir
    train = load_dataset(spec, "train", cache_dir=cache)
    test = load_dataset(spec, "test", cache_dir=cache)
    if args.train_per_class:
        train = stratified_subset(train, args.train_per_class, seed=SEED)
    if args.test_per_class:
        test = stratified_subset(test, args.test_per_class, seed=SEED)
    return train, test


# ---------------------------------------------------------------------------------- throughput
@torch.no_grad()
def inference_img_per_s(model: nn.Module, shape: Sequence[int], batch: int) -> float | None:
    """bf16 inference images/s of ``model`` at ``batch``, replaying one CUDA graph per batch.

    Returns ``None`` without CUDA (or when the batch does not fit in memory).
    """
    if not torch.cuda.is_available():
        return None
    m = (
        copy.deepcopy(model)
        .cuda()
        .eval()
        .to(dtype=torch.bfloat16, memory_format=torch.channels_last)
    )
    x = torch.randn(batch, *shape, device="cuda", dtype=torch.bfloat16)
    x = x.contiguous(memory_format=torch.channels_last)
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside the graph (cuDNN picks algorithms)
            for _ in range(3):
                m(x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            m(x)
        return batch * _replays_per_s(graph)
    except torch.cuda.OutOfMemoryError:
        return None
    finally:
        del m, x
        torch.cuda.empty_cache()


def _replays_per_s(graph: Any) -> float:
    """Graph replays per second over ~1 s (median of 3 timed runs)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        graph.replay()
    end.record()
    end.synchronize()
    per = max(start.elapsed_time(end) / 5 / 1000, 1e-6)
    iters = max(10, int(0.33 / per))
    rates = []
    for _ in range(3):
        start.record()
        for _ in range(iters):
            graph.replay()
        end.record()
        end.synchronize()
        rates.append(iters / (start.elapsed_time(end) / 1000))
    return statistics.median(rates)


def train_img_per_s(train: ImageTensors, mode: str, *, batch: int, epochs: int) -> dict[str, Any]:
    """Training images/s of VGG-19 (bf16 autocast, SGD, crop+flip) with one compile mode.

    The first epoch (warm-up, graph capture) is excluded; the best later epoch is reported.
    """
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    model = build_model("zoo:vgg19", num_classes=train.num_classes)
    loader = TensorLoader(
        train, batch, shuffle=True, drop_last=True, device=device, augment="cifar", seed=SEED
    )
    cfg = TrainConfig(
        epochs=epochs, lr=0.05, compile=mode, bf16=cuda, device=device, progress=False, seed=SEED
    )
    with tempfile.TemporaryDirectory() as tmp:
        hist = Trainer(model, loader, None, cfg).fit(tmp).history
    rates = [r["img_per_s"] for r in hist[1:]] or [hist[-1]["img_per_s"]]
    return {
        "model": "vgg19",
        "mode": mode,
        "batch": batch,
        "dtype": "bf16" if cuda else "fp32",
        "img_per_s": max(rates),
        "img_per_s_epochs": rates,
        "images_per_epoch": len(loader) * batch,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
    }


# ------------------------------------------------------------------------------ torch-pruning
def _last_linear(model: nn.Module) -> nn.Module:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def torch_pruning_planner(example: torch.Tensor, record: dict[str, Any]) -> Callable[..., Any]:
    """A prunekit planner running Torch-Pruning's ``BNScalePruner`` (global) on a copy.

    Torch-Pruning prunes the copy itself; its pruning history (layer, output channels removed)
    is mapped onto prunekit's groups, and ``record["tp_max_rel_diff"]`` is the output difference
    between Torch-Pruning's model and the same plan applied by prunekit (≈ 0 when they agree).
    """

    def torch_pruning(
        model: nn.Module, graph: DependencyGraph, percent: float
    ) -> tuple[PruningPlan, SlimReport]:
        import torch_pruning as tp

        ref = copy.deepcopy(model).cpu().float().eval()
        ref = ref.to(memory_format=torch.contiguous_format)
        x = example.cpu()
        pruner = tp.pruner.BNScalePruner(
            ref,
            x,
            importance=tp.importance.BNScaleImportance(),
            global_pruning=True,
            pruning_ratio=percent,
            ignored_layers=[_last_linear(ref)],
        )
        pruner.step()
        plan = plan_from_tp_history(graph, pruner.pruning_history())
        ours = apply_plan(copy.deepcopy(model).cpu().float().eval(), plan)
        record["tp_max_rel_diff"] = max_rel_diff(ref, ours, torch.randn(8, *x.shape[1:]))
        record["tp_params"] = sum(p.numel() for p in ref.parameters())
        return plan, describe_plan(model, graph, plan, method="torch-pruning", percent=percent)

    return torch_pruning


def plan_from_tp_history(graph: DependencyGraph, history: Sequence[Sequence[Any]]) -> PruningPlan:
    """prunekit plan removing what Torch-Pruning's history removed (root layer, out/in, idxs).

    One-shot pruning prunes each root layer once, so the indices refer to its original channels.
    """
    where = {(s.tensor, s.dim): (g, s) for g in graph.groups for s in g.slots}
    removed: dict[str, set[int]] = {}
    for name, is_out, idxs in history:
        key = (f"{name}.weight", 0 if is_out else 1)
        if key not in where:
            raise RuntimeError(f"Torch-Pruning pruned {key}, which no prunekit group holds")
        g, s = where[key]
        unit_of = dict(zip(s.positions.tolist(), s.units.tolist()))
        removed.setdefault(g.id, set()).update(unit_of[int(i)] for i in idxs)
    keep = {
        gid: [u for u in range(graph.group(gid).size) if u not in gone]
        for gid, gone in removed.items()
    }
    return plan_from_keep(graph, keep, {"method": "slim", "threshold_rule": "torch-pruning"})


# ------------------------------------------------------------------------------------ the study
class Study:
    """Stages and rows of one invocation; every stage folder lives under ``args.work``."""

    def __init__(self, args: argparse.Namespace, train: ImageTensors, test: ImageTensors) -> None:
        self.args, self.train, self.test = args, train, test
        budget = args.budget_seconds
        self.deadline = None if budget is None else time.monotonic() + budget
        self.gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        self._slims: dict[str, NetworkSlimming] = {}

    def slim(self, arch: Arch) -> NetworkSlimming:
        """The pipeline of ``arch`` (one per arch, so its data loaders are built once)."""
        if arch.model not in self._slims:
            self._slims[arch.model] = self._new_slim(arch)
        return self._slims[arch.model]

    def sparsity(self, arch: Arch) -> float:
        """The paper's ``s``, or (``--match-sparsity``) its total shrinkage for this schedule."""
        a = self.args
        if not a.match_sparsity:
            return arch.sparsity
        steps = -(-len(self.train) // a.batch_size)
        return matched_sparsity(arch.sparsity, a.epochs, steps, a.lr, a.schedule)

    def _new_slim(self, arch: Arch) -> NetworkSlimming:
        a = self.args
        cfg = SlimmingConfig(
            model=arch.model,
            sparsity=self.sparsity(arch),
            percent=arch.percents[0],
            dense_epochs=0 if a.skip_dense else a.epochs,
            epochs=a.epochs,
            finetune_epochs=a.epochs,
            lr=a.lr,
            batch_size=a.batch_size,
            schedule=a.schedule,
            seed=SEED,
            device=a.device,
            compile=a.compile,
            progress=not a.no_progress,
        )
        return NetworkSlimming(cfg, train_data=self.train, test_data=self.test)

    def work(self, name: str) -> Path:
        return Path(self.args.work) / f"{name}-e{self.args.epochs}"

    def check_time(self, what: str) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise StageInterrupted(f"budget used up before {what}")

    def throughput(self, model: nn.Module) -> dict[str, float | None]:
        shape = self.train.image_shape
        return {f"img_per_s_bs{b}": inference_img_per_s(model, shape, b) for b in (256, 4096)}

    def base_row(self, name: str, percent: float, tool: str) -> dict[str, Any]:
        return {
            "arch": name,
            "dataset": "cifar10",
            "percent": percent,
            "tool": tool,
            "epochs": self.args.epochs,
            "train_images": len(self.train),
            "test_images": len(self.test),
            "gpu": self.gpu,
            "torch": torch.__version__,
            "sparsity": self.sparsity(ARCHS[name]),
            "batch_size": self.args.batch_size,
            "lr": self.args.lr,
            "schedule": self.args.schedule,
            "compile": self.args.compile,
        }

    def dense_and_sparse(self, name: str, arch: Arch) -> tuple[Any, Any]:
        """The dense baseline (or ``None`` with ``--skip-dense``) and the sparse stage."""
        slim, work = self.slim(arch), self.work(name)
        self.check_time(f"{name} dense/sparse training")
        dense = (
            None
            if self.args.skip_dense
            else slim.train_dense(work / "dense", deadline=self.deadline)
        )
        before = bn_scales(dense.model) if dense is not None else None
        sparse = slim.train_sparse(work / "sparse", deadline=self.deadline, before=before)
        return dense, sparse

    def dense_row(self, name: str, dense: Any) -> dict[str, Any]:
        s = dense.summary
        row = self.base_row(name, 0.0, "dense")
        row.update(
            acc_dense=s["acc"],
            acc_sparse=None,
            acc_pruned=None,
            acc_finetuned=s["acc"],
            params=s["params"],
            macs=s["macs"],
            train_img_per_s=s["train_img_per_s"],
            seconds={"dense": s["seconds"]},
            **self.throughput(dense.model),
        )
        return row

    def tool_row(
        self, name: str, arch: Arch, percent: float, tool: str, dense: Any, sparse: Any
    ) -> dict[str, Any]:
        """Prune the sparse model with ``tool`` at ``percent``, fine-tune, measure: one row."""
        slim = self.slim(arch)
        base = self.work(name) / f"p{round(percent * 100)}" / tool
        self.check_time(f"{name} {percent:.0%} {tool}")
        record: dict[str, Any] = read_json(base / "tool.json") or {}
        method: Any = tool
        if tool == "torch-pruning":
            method = torch_pruning_planner(slim.example_input(), record)
        pruned = slim.prune_stage(sparse.copy(), base / "pruned", percent=percent, method=method)
        if record:
            atomic_write_json(base / "tool.json", record)
        ft = slim.finetune(
            pruned.copy(),
            base / "finetuned",
            deadline=self.deadline,
            tag={"tool": tool, "percent": percent},
        )
        return self._row(name, percent, tool, dense, sparse, pruned, ft, record)

    def _row(
        self,
        name: str,
        percent: float,
        tool: str,
        dense: Any,
        sparse: Any,
        pruned: Any,
        ft: Any,
        record: dict[str, Any],
    ) -> dict[str, Any]:
        rep = pruned.summary["report"]
        row = self.base_row(name, percent, tool)
        row.update(
            acc_dense=None if dense is None else dense.summary["acc"],
            acc_sparse=sparse.summary["acc"],
            acc_pruned=pruned.summary["acc"],
            acc_finetuned=ft.summary["acc"],
            params=ft.summary["params"],
            macs=ft.summary["macs"],
            params_dense=sparse.summary["params"],
            macs_dense=sparse.summary["macs"],
            params_ratio=ft.summary["params"] / sparse.summary["params"],
            macs_ratio=ft.summary["macs"] / sparse.summary["macs"],
            channels=[{"bn": b["bn"], "size": b["size"], "kept": b["kept"]} for b in rep["bns"]],
            train_img_per_s=ft.summary["train_img_per_s"],
            train_img_per_s_dense=sparse.summary["train_img_per_s"],
            channels_removed=rep["removed"],
            threshold=rep["threshold"],
            collapsed=rep["collapsed"],
            collapsed_layers=rep["collapsed_layers"],
            seconds={
                "dense": None if dense is None else dense.summary["seconds"],
                "sparse": sparse.summary["seconds"],
                "prune": pruned.summary["seconds"],
                "finetune": ft.summary["seconds"],
            },
            paper=PAPER.get((name, percent)),
            **record,
            **self.throughput(ft.model),
        )
        return row


def row_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """Rows with the same key replace each other when results are merged."""
    return (
        row["arch"],
        row["dataset"],
        row["percent"],
        row["tool"],
        row["epochs"],
        row.get("train_images"),
    )


def selected(only: Sequence[str] | None) -> list[tuple[str, Arch, tuple[float, ...]]]:
    """``[(name, arch, percents)]`` for ``--only name[:percent]`` (default: every row)."""
    if not only:
        return [(n, a, a.percents) for n, a in ARCHS.items()]
    out: dict[str, list[float]] = {}
    for item in only:
        name, _, pct = item.partition(":")
        if name not in ARCHS:
            raise SystemExit(f"--only: unknown arch {name!r}; choose from {sorted(ARCHS)}")
        out.setdefault(name, []).extend([float(pct)] if pct else ARCHS[name].percents)
    return [(n, ARCHS[n], tuple(p)) for n, p in out.items()]


def run_study(study: Study, results: dict[str, Any], save: Callable[[], None]) -> None:
    """Every selected row not in ``results`` yet; ``save()`` after each finished row."""
    done = {row_key(r) for r in results["rows"]}
    for name, arch, percents in selected(study.args.only):
        todo = [
            (p, t)
            for p in percents
            for t in study.args.tools
            if row_key(study.base_row(name, p, t)) not in done
        ]
        dense_key = row_key(study.base_row(name, 0.0, "dense"))
        if not todo and (study.args.skip_dense or dense_key in done):
            continue
        dense, sparse = study.dense_and_sparse(name, arch)
        if dense is not None and dense_key not in done:
            merge_rows(results, [study.dense_row(name, dense)])
            save()
        for percent, tool in todo:
            row = study.tool_row(name, arch, percent, tool, dense, sparse)
            merge_rows(results, [row])
            save()
            LOG.info(
                "row done: %s %.0f%% %s acc %.4f params %s",
                name,
                percent * 100,
                tool,
                row["acc_finetuned"],
                f"{row['params']:,}",
            )


def run_throughput(args: argparse.Namespace, train: ImageTensors, results: dict[str, Any]) -> None:
    """Training img/s of VGG-19, eager vs CUDA graphs, plus its inference img/s."""
    modes = ["none", "cuda-graphs"] if torch.cuda.is_available() else ["none"]
    for mode in modes:
        rec = train_img_per_s(train, mode, batch=args.tp_batch, epochs=args.tp_epochs)
        LOG.info("VGG-19 training, compile=%s: %.0f img/s", mode, rec["img_per_s"])
        rows = [
            r
            for r in results.get("throughput", [])
            if (r["mode"], r["batch"], r.get("gpu")) != (mode, rec["batch"], rec["gpu"])
        ]
        results["throughput"] = [*rows, rec]
    model = build_model("zoo:vgg19", num_classes=train.num_classes)
    inf = {
        f"img_per_s_bs{b}": inference_img_per_s(model, train.image_shape, b) for b in (256, 4096)
    }
    results["inference_vgg19_dense"] = {
        **inf,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    if not torch.cuda.is_available():
        LOG.info("no CUDA: cuda-graphs and bf16 inference throughput skipped")


# -------------------------------------------------------------------------------------- results
def merge_rows(results: dict[str, Any], rows: Sequence[dict[str, Any]]) -> None:
    """Add ``rows``, replacing rows with the same key, keeping a stable order."""
    new = {row_key(r): r for r in rows}
    kept = [r for r in results["rows"] if row_key(r) not in new]
    order = {n: i for i, n in enumerate(ARCHS)}
    tools = {t: i for i, t in enumerate(("dense", *TOOLS))}
    results["rows"] = sorted(
        [*kept, *new.values()],
        key=lambda r: (
            order.get(r["arch"], 99),
            r["epochs"],
            r["percent"],
            tools.get(r["tool"], 9),
        ),
    )


def _fmt(v: Any, spec: str = "") -> str:
    if v is None:
        return "–"
    return format(v, spec)


def to_markdown(results: dict[str, Any]) -> str:
    """The results as a Markdown report (rows table, throughput, run metadata)."""
    lines = [
        "# Network Slimming on CIFAR-10 (prunekit vs reference threshold vs Torch-Pruning)",
        "",
        "Same sparse checkpoint and same fine-tuning for every tool of an architecture. Accuracy "
        "is top-1 on the test split; throughput is bf16 inference with CUDA graphs (images/s).",
        "",
        "| arch | % | tool | epochs | dense | sparse | pruned | fine-tuned | params | MACs "
        "| img/s bs256 | img/s bs4096 | train img/s | collapsed | paper |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        lines.append(
            f"| {r['arch']} | {r['percent']:.0%} | {r['tool']} | {r['epochs']} "
            f"| {_fmt(r.get('acc_dense'), '.4f')} | {_fmt(r.get('acc_sparse'), '.4f')} "
            f"| {_fmt(r.get('acc_pruned'), '.4f')} | {_fmt(r.get('acc_finetuned'), '.4f')} "
            f"| {r['params'] / 1e6:.3f}M | {r['macs'] / 1e6:.1f}M "
            f"| {_fmt(r.get('img_per_s_bs256'), ',.0f')} | {_fmt(r.get('img_per_s_bs4096'), ',.0f')} "
            f"| {_fmt(r.get('train_img_per_s'), ',.0f')} "
            f"| {'yes: ' + str(len(r['collapsed_layers'])) if r.get('collapsed') else ''} "
            f"| {r.get('paper') or ''} |"
        )
    if results.get("throughput"):
        lines += [
            "",
            "## VGG-19 training throughput (bf16, SGD, crop+flip)",
            "",
            "| mode | batch | img/s | gpu |",
            "|---|---|---|---|",
        ]
        for t in results["throughput"]:
            lines.append(f"| {t['mode']} | {t['batch']} | {t['img_per_s']:,.0f} | {t['gpu']} |")
    lines += _sessions_markdown(results.get("sessions", []))
    if results.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in results["plots"]]
    meta = results.get("meta", {})
    lines += ["", "## Run", ""] + [f"- {k}: {v}" for k, v in meta.items()]
    return "\n".join(lines) + "\n"


def _sessions_markdown(sessions: Sequence[dict[str, Any]]) -> list[str]:
    """One line per GPU session (bench/gpu_session.py): smoke verdict, rows added, skips."""
    if not sessions:
        return []
    lines = ["", "## GPU sessions", ""]
    for s in sessions:
        smoke = s.get("smoke", {})
        lines.append(
            f"- {s.get('id')} on {s.get('gpu') or 'CPU'}: smoke {smoke.get('verdict', '–')}; "
            f"rows added {s.get('rows_added', 0)}; "
            + "; ".join(f"{k}: {v}" for k, v in s.get("skipped", {}).items())
        )
    return lines


def write_results(results: dict[str, Any], path: Path, also: Path | None) -> None:
    """Write JSON + Markdown atomically (and copies into ``also``)."""
    for folder in [path.parent, *([also] if also else [])]:
        atomic_write_json(folder / path.name, results)
        atomic_write_text(folder / path.with_suffix(".md").name, to_markdown(results))


def run_meta(args: argparse.Namespace, train: ImageTensors, test: ImageTensors) -> dict[str, Any]:
    meta = env_meta(("torch", "torchvision", "torch-pruning"))
    meta.update(
        gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        seed=SEED,
        data=Path(args.data).name,
        train_images=len(train),
        test_images=len(test),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        schedule=args.schedule,
        compile=args.compile,
        quick=args.quick,
        tp_importance="BNScaleImportance(group_reduction='mean', normalizer='mean')",
    )
    return meta


# ------------------------------------------------------------------------------------ command
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="cifar10-jpeg.tar.gz")
    p.add_argument("--cache-dir", type=Path, default=None, help="decoded-dataset cache")
    p.add_argument("--epochs", type=int, default=None, help="epochs of every stage (160)")
    p.add_argument("--batch-size", type=int, default=64, help="training batch (paper: 64)")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--schedule", default="step", help="step (paper), onecycle, cosine")
    p.add_argument("--compile", default=None, help="none | cuda-graphs (default on CUDA)")
    p.add_argument("--device", default=None)
    p.add_argument(
        "--only",
        nargs="*",
        default=None,
        metavar="ARCH[:PCT]",
        help="rows to run, e.g. vgg19:0.7 densenet40",
    )
    p.add_argument("--tools", nargs="*", default=list(TOOLS), choices=TOOLS)
    p.add_argument("--skip-dense", action="store_true", help="no dense baseline")
    p.add_argument(
        "--match-sparsity",
        action="store_true",
        help="scale s to the paper's total BN-L1 shrinkage for this batch/epochs/schedule",
    )
    p.add_argument(
        "--budget-seconds",
        type=float,
        default=None,
        help="stop cleanly (at an epoch boundary) after about this long",
    )
    p.add_argument("--work", type=Path, default=None, help="stage folders and checkpoints")
    p.add_argument("--out-json", type=Path, default=None, help="merged results file")
    p.add_argument("--also-write", type=Path, default=None, help="copy results here ($OUT)")
    p.add_argument("--train-per-class", type=int, default=None, help="subset of train")
    p.add_argument("--test-per-class", type=int, default=None, help="subset of test")
    p.add_argument("--throughput-only", action="store_true", help="VGG-19 training img/s only")
    p.add_argument("--tp-batch", type=int, default=None, help="throughput batch (512)")
    p.add_argument("--tp-epochs", type=int, default=None, help="throughput epochs (3)")
    p.add_argument("--quick", action="store_true", help="CPU smoke test: tiny subset, 1 epoch")
    p.add_argument("--no-progress", action="store_true")
    return _defaults(p.parse_args(argv))


def _defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the settings that depend on ``--quick`` (quick output never lands in bench/results)."""
    q = args.quick
    args.epochs = args.epochs or (1 if q else 160)
    args.work = args.work or (QUICK_DIR / "work" if q else REPO / "runs" / "bench-slimming")
    args.out_json = args.out_json or (QUICK_DIR / "slimming.json" if q else DEFAULT_JSON)
    if q and args.train_per_class is None:
        args.train_per_class, args.test_per_class = 5, args.test_per_class or 5
    args.tp_batch = args.tp_batch or (32 if q else 512)
    args.tp_epochs = args.tp_epochs or (2 if q else 3)
    if args.compile is None:
        args.compile = (
            "cuda-graphs" if torch.cuda.is_available() and args.device != "cpu" else "none"
        )
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or its ``--throughput-only`` part); 0 also when the budget ran out."""
    args = parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(SEED)
    train, test = load_data(args)
    results = read_json(args.out_json) or {"rows": []}
    results.setdefault("rows", [])
    results["meta"] = run_meta(args, train, test)

    def save() -> None:
        write_results(results, args.out_json, args.also_write)

    try:
        if args.throughput_only:
            run_throughput(args, train, results)
        else:
            run_study(Study(args, train, test), results, save)
        print(f"all rows done; results in {args.out_json}")
    except StageInterrupted as exc:
        print(f"stopped: {exc}; re-run the same command to continue")
    finally:
        save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
