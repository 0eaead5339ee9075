"""CIFAR-10 from ../shared/data/cifar10-jpeg.tar.gz: counts, statistics, cache, loader."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from prunekit.data import ImageTensors, TensorLoader, load_dataset

pytestmark = pytest.mark.data

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="module")
def cifar(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    # one decode per test session: every real-data test file shares this cache folder
    cache = tmp_path_factory.getbasetemp() / "prunekit-dataset-cache"
    spec = f"cifar10:{shared_data / 'cifar10-jpeg.tar.gz'}"
    start = time.perf_counter()
    train = load_dataset(spec, "train", cache_dir=cache)
    decode_s = time.perf_counter() - start
    start = time.perf_counter()
    test = load_dataset(spec, "test", cache_dir=cache)
    cached_s = time.perf_counter() - start
    print(f"\nCIFAR-10: first load (decode 60k JPEG) {decode_s:.1f} s, cached {cached_s:.3f} s")
    return {"train": train, "test": test, "cached_s": cached_s}


def test_cifar_shapes_counts_and_stats(cifar: dict[str, object]) -> None:
    train, test = cifar["train"], cifar["test"]
    assert isinstance(train, ImageTensors) and isinstance(test, ImageTensors)
    assert train.images.shape == (50000, 3, 32, 32) and test.images.shape == (10000, 3, 32, 32)
    assert train.classes == CLASSES
    assert torch.bincount(train.labels).tolist() == [5000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    # the usual CIFAR-10 constants; JPEG re-encoding moves them by < 0.002
    assert train.mean == pytest.approx((0.4914, 0.4822, 0.4465), abs=2e-3)
    assert train.std == pytest.approx((0.2470, 0.2435, 0.2616), abs=5e-3)
    assert cifar["cached_s"] < 1.0


def test_cifar_loader_batches(cifar: dict[str, object]) -> None:
    train = cifar["train"]
    assert isinstance(train, ImageTensors)
    plain = TensorLoader(train, 512, shuffle=True)
    x, _ = next(iter(plain))
    assert x.mean((0, 2, 3)).abs().max() < 0.1  # normalised with the train statistics
    loader = TensorLoader(train, 512, shuffle=True, augment="crop_flip", drop_last=True)
    assert len(loader) == 97
    x, y = next(iter(loader))
    assert x.shape == (512, 3, 32, 32) and y.shape == (512,)
    # zero padding: a 4-pixel random crop exposes ~13% padding pixels on average
    mean = torch.tensor(train.mean).view(1, 3, 1, 1)
    std = torch.tensor(train.std).view(1, 3, 1, 1)
    padding = torch.isclose(x, -mean / std, atol=1e-5).all(1).float().mean().item()
    assert 0.07 < padding < 0.2
