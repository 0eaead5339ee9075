"""The executor on real data (scikit-learn's 8×8 digits; MNIST subset when available)."""

from __future__ import annotations

import copy
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from recipe_test_models import TinyCNN
from torch import nn

from prunekit.recipes import Executor, Recipe, RunResult
from prunekit.train import Trainer, evaluate


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy on one batch, computed by the library's evaluator."""
    return evaluate(model, [(x, y)], device="cpu")["acc"]


Batches = list[tuple[torch.Tensor, torch.Tensor]]


def _batches(x: torch.Tensor, y: torch.Tensor, size: int, seed: int = 0) -> Batches:
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    return [(x[order[i : i + size]], y[order[i : i + size]]) for i in range(0, len(y), size)]


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """sklearn digits as (N,1,8,8) floats in [0,1], split 1400 train / 397 test."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return x[:1400], y[:1400], x[1400:], y[1400:]


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def _run(recipe: dict, model: nn.Module, digits: tuple, **kw: object) -> RunResult:
    xtr, ytr, xte, yte = digits
    return Executor(
        Recipe.model_validate(recipe),
        model=model,
        train_data=_batches(xtr, ytr, 64),
        eval_data=_batches(xte, yte, 256),
        device="cpu",
        progress=False,
        **kw,
    ).run()


def test_magnitude_agp_reaches_exact_sparsity_and_keeps_accuracy(digits: tuple) -> None:
    recipe = {
        "training": {"epochs": 8, "lr": 0.1, "schedule": "cosine", "weight_decay": 0.0},
        "pruners": {
            "agp": {
                "method": "magnitude",
                "schedule": "agp",
                "initial_sparsity": 0.3,
                "final_sparsity": 0.8,
            }
        },
        "policies": [{"pruner": "agp", "starting_epoch": 1, "ending_epoch": 6, "frequency": 2}],
    }
    result = _run(recipe, _mlp(), digits)
    model = result.model
    _, _, xte, yte = digits
    for name in ("1.weight", "3.weight"):
        w = dict(model.named_parameters())[name]
        assert int((w == 0).sum()) == round(0.8 * w.numel())  # exact per-tensor sparsity
        assert torch.equal(w == 0, ~result.masks[name])  # masked entries are exactly 0
    hist = result.history
    assert [h["epoch"] for h in hist] == list(range(8))
    assert [h["lr"] for h in hist] == pytest.approx([e.lr for e in result.resolved.epochs])
    assert hist[0]["sparsity"] == 0.0 and hist[1]["sparsity"] == pytest.approx(0.3, abs=1e-3)
    assert hist[-1]["sparsity"] == pytest.approx(0.8, abs=1e-3)
    acc = accuracy(model, xte, yte)
    assert acc == pytest.approx(hist[-1]["accuracy"])
    assert acc >= 0.9, acc


def test_std_threshold_and_l1_regularizer(digits: tuple) -> None:
    recipe = {
        "training": {"epochs": 5, "lr": 0.1, "weight_decay": 0.0, "schedule": "constant"},
        "pruners": {
            "std": {"method": "std_threshold", "schedule": "iterative", "sensitivity": 0.5}
        },
        "regularizers": {"l1": {"kind": "l1", "strength": 1e-4, "params": ["1.weight"]}},
        "policies": [
            {"pruner": "std", "epochs": [2, 3]},
            {"regularizer": "l1", "ending_epoch": 5},
        ],
    }
    base = {**recipe, "regularizers": {}, "policies": recipe["policies"][:1]}
    with_l1 = _run(recipe, _mlp(), digits)
    without = _run(base, _mlp(), digits)
    w_l1 = with_l1.model[1].weight.detach()
    w_plain = without.model[1].weight.detach()
    assert w_l1.abs().sum() < w_plain.abs().sum()  # the penalty shrinks the weights
    mask = with_l1.masks["1.weight"]
    assert 0.2 < float((~mask).float().mean()) < 0.7  # |w| < 0.5·std prunes ~38% (Gaussian)
    assert torch.all(w_l1[~mask] == 0)
    assert with_l1.history[-1]["accuracy"] >= 0.85


def test_slimming_zeroes_bn_channels(digits: tuple) -> None:
    torch.manual_seed(0)
    model = TinyCNN()
    recipe = {
        "training": {"epochs": 6, "lr": 0.05, "schedule": "constant"},
        "pruners": {"slim": {"method": "slim", "percent": 0.5, "surgery": False}},
        "regularizers": {"bn": {"kind": "bn_l1", "strength": 1e-4}},
        "policies": [{"regularizer": "bn", "ending_epoch": 3}, {"pruner": "slim", "epochs": [3]}],
    }
    result = _run(recipe, model, digits)
    m = result.model
    pruned = int((m.bn1.weight == 0).sum()) + int((m.bn2.weight == 0).sum())
    # One global threshold prunes 50% of the 24 channels; the floor (1) may give back at most
    # one channel per layer whose channels all fell under it.
    assert 10 <= pruned <= 12
    assert int((m.bn1.weight != 0).sum()) >= 1 and int((m.bn2.weight != 0).sum()) >= 1
    assert torch.equal(m.bn1.weight == 0, m.bn1.bias == 0)  # β masked with γ
    assert torch.equal(m.bn2.weight == 0, ~result.masks["bn2.weight"])
    sparsity = [h["sparsity"] for h in result.history]
    assert sparsity[:3] == [0.0, 0.0, 0.0] and len(set(sparsity[3:])) == 1 and sparsity[3] > 0.4
    assert result.history[-1]["accuracy"] >= 0.85


def test_distillation_from_dense_teacher(digits: tuple) -> None:
    model = _mlp()
    dense = copy.deepcopy(model)
    recipe = {
        "training": {"epochs": 4, "lr": 0.1, "schedule": "constant"},
        "pruners": {"m": {"method": "magnitude", "final_sparsity": 0.5}},
        "distillation": {"temperature": 2.0, "alpha": 0.5},
        "policies": [{"pruner": "m", "epochs": [0]}],
    }
    result = _run(recipe, model, digits)
    assert result.history[-1]["accuracy"] >= 0.85
    # The teacher is a frozen copy made before pruning: the dense weights were never pruned.
    assert int((dense[1].weight == 0).sum()) == 0
    assert result.history[0]["sparsity"] == pytest.approx(0.5, abs=1e-3)


def test_structured_agp_with_surgery(digits: tuple) -> None:
    torch.manual_seed(0)
    recipe = {
        "model": {"spec": "torchvision:unused", "input_shape": [1, 1, 8, 8]},
        "training": {"epochs": 3, "lr": 0.05, "schedule": "constant"},
        "pruners": {
            "f": {
                "method": "structured",
                "modules": ["conv1"],
                "schedule": "agp",
                "initial_sparsity": 0.25,
                "final_sparsity": 0.5,
            }
        },
        "policies": [{"pruner": "f", "starting_epoch": 0, "ending_epoch": 2}],
    }
    result = _run(recipe, TinyCNN(), digits)
    assert [h["sparsity"] > 0 for h in result.history] == [True, True, True]
    m = result.model
    assert (m.conv1.out_channels, m.bn1.num_features, m.conv2.in_channels) == (4, 4, 4)
    assert m.conv2.out_channels == 16  # only the selected layer's group shrank
    # Soft pruning zeroed whole units, so slicing them out changes no prediction.
    _, _, xte, yte = digits
    assert accuracy(m, xte, yte) == pytest.approx(result.history[-1]["accuracy"])
    assert result.history[-1]["accuracy"] >= 0.85


def test_slimming_with_surgery(digits: tuple) -> None:
    torch.manual_seed(0)
    recipe = {
        "model": {"spec": "torchvision:unused", "input_shape": [1, 1, 8, 8]},
        "training": {"epochs": 4, "lr": 0.05, "schedule": "constant"},
        "pruners": {"slim": {"method": "slim", "percent": 0.4}},
        "regularizers": {"bn": {"kind": "bn_l1", "strength": 1e-4}},
        "policies": [{"regularizer": "bn", "ending_epoch": 2}, {"pruner": "slim", "epochs": [2]}],
    }
    result = _run(recipe, TinyCNN(), digits)
    m = result.model
    kept = {n: int(result.masks[f"{n}.weight"].sum()) for n in ("bn1", "bn2")}
    assert (m.bn1.num_features, m.bn2.num_features) == (kept["bn1"], kept["bn2"])
    assert kept["bn1"] + kept["bn2"] in (15, 16)  # 40% of 24 pruned; the floor may add one
    assert m.conv2.in_channels == kept["bn1"] and m.fc.in_features == 16 * kept["bn2"]
    _, _, xte, yte = digits
    assert accuracy(m, xte, yte) == pytest.approx(result.history[-1]["accuracy"])


class _Residual(nn.Module):
    """stem conv-bn → residual block whose output BN is tied to the stem's by the sum."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0, self.bn0 = nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.conv1, self.bn1 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn0(self.conv0(x)))
        x = torch.relu(self.bn1(self.conv1(x)) + x)
        return self.fc(torch.flatten(nn.functional.avg_pool2d(x, 2), 1))


