"""Versatile Filters (Wang et al., NeurIPS 2018) measured: speed, MNIST and CIFAR-10 accuracy.

Three parts (``--part``), each merged into ``bench/results/versatile.json`` (and ``.md``):

* ``speed`` — forward+backward time of one :class:`~prunekit.versatile.VersatileConv2d` (one
  convolution with the unfolded weight) against the paper's formulation as ``s·n`` separate
  convolutions (:func:`~prunekit.versatile.naive_versatile_conv2d`), for every CIFAR VGG-16
  layer size at batch 64, spatial and spatial+channel; the two are timed interleaved in one run
  and the VGG-16 total is the sum over its 13 layers.
* ``mnist`` — LeNet-5-style CNN (Caffe's LeNet-5 with conv widths 24/48, so that ``s = 3`` and
  ``s·n = 6`` divide them) on the full 60k/10k MNIST PNG pack: dense vs spatial vs
  spatial+channel (δ = g = 4), the same recipe for every row.
* ``cifar`` — CIFAR VGG-16 (BN) on the CIFAR-10 JPEG pack: dense vs spatial, the same short CPU
  schedule for both (``--width`` scales every conv width, ``--epochs`` sets the schedule).

Training is :func:`prunekit.methods.train_stage` (prunekit's Trainer) on a
:class:`prunekit.methods.Workbench`; the versatile rows set ``WorkbenchConfig.versatile``, so
the saved stage folders reload with :func:`prunekit.load`. Stage folders live in ``--work``
(git-ignored); a finished stage is reused when the same command is run again.

Run on the shared CPU under the bench lock::

    flock /work/.bench.lock nice -n 5 python bench/versatile.py --part speed
    flock /work/.bench.lock nice -n 5 python bench/versatile.py --part mnist --epochs 6
    flock /work/.bench.lock nice -n 5 python bench/versatile.py --part cifar --epochs 8 --width 0.25
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see bench/mnist.py

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    REPO,
    atomic_write_json,
    atomic_write_text,
    ensure_src_on_path,
    env_meta,
    read_json,
)

ensure_src_on_path()

from prunekit.data import load_dataset  # noqa: E402
from prunekit.methods import TrainSpec, Workbench, WorkbenchConfig, train_stage  # noqa: E402
from prunekit.train import TrainConfig  # noqa: E402
from prunekit.versatile import (  # noqa: E402
    VersatileConfig,
    VersatileConv2d,
    naive_versatile_conv2d,
    versatile_costs,
)
from prunekit.zoo.vgg import VGG_CFGS  # noqa: E402

RESULTS = REPO / "bench" / "results"
DATA = REPO.parent / "shared" / "data"
# (in, out, H=W, how many such layers) of CIFAR VGG-16 at 32×32 input
VGG16_LAYERS = [(3, 64, 32, 1), (64, 64, 32, 1), (64, 128, 16, 1), (128, 128, 16, 1),
                (128, 256, 8, 1), (256, 256, 8, 2), (256, 512, 4, 1), (512, 512, 4, 2),
                (512, 512, 2, 3)]  # fmt: skip


# ------------------------------------------------------------------------------------ speed
def _step(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> float:
    t0 = time.perf_counter()
    fn(x).sum().backward()
    return time.perf_counter() - t0


def _layer_speed(cin: int, cout: int, hw: int, channel: bool, repeats: int) -> dict[str, Any]:
    """Median fwd+bwd seconds of the one-conv layer and the s·n-conv formulation, interleaved."""
    # spatial+channel: g = in/8, δ = 3g, so n = 4 channel positions and s·n = 8 divides out
    delta, g = (3 * cin // 8, cin // 8) if channel and cin >= 8 else (0, 1)
    conv = VersatileConv2d(cin, cout, 3, padding=1, delta=delta, g=g)
    x = torch.randn(64, cin, hw, hw, requires_grad=True)

    def naive(t: torch.Tensor) -> torch.Tensor:
        return naive_versatile_conv2d(t, conv.weight, conv.bias, conv.stride, conv.padding,
                                      conv.dilation, conv.spatial, conv.delta, conv.g)  # fmt: skip

    one_t, naive_t = [], []
    for i in range(repeats + 1):
        a, b = _step(conv, x), _step(naive, x)
        if i:  # the first round warms up both
            one_t.append(a)
            naive_t.append(b)
    one, slow = statistics.median(one_t), statistics.median(naive_t)
    return {"in": cin, "out": cout, "hw": hw, "delta": delta, "g": g, "s": conv.s, "n": conv.n,
            "one_conv_ms": one * 1e3, "naive_ms": slow * 1e3, "ratio": slow / one}  # fmt: skip


def run_speed(args: argparse.Namespace) -> dict[str, Any]:
    """Per-layer and VGG-16-total speed table (batch 64, forward + backward)."""
    torch.manual_seed(0)
    out: dict[str, Any] = {"batch": 64, "repeats": args.repeats, "variants": {}}
    for variant in ("spatial", "spatial+channel"):
        rows = [
            {**_layer_speed(cin, cout, hw, variant != "spatial", args.repeats), "count": k}
            for cin, cout, hw, k in VGG16_LAYERS
        ]
        one = sum(r["one_conv_ms"] * r["count"] for r in rows)
        naive = sum(r["naive_ms"] * r["count"] for r in rows)
        out["variants"][variant] = {"layers": rows, "one_conv_ms": one, "naive_ms": naive,
                                    "ratio": naive / one}  # fmt: skip
        print(f"speed {variant}: VGG-16 one-conv {one:.0f} ms, naive {naive:.0f} ms, "
              f"ratio {naive / one:.2f}x", flush=True)  # fmt: skip
    return out


# ------------------------------------------------------------------------------ accuracy runs
def _row(bench: Workbench, name: str, work: Path, train: TrainConfig, fp: dict[str, Any]) -> Any:
    stage = train_stage(bench, name, work / name, None, TrainSpec(train), fingerprint=fp)
    model = stage.model.cpu().eval()
    costs = versatile_costs(model, bench.example_input())
    s = stage.summary
    return {
        "row": name,
        "acc": s["acc"],
        "params": costs.params,
        "conv_params": costs.conv_params,
        "dense_conv_params": costs.dense_conv_params,
        "conv_fraction": costs.conv_fraction,
        "memory_mb": costs.memory_mb,
        "macs_executed": costs.macs_executed,
        "macs_paper": costs.macs_paper,
        "train_img_per_s": s["train_img_per_s"],
        "wall_s": s["seconds"],
        "epochs": s["epochs"],
    }


def _study(
    args: argparse.Namespace,
    part: str,
    model: dict[str, Any],
    rows: dict[str, VersatileConfig | None],
    train: TrainConfig,
    data: tuple[Any, Any],
) -> dict[str, Any]:
    work = Path(args.work) / part
    out = []
    for name, versatile in rows.items():
        config = WorkbenchConfig(**model, batch_size=args.batch_size, versatile=versatile)
        bench = Workbench(config, train, train_data=data[0], test_data=data[1])
        fp = {"part": part, "model": model, "train": train.to_dict(), "versatile": name}
        out.append(_row(bench, name, work, train, fp))
        print(f"{part} {name}: acc {out[-1]['acc']:.4f}, conv params {out[-1]['conv_params']:,} "
              f"({out[-1]['conv_fraction']:.1%})", flush=True)  # fmt: skip
    return {"model": model, "train": train.to_dict(), "batch_size": args.batch_size,
            "train_images": len(data[0]), "test_images": len(data[1]), "rows": out}  # fmt: skip


def run_mnist(args: argparse.Namespace) -> dict[str, Any]:
    data = tuple(load_dataset(f"mnist:{args.mnist}", split) for split in ("train", "test"))
    model = {"model": "zoo:lenet5", "model_kwargs": {"cfg": [24, 48, 500]}, "augment": "none"}
    # Caffe's LeNet-5 has one ReLU only: without warm-up, lr 0.05 diverges at batch 64
    train = TrainConfig(epochs=args.epochs, lr=0.02, nesterov=True, weight_decay=5e-4,
                        schedule="cosine", warmup=0.3, seed=args.seed, device="cpu",
                        channels_last=True, progress=False)  # fmt: skip
    rows = {
        "dense": None,
        "spatial": VersatileConfig(mode="spatial"),
        "spatial+channel": VersatileConfig(mode="spatial+channel", delta=4, g=4),
    }
    return _study(args, "mnist", model, rows, train, data)


def run_cifar(args: argparse.Namespace) -> dict[str, Any]:
    data = tuple(load_dataset(f"cifar10:{args.cifar}", split) for split in ("train", "test"))
    cfg = [v if v == "M" else int(int(v) * args.width) for v in VGG_CFGS[16]]
    model = {"model": "zoo:vgg16", "model_kwargs": {"cfg": cfg}, "augment": "cifar"}
    train = TrainConfig(epochs=args.epochs, lr=0.1, weight_decay=5e-4, schedule="onecycle",
                        seed=args.seed, device="cpu", progress=False)  # fmt: skip
    rows = {"dense": None, "spatial": VersatileConfig(mode="spatial")}
    out = _study(args, "cifar", model, rows, train, data)
    out["width"] = args.width
    return out


# ------------------------------------------------------------------------------------ output
def _commit() -> str | None:
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None


def _md_speed(sp: dict[str, Any]) -> list[str]:
    lines = ["## Speed: one convolution vs s·n convolutions (forward + backward, batch 64)", "",
             "| variant | layer (in→out @ H×W) | s·n | one-conv ms | naive ms | naive / one |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for variant, v in sp["variants"].items():
        for r in v["layers"]:
            lines.append(f"| {variant} | {r['in']}→{r['out']} @ {r['hw']}² ×{r['count']} | "
                         f"{r['s']}·{r['n']} | {r['one_conv_ms']:.1f} | {r['naive_ms']:.1f} | "
                         f"{r['ratio']:.2f}× |")  # fmt: skip
        lines.append(f"| **{variant}** | **VGG-16 total (13 layers)** | | **{v['one_conv_ms']:.0f}**"
                     f" | **{v['naive_ms']:.0f}** | **{v['ratio']:.2f}×** |")  # fmt: skip
    note = ("The one convolution executes the dense layer's MACs (the zeros around each crop "
            "and outside each channel window included); the s·n convolutions execute only the "
            "paper-counted MACs (10/18 of them for 3×3 spatial filters), so the one convolution "
            "wins where the s·n calls' overhead dominates (s·n = 8, large maps) and loses on "
            "the small late layers.")  # fmt: skip
    return [*lines, "", note, ""]


def _md_study(title: str, st: dict[str, Any]) -> list[str]:
    t = st["train"]
    lines = [f"## {title}", "",
             f"{st['train_images']:,} train / {st['test_images']:,} test images; {t['epochs']} epochs, "
             f"SGD{' (Nesterov)' if t['nesterov'] else ''} lr {t['lr']} ({t['schedule']}, warm-up "
             f"{t['warmup']} epochs), wd {t['weight_decay']}, batch {st['batch_size']}, "
             f"seed {t['seed']}; model {st['model']['model']} {st['model']['model_kwargs']}.", "",
             "| row | accuracy | stored params | conv params (of dense) | memory MB | MACs executed "
             "| MACs paper | train img/s | wall s |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in st["rows"]:
        lines.append(f"| {r['row']} | {r['acc']:.2%} | {r['params']:,} | {r['conv_params']:,} "
                     f"({r['conv_fraction']:.1%}) | {r['memory_mb']:.3f} | {r['macs_executed']:,} "
                     f"| {r['macs_paper']:,} | {r['train_img_per_s']:.0f} | {r['wall_s']:.0f} |")  # fmt: skip
    return [*lines, ""]


def write(results: dict[str, Any], path: Path) -> None:
    atomic_write_json(path.with_suffix(".json"), results)
    lines = ["# Versatile Filters (Wang et al., NeurIPS 2018) on this CPU", "",
             "Written by `bench/versatile.py`; each part records its own run below.", ""]  # fmt: skip
    if "speed" in results:
        lines += _md_speed(results["speed"])
    if "mnist" in results:
        lines += _md_study("MNIST, LeNet-5-style (full 60k/10k)", results["mnist"])
    if "cifar" in results:
        w = results["cifar"]["width"]
        lines += _md_study(f"CIFAR-10, CIFAR VGG-16 at width ×{w}", results["cifar"])
    lines += ["## Runs", "",
              "Train img/s and wall time depend on what else ran on this shared 2-core machine "
              "(load average below); accuracies and counts do not.", ""]  # fmt: skip
    for part in ("speed", "mnist", "cifar"):
        if part in results:
            m = results[part]["meta"]
            lines.append(f"- {part}: {m['date']}, commit {m.get('commit')}, {m['hardware']} "
                         f"({m['cpu']}, {m['threads']} threads, load {m['loadavg']}), torch "
                         f"{m['torch']}, `{m['command']}`")  # fmt: skip
    atomic_write_text(path.with_suffix(".md"), "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["speed", "mnist", "cifar"], required=True)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--width", type=float, default=0.25, help="cifar: conv width multiplier")
    p.add_argument("--batch-size", type=int, default=None, help="default: mnist 128, cifar 64")
    p.add_argument("--repeats", type=int, default=5, help="speed: timed rounds per layer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mnist", default=str(DATA / "mnist-png.tar.gz"))
    p.add_argument("--cifar", default=str(DATA / "cifar10-jpeg.tar.gz"))
    p.add_argument("--work", default=str(REPO / "runs" / "bench-versatile"))
    p.add_argument("--out", default=str(RESULTS / "versatile.json"))
    args = p.parse_args(argv)
    run = {"speed": run_speed, "mnist": run_mnist, "cifar": run_cifar}[args.part]
    if args.batch_size is None:
        args.batch_size = 128 if args.part == "mnist" else 64
    result = run(args)
    result["meta"] = {**env_meta(), "commit": _commit(), "seed": args.seed}
    out = Path(args.out)
    results = read_json(out) or {}
    results[args.part] = result
    write(results, out)
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
