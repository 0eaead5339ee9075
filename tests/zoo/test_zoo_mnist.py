"""A zoo LeNet learns real MNIST through the data layer (a short, CPU-sized run)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from prunekit.data import TensorLoader, load_dataset, stratified_subset
from prunekit.zoo import build


@pytest.mark.data
def test_lenet_300_100_learns_mnist_subset(
    shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # one decode per test session: every real-data test file shares this cache folder
    cache = tmp_path_factory.getbasetemp() / "prunekit-dataset-cache"
    spec = f"mnist:{shared_data / 'mnist-png.tar.gz'}"
    train = stratified_subset(load_dataset(spec, "train", cache_dir=cache), 300, seed=0)
    test = stratified_subset(load_dataset(spec, "test", cache_dir=cache), 100, seed=0)
    model = build("lenet_300_100")
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(3):
        for x, y in TensorLoader(train, 64, shuffle=True):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        x, y = next(iter(TensorLoader(test, len(test))))
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.88  # ~0.92 after 3 epochs on 3,000 images