def test_slimming_surgery_keeps_the_union_of_coupled_channels(digits: tuple) -> None:
    torch.manual_seed(0)
    recipe = {
        "model": {"spec": "torchvision:unused", "input_shape": [1, 1, 8, 8]},
        "training": {"epochs": 3, "lr": 0.05, "schedule": "constant"},
        "pruners": {"slim": {"method": "slim", "percent": 0.5}},
        "policies": [{"pruner": "slim", "epochs": [1]}],
    }
    result = _run(recipe, _Residual(), digits)
    alive0, alive1 = (result.masks[f"bn{i}.weight"] for i in (0, 1))
    union = int((alive0 | alive1).sum())
    assert union < 8  # something was removed …
    assert result.model.bn0.num_features == result.model.bn1.num_features == union  # … jointly
    _, _, xte, yte = digits
    assert accuracy(result.model, xte, yte) == pytest.approx(result.history[-1]["accuracy"])


@pytest.mark.gpu
def test_executor_on_gpu_with_bf16(digits: tuple) -> None:
    recipe = {
        "training": {"epochs": 3, "lr": 0.1, "bf16": True},
        "pruners": {"m": {"method": "magnitude", "final_sparsity": 0.5}},
        "policies": [{"pruner": "m", "epochs": [1]}],
    }
    xtr, ytr, xte, yte = digits
    result = Executor(
        Recipe.model_validate(recipe),
        model=_mlp(),
        train_data=_batches(xtr, ytr, 64),
        eval_data=_batches(xte, yte, 256),
        device="cuda",
        progress=False,
    ).run()
    assert next(result.model.parameters()).is_cuda
    assert result.history[-1]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert result.history[-1]["accuracy"] >= 0.85


