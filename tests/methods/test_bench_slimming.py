"""bench/slimming.py: Torch-Pruning → prunekit plan mapping, result merging, and a real run on a
tiny CIFAR-10 subset (resumable, budgeted)."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch
from slimutil import TINY_VGG

import prunekit
from prunekit.methods.bn_threshold import bn_modules
from prunekit.models import build_model
from prunekit.verify import max_rel_diff, soft_copy

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_slimming", REPO / "bench" / "slimming.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_slimming"] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _random_gamma(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in bn_modules(model).values():
            m.weight.copy_(torch.rand(m.weight.numel(), generator=g) ** 2)
            m.bias.copy_(torch.randn(m.weight.numel(), generator=g) * 0.1)
    return model.eval()


@pytest.mark.parametrize(
    ("spec", "kwargs", "shape"),
    [
        ("zoo:vgg", TINY_VGG, (3, 8, 8)),
        ("zoo:preresnet", {"depth": 11}, (3, 32, 32)),
        ("zoo:densenet", {"depth": 7}, (3, 32, 32)),
    ],
)
def test_torch_pruning_choice_maps_onto_an_exact_prunekit_plan(
    bench: ModuleType, spec: str, kwargs: dict, shape: tuple
) -> None:
    pytest.importorskip("torch_pruning")
    model = _random_gamma(build_model(spec, **kwargs), seed=7)
    x = torch.zeros(1, *shape)
    graph = prunekit.trace(model, x)
    record: dict = {}
    planner = bench.torch_pruning_planner(x, record)
    plan, report = planner(model, graph, 0.5)
    pruned = prunekit.apply_plan(copy.deepcopy(model), plan)
    # Torch-Pruning's own pruned model and prunekit's surgery of the same choice agree...
    assert record["tp_max_rel_diff"] <= 1e-4
    assert record["tp_params"] == sum(p.numel() for p in pruned.parameters())
    # ...and the plan is exact against its soft mask like any prunekit plan.
    xs = torch.randn(4, *shape)
    assert max_rel_diff(soft_copy(model, plan), pruned, xs) <= 1e-4
    assert report.method == "torch-pruning" and report.removed == plan.removed_units() > 0


def test_rows_merge_by_key_and_render(bench: ModuleType) -> None:
    results: dict = {"rows": []}
    row = {
        "arch": "densenet40",
        "dataset": "cifar10",
        "percent": 0.4,
        "tool": "prunekit",
        "epochs": 1,
        "train_images": 20,
        "acc_finetuned": 0.1,
        "params": 10,
        "macs": 20,
    }
    bench.merge_rows(
        results,
        [row, {**row, "tool": "dense", "percent": 0.0}, {**row, "arch": "vgg19", "percent": 0.7}],
    )
    bench.merge_rows(results, [{**row, "acc_finetuned": 0.5}])
    assert [(r["arch"], r["tool"]) for r in results["rows"]] == [
        ("vgg19", "prunekit"),
        ("densenet40", "dense"),
        ("densenet40", "prunekit"),
    ]
    assert results["rows"][-1]["acc_finetuned"] == 0.5
    md = bench.to_markdown(results)
    assert "| densenet40 | 40% | prunekit | 1 |" in md and "0.5000" in md
    assert [n for n, _, _ in bench.selected(["densenet40:0.6", "vgg19"])] == ["densenet40", "vgg19"]
    assert bench.selected(["densenet40:0.6"])[0][2] == (0.6,)
    with pytest.raises(SystemExit, match="unknown arch"):
        bench.selected(["resnet50"])


@pytest.mark.data
def test_quick_run_on_real_cifar_rows_resume_and_budget(
    bench: ModuleType, tiny_cifar: Callable[[int], Path], tmp_path: Path
) -> None:
    pytest.importorskip("torch_pruning")
    data = tiny_cifar(2)
    out = tmp_path / "r.json"
    args = [
        "--quick",
        "--data",
        str(data),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--work",
        str(tmp_path / "work"),
        "--out-json",
        str(out),
        "--only",
        "densenet40:0.4",
        "--tools",
        "prunekit",
        "torch-pruning",
        "--no-progress",
    ]
    assert bench.main([*args, "--budget-seconds", "0"]) == 0  # budget gone: clean stop
    assert json.loads(out.read_text())["rows"] == []
    assert bench.main(args) == 0
    rows = {r["tool"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"dense", "prunekit", "torch-pruning"}
    dense = rows["dense"]
    assert dense["params"] == 1_059_298 and dense["train_images"] == 20
    for tool in ("prunekit", "torch-pruning"):
        r = rows[tool]
        assert r["params"] < dense["params"] and r["macs"] < dense["macs"]
        assert r["acc_sparse"] is not None and 0.0 <= r["acc_finetuned"] <= 1.0
        assert set(r["seconds"]) == {"dense", "sparse", "prune", "finetune"}
        assert r["img_per_s_bs256"] is None  # no CUDA here
    assert rows["torch-pruning"]["tp_max_rel_diff"] <= 1e-4
    assert "| densenet40 | 40% | torch-pruning |" in out.with_suffix(".md").read_text()
    stamp = (tmp_path / "work" / "densenet40-e1" / "sparse" / "model.safetensors").stat()
    assert bench.main(args) == 0  # everything done: nothing is retrained
    after = (tmp_path / "work" / "densenet40-e1" / "sparse" / "model.safetensors").stat()
    assert after.st_mtime_ns == stamp.st_mtime_ns
    assert len(json.loads(out.read_text())["rows"]) == 3


@pytest.mark.gpu
def test_inference_throughput_on_gpu(bench: ModuleType) -> None:
    model = build_model("zoo:vgg11")
    rate = bench.inference_img_per_s(model, (3, 32, 32), 256)
    assert rate is not None and rate > 1000


def test_training_throughput_runs_on_cpu(bench: ModuleType) -> None:
    from prunekit.data import ImageTensors

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=g)
    ds = ImageTensors(
        images,
        torch.arange(16) % 10,
        [str(i) for i in range(10)],
        (0.5, 0.5, 0.5),
        (0.25, 0.25, 0.25),
        "synthetic",
    )
    rec = bench.train_img_per_s(ds, "none", batch=8, epochs=2)
    assert rec["images_per_epoch"] == 16 and rec["img_per_s"] > 0
    assert len(rec["img_per_s_epochs"]) == 1  # the warm-up epoch is excluded
