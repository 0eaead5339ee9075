"""MNIST from ../shared/data/mnist-png.tar.gz: counts, statistics, cache speed, learnability."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from torch import nn

from prunekit.data import ImageTensors, TensorLoader, load_dataset, stratified_subset

pytestmark = pytest.mark.data

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def mnist(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    # one decode per test session: every real-data test file shares this cache folder
    cache = tmp_path_factory.getbasetemp() / "prunekit-dataset-cache"
    spec = f"mnist:{shared_data / 'mnist-png.tar.gz'}"
    start = time.perf_counter()
    train = load_dataset(spec, "train", cache_dir=cache)
    decode_s = time.perf_counter() - start
    start = time.perf_counter()
    test = load_dataset(spec, "test", cache_dir=cache)
    cached_s = time.perf_counter() - start
    print(f"\nMNIST: first load (decode 70k PNG) {decode_s:.1f} s, cached load {cached_s:.3f} s")
    return {"train": train, "test": test, "cached_s": cached_s, "spec": spec, "cache": cache}


def test_mnist_shapes_counts_and_stats(mnist: dict[str, object]) -> None:
    train, test = mnist["train"], mnist["test"]
    assert isinstance(train, ImageTensors) and isinstance(test, ImageTensors)
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.classes == [str(d) for d in range(10)]
    assert torch.bincount(train.labels).tolist() == TRAIN_COUNTS
    assert torch.bincount(test.labels).tolist() == TEST_COUNTS
    # the well-known MNIST normalisation constants (0.1307, 0.3081)
    assert train.mean[0] == pytest.approx(0.1307, abs=5e-4)
    assert train.std[0] == pytest.approx(0.3081, abs=5e-4)


def test_mnist_cache_loads_in_well_under_a_second(mnist: dict[str, object]) -> None:
    assert isinstance(mnist["cached_s"], float) and mnist["cached_s"] < 1.0
    start = time.perf_counter()
    again = load_dataset(mnist["spec"], "train", cache_dir=mnist["cache"])  # type: ignore[arg-type]
    assert time.perf_counter() - start < 1.0
    assert torch.equal(again.images, mnist["train"].images)  # type: ignore[union-attr]


def test_mnist_labels_match_images(mnist: dict[str, object], single_thread: None) -> None:
    """Softmax regression reaches ~90% only if every image carries its own label."""
    train = stratified_subset(mnist["train"], 1000, seed=0)  # type: ignore[arg-type]
    test = mnist["test"]
    assert isinstance(test, ImageTensors)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loader = TensorLoader(train, 128, shuffle=True, seed=0)
    for _ in range(3):
        for x, y in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    with torch.no_grad():
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in TensorLoader(test, 2000))
    assert correct / len(test) > 0.86