# ---------------------------------------------------------------------------------------------
# real MNIST (a class-balanced subset read straight from the archive)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mnist_subset(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """600 train / 200 test PNGs per digit, decoded once per session and cached in a tmp dir."""
    from PIL import Image

    cache = tmp_path_factory.mktemp("mnist") / "subset.pt"
    per_split = {"training": 600, "testing": 200}
    found: dict[str, dict[int, list[np.ndarray]]] = {
        s: {d: [] for d in range(10)} for s in per_split
    }
    with tarfile.open(shared_data / "mnist-png.tar.gz", "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) < 3 or parts[-3] not in per_split:
                continue
            split, digit = parts[-3], int(parts[-2])
            if len(found[split][digit]) < per_split[split]:
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                found[split][digit].append(np.array(Image.open(io.BytesIO(data))))
            if all(len(v) >= per_split[s] for s in per_split for v in found[s].values()):
                break
    out = []
    for split in per_split:
        xs = [img for d in range(10) for img in found[split][d]]
        ys = [d for d in range(10) for _ in found[split][d]]
        out += [
            torch.tensor(np.stack(xs), dtype=torch.float32).unsqueeze(1) / 255.0,
            torch.tensor(ys),
        ]
    torch.save(out, cache)
    return tuple(torch.load(cache, weights_only=True))


@pytest.mark.data
def test_lenet300_agp_on_mnist(mnist_subset: tuple) -> None:
    """LeNet-300-100, global AGP to 90% sparsity: accuracy stays ≥ 93% on held-out digits."""
    xtr, ytr, xte, yte = mnist_subset
    torch.manual_seed(0)
    lenet = nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 300),
        nn.ReLU(),
        nn.Linear(300, 100),
        nn.ReLU(),
        nn.Linear(100, 10),
    )
    recipe = {
        "training": {"epochs": 6, "lr": 0.1, "schedule": "cosine", "weight_decay": 5e-4},
        "pruners": {
            "agp": {
                "method": "magnitude",
                "schedule": "agp",
                "initial_sparsity": 0.5,
                "final_sparsity": 0.9,
                "global_ranking": True,
            }
        },
        "policies": [{"pruner": "agp", "starting_epoch": 1, "ending_epoch": 5, "frequency": 1}],
    }
    result = Executor(
        Recipe.model_validate(recipe),
        model=lenet,
        train_data=_batches(xtr, ytr, 64),
        eval_data=_batches(xte, yte, 500),
        device="cpu",
        progress=False,
    ).run()
    weights = [p for n, p in result.model.named_parameters() if n.endswith("weight")]
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros == pytest.approx(0.9 * sum(w.numel() for w in weights), abs=2)
    first, last = (float((w == 0).float().mean()) for w in (weights[0], weights[-1]))
    assert first > last  # global ranking prunes the big first layer harder
    assert result.history[-1]["accuracy"] >= 0.93, result.history[-1]


