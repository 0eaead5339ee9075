"""Smoke test of bench/mnist.py's building blocks on a small real-MNIST subset."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image

from prunekit.data import ImageTensors

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_mnist", REPO / "bench" / "mnist.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_mnist"] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _tiny_mnist(archive: Path, per_class: dict[str, int]) -> dict[str, ImageTensors]:
    """First ``per_class[split]`` PNGs per digit of each split, read straight from the archive.

    Decoding all 70,000 images (what prunekit.data does, then caches) takes about a minute on
    2 busy cores; a smoke test needs a few hundred.
    """
    want = {"training": "train", "testing": "test"}
    found: dict[str, dict[int, list[np.ndarray]]] = {s: {} for s in want.values()}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) < 3 or parts[-3] not in want:
                continue
            split, label = want[parts[-3]], int(parts[-2])
            bucket = found[split].setdefault(label, [])
            if len(bucket) < per_class[split]:
                fh = tar.extractfile(member)
                assert fh is not None
                bucket.append(np.array(Image.open(io.BytesIO(fh.read())).convert("L")))
            if all(len(found[s].get(d, [])) >= per_class[s] for s in found for d in range(10)):
                break  # stop reading the archive as soon as every bucket is full
    out = {}
    for split, by_label in found.items():
        labels = [lb for lb in sorted(by_label) for _ in by_label[lb]]
        images = np.stack([im for lb in sorted(by_label) for im in by_label[lb]])[:, None]
        out[split] = ImageTensors(
            torch.from_numpy(images),
            torch.tensor(labels),
            [str(i) for i in range(10)],
            (0.1307,),
            (0.3081,),
            f"mnist-tiny:{split}",
        )
    return out


@pytest.fixture(scope="module")
def mnist(shared_data: Path) -> tuple[ImageTensors, ImageTensors]:
    tiny = _tiny_mnist(shared_data / "mnist-png.tar.gz", {"train": 50, "test": 20})
    assert len(tiny["train"]) == 500 and len(tiny["test"]) == 200
    return tiny["train"], tiny["test"]


@pytest.mark.data
@pytest.mark.slow
def test_bench_functions_on_subset(bench: ModuleType, mnist: tuple, tmp_path: Path) -> None:
    torch.set_num_threads(2)
    hp = bench.Hyper(batch_size=50)
    setup = bench.SETUPS["lenet300"]
    dense = bench.build(setup.zoo_name)
    acc = bench.train(dense, mnist, hp, epochs=2, lr=0.05, seed=0)
    assert acc > 0.5  # 500 images, 2 epochs: far above 10% chance
    s = bench.calibrate_std_s(dense, bench.layer_levels(dense, setup.sparsity))
    assert set(s) == {"fc1.weight", "fc2.weight", "fc3.weight"}
    rows = bench.run_std_threshold(dense, "lenet300", setup, mnist, hp, 0, 1)
    rows.append(bench.run_agp(dense, "lenet300", setup, mnist, hp, 0, 1))
    for row in rows:
        # calibrated std thresholds and AGP both land on the per-layer targets (Han-like 13.4x)
        targets = {"fc1.weight": 92.5, "fc2.weight": 91.0, "fc3.weight": 74.0}
        assert row.layers == pytest.approx(targets, abs=0.02)
        assert row.params_total == 266_610
        # std thresholds are float products, so allow a few ties either side of the exact count
        assert abs(row.params_nonzero - (17_640 + 2_700 + 260 + 410)) <= 3
        assert row.compression == pytest.approx(12.69, abs=0.01)
        assert 0.0 <= row.acc <= 1.0
    assert rows[2].settings["end_step"] <= rows[2].settings["total_steps"]
    assert sum(p.count_nonzero() for p in dense.parameters()) == 266_610  # dense left untouched

    meta = {"cpu": "x", "threads": 2, "torch": torch.__version__, "seeds": [0]}
    meta |= {"total_seconds": 1.0, "total_cpu_seconds": 1.0, "load_average_at_start": [0, 0, 0]}
    meta["hyper"] = bench.asdict(hp)
    md = bench.to_markdown(rows, meta)
    assert "| lenet300 | std_threshold + retrain | 0 | 1 |" in md
    assert "12.69x" in md


@pytest.mark.data
@pytest.mark.slow
def test_bench_main_quick_writes_results(
    bench: ModuleType, shared_data: Path, tmp_path: Path
) -> None:
    out_json, out_md = tmp_path / "r.json", tmp_path / "r.md"
    argv = ["--quick", "--models", "lenet300"]
    assert bench.main([*argv, "--out-json", str(out_json), "--out-md", str(out_md)]) == 0
    data = json.loads(out_json.read_text())
    methods = [r["method"] for r in data["rows"]]
    assert methods[:4] == [
        "dense",
        "std_threshold one-shot",
        "std_threshold + retrain",
        "AGP magnitude",
    ]
    assert {
        "model",
        "method",
        "acc",
        "params_nonzero",
        "params_total",
        "compression",
        "seconds",
    } <= set(data["rows"][0])
    iterative = data["rows"][4]
    assert iterative["method"] == "iterative magnitude (3 cycles)"
    assert iterative["epochs"] == 3 * 2 + 3  # cycles x epochs per cycle + final fine-tuning
    assert iterative["compression"] == pytest.approx(12.69, abs=0.01)
    assert data["meta"]["threads"] == 2 and data["meta"]["quick"] is True
    assert len(data["meta"]["load_average_at_end"]) == 3
    assert out_md.read_text().startswith("# MNIST unstructured pruning benchmark")
