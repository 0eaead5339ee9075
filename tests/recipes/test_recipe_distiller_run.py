"""``prunekit run`` executes Distiller schedules on a torchvision model: fine-grained AGP,
L1-ranked filter AGP with thinning, and network slimming, each end to end on real images
(scikit-learn's digit scans written as an RGB image folder), saved and reloaded.

The schedules are our own files in Distiller's format, shortened to a few epochs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from prunekit.cli import main
from prunekit.io import load

Write = Callable[[str], Path]

AGP_FINE = """
version: 1
pruners:
  conv_fine:
    class: AutomatedGradualPruner
    initial_sparsity: 0.10
    final_sparsity: 0.80
    weights: [module.layer3.0.conv1.weight, module.layer3.0.conv2.weight,
              module.layer4.0.conv1.weight, module.layer4.0.conv2.weight]
lr_schedulers:
  decay:
    class: StepLR
    step_size: 2
    gamma: 0.5
policies:
  - pruner: {instance_name: conv_fine}
    starting_epoch: 0
    ending_epoch: 3
    frequency: 1
  - lr_scheduler: {instance_name: decay}
    starting_epoch: 0
    ending_epoch: 4
    frequency: 1
"""

L1_FILTERS = """
version: 1
pruners:
  block_filters:
    class: L1RankedStructureParameterPruner_AGP
    initial_sparsity: 0.25
    final_sparsity: 0.50
    group_type: Filters
    group_dependency: Leader
    weights: [module.layer1.0.conv1.weight, module.layer2.0.conv1.weight,
              module.layer3.1.conv1.weight]
extensions:
  thinner:
    class: FilterRemover
    thinning_func_str: remove_filters
    arch: resnet18
    dataset: digits
policies:
  - pruner: {instance_name: block_filters}
    starting_epoch: 0
    ending_epoch: 3
    frequency: 1
  - extension: {instance_name: thinner}
    epochs: [3]
"""

SLIMMING = """
version: 1
regularizers:
  bn_sparsity:
    class: L1Regularizer
    reg_regims:
      module.layer1.0.bn1.weight: 0.0001
      module.layer2.0.bn1.weight: 0.0001
      module.layer3.0.bn1.weight: 0.0001
pruners:
  slim:
    class: NetworkSlimmingPruner
    desired_sparsity: 0.4
    weights: [module.layer1.0.bn1.weight, module.layer2.0.bn1.weight,
              module.layer3.0.bn1.weight]
policies:
  - regularizer: {instance_name: bn_sparsity}
    starting_epoch: 0
    ending_epoch: 2
    frequency: 1
  - pruner: {instance_name: slim}
    epochs: [2]
"""


@pytest.fixture(scope="module")
def rgb_digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 of the real 8×8 digit scans (every 6th; few, so ResNet-18 steps stay cheap on a CI
    CPU) as an RGB PNG image folder with train/ and test/."""
    from PIL import Image
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("rgb_digits")
    d = load_digits()
    for i, (img, label) in enumerate(zip(d.images, d.target)):
        if i % 6:
            continue
        split = "test" if i % 30 == 0 else "train"
        folder = root / split / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        gray = (img * (255 / 16)).astype(np.uint8)
        Image.fromarray(np.stack([gray] * 3, -1)).save(folder / f"{i}.png")
    return root


def _run(
    write: Write, text: str, data: Path, out: Path, capsys: pytest.CaptureFixture[str]
) -> dict:
    code = main(
        [
            "run", str(write(text)), "--model", "torchvision:resnet18",
            "--model-kwargs", '{"num_classes": 10}', "--data", str(data),
            "--epochs-override", "4", "--out", str(out), "--no-progress", "--device", "cpu",
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.startswith("done: 4 epochs;")
    return {"history": json.loads((out / "history.json").read_text())}


def _reloaded(out: Path) -> torch.nn.Module:
    """The saved model, rebuilt from its spec + plans (weights checked by prunekit.io.load)."""
    model = load(out / "model")
    with torch.no_grad():
        assert model(torch.rand(2, 3, 8, 8)).shape == (2, 10)
    return model


def test_distiller_agp_fine_grained(
    write: Write, rgb_digits: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _run(write, AGP_FINE, rgb_digits, tmp_path / "agp", capsys)
    model = _reloaded(tmp_path / "agp")
    for name in ("layer3.0.conv1", "layer4.0.conv2"):
        w = model.get_submodule(name).weight
        assert int((w == 0).sum()) == int(0.8 * w.numel())  # Distiller keeps int(s·n) zeros
    assert int((model.layer2[0].conv1.weight == 0).sum()) == 0  # not listed: untouched
    lrs = [h["lr"] for h in run["history"]]
    assert lrs == pytest.approx([0.1, 0.1, 0.05, 0.05])  # StepLR(2, 0.5) stepped per epoch


def test_distiller_l1_filters_with_thinning(
    write: Write, rgb_digits: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _run(write, L1_FILTERS, rgb_digits, tmp_path / "l1", capsys)
    model = _reloaded(tmp_path / "l1")
    # FilterRemover: the pruned filters are physically gone, with their BN and consumers
    assert model.layer1[0].conv1.out_channels == 32 and model.layer1[0].bn1.num_features == 32
    assert model.layer1[0].conv2.in_channels == 32
    assert model.layer2[0].conv1.out_channels == 64 and model.layer3[1].conv1.out_channels == 128
    assert model.layer1[1].conv1.out_channels == 64  # not listed: whole


def test_distiller_network_slimming(
    write: Write, rgb_digits: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _run(write, SLIMMING, rgb_digits, tmp_path / "slim", capsys)
    model = _reloaded(tmp_path / "slim")
    widths = [model.layer1[0].bn1.num_features, model.layer2[0].bn1.num_features,
              model.layer3[0].bn1.num_features]  # fmt: skip
    assert sum(widths) == round(0.6 * (64 + 128 + 256))  # 40% of the channels, one threshold
    assert all(w >= 1 for w in widths)
    assert model.layer1[0].conv2.in_channels == widths[0]
    assert [h["sparsity"] > 0 for h in run["history"]] == [False, False, True, True]