_RESUMABLE = {
    "model": {"spec": "zoo:digits_cnn", "input_shape": [1, 1, 8, 8]},
    "training": {"epochs": 5, "lr": 0.05, "schedule": "step", "step_size": 2, "gamma": 0.5},
    "pruners": {
        "f": {
            "method": "structured",
            "modules": ["branch_a.0"],
            "schedule": "agp",
            "initial_sparsity": 0.25,
            "final_sparsity": 0.5,
            "surgery": True,
        },
        "m": {
            "method": "magnitude",
            "schedule": "agp",
            "final_sparsity": 0.6,
            "params": ["fc1.weight"],
        },
    },
    "regularizers": {"l1": {"kind": "l1", "strength": 1e-5, "params": ["fc2.weight"]}},
    "distillation": {"teacher": "dense", "temperature": 2.0, "alpha": 0.5},
    "policies": [
        {"pruner": "f", "starting_epoch": 0, "ending_epoch": 3},
        {"pruner": "m", "starting_epoch": 1, "ending_epoch": 4},
        {"regularizer": "l1", "ending_epoch": 5},
    ],
}


def _executor(digits: tuple, out: Path, recipe: dict | None = None) -> Executor:
    xtr, ytr, xte, yte = digits
    return Executor(
        Recipe.model_validate(recipe or _RESUMABLE),
        train_data=_batches(xtr[:512], ytr[:512], 64),
        eval_data=_batches(xte, yte, 256),
        out_dir=out,
        device="cpu",
        progress=False,
    )


def test_resume_after_a_kill_equals_an_uninterrupted_run(
    digits: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pruning events, masks, LR steps, optimizer momentum and the teacher all survive a kill."""
    whole = _executor(digits, tmp_path / "whole").run()

    calls = {"n": 0}
    real_epoch = Trainer._run_epoch

    def dies_in_epoch_3(self: Trainer, *args: object) -> dict:
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # killed mid-run, after 3 completed epochs
        return real_epoch(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Trainer, "_run_epoch", dies_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        _executor(digits, tmp_path / "killed").run()
    monkeypatch.setattr(Trainer, "_run_epoch", real_epoch)
    assert (tmp_path / "killed" / "checkpoint" / "epoch-0003").is_dir()

    resumed = _executor(digits, tmp_path / "killed").run(resume=True)
    assert resumed.history == whole.history  # bit-identical losses, LRs, accuracies
    assert len(resumed.history) == 5
    # surgery ran on the restored masks: 50% of branch_a.0's 32 filters are gone
    assert resumed.model.branch_a[0].out_channels == whole.model.branch_a[0].out_channels == 16
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_another_recipes_checkpoint(digits: tuple, tmp_path: Path) -> None:
    from prunekit.errors import CheckpointError, ConfigError

    short = {**_RESUMABLE, "training": {**_RESUMABLE["training"], "epochs": 2}}
    _executor(digits, tmp_path / "run", short).run()
    with pytest.raises(CheckpointError, match="different recipe"):
        _executor(digits, tmp_path / "run").run(resume=True)
    with pytest.raises(ConfigError, match="--out"):
        Executor(Recipe.model_validate(_RESUMABLE)).run(resume=True)


def test_every_pruner_kind_has_a_mask_rule() -> None:
    """The executor dispatches pruner kinds through one table, not an isinstance chain: every
    kind a recipe can name has its rule."""
    import typing

    from prunekit.recipes import executor, native

    union = typing.get_args(native.PrunerConfig)[0]
    kinds = typing.get_args(union)
    assert len(kinds) >= 7
    for kind in kinds:
        assert any(c in executor._MASK_RULES for c in kind.__mro__), kind.__name__
