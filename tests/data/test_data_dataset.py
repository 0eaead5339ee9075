"""ImageTensors, channel statistics, deterministic splits and subsets."""

from __future__ import annotations

import pytest
import torch

from prunekit.data import (
    ImageTensors,
    channel_stats,
    load_dataset,
    stratified_split,
    stratified_subset,
    subset,
)
from prunekit.errors import DataError


def _toy(n: int = 100, classes: int = 4) -> ImageTensors:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 4, 4), generator=gen, dtype=torch.uint8)
    labels = torch.arange(n) % classes
    return ImageTensors(images, labels, [f"c{i}" for i in range(classes)], (0.5,) * 3, (0.25,) * 3)


def test_image_tensors_validates_inputs() -> None:
    ds = _toy()
    assert len(ds) == 100 and ds.num_classes == 4 and ds.image_shape == (3, 4, 4)
    with pytest.raises(DataError, match="uint8"):
        ImageTensors(ds.images.float(), ds.labels, ds.classes, ds.mean, ds.std)
    with pytest.raises(DataError, match="outside"):
        ImageTensors(ds.images, ds.labels + 4, ds.classes, ds.mean, ds.std)
    with pytest.raises(DataError, match="one per channel"):
        ImageTensors(ds.images, ds.labels, ds.classes, (0.5,), (0.2,))


def test_channel_stats_match_float_computation() -> None:
    images = _toy().images
    mean, std = channel_stats(images)
    x = images.double() / 255
    assert mean == pytest.approx(x.mean((0, 2, 3)).tolist(), abs=1e-12)
    assert std == pytest.approx(x.std((0, 2, 3), unbiased=False).tolist(), abs=1e-12)


def test_stratified_split_is_disjoint_complete_and_per_class() -> None:
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 7)
    train, test = stratified_split(labels, 0.2, seed=0)
    assert sorted(torch.cat([train, test]).tolist()) == list(range(87))
    assert torch.bincount(labels[test]).tolist() == [10, 6, 1]  # round(0.2 * n) per class
    again = stratified_split(labels, 0.2, seed=0)
    assert torch.equal(again[1], test)
    assert not torch.equal(stratified_split(labels, 0.2, seed=1)[1], test)
    with pytest.raises(DataError, match="test_fraction"):
        stratified_split(labels, 1.5)


def test_digits_split_is_fixed_and_stratified() -> None:
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert (len(train), len(test)) == (1438, 359)
    assert train.image_shape == (1, 8, 8) and train.images.dtype == torch.uint8
    assert int(train.images.max()) == 255  # 0..16 rescaled to 0..255
    counts = torch.bincount(test.labels, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # 20% of every class (≈180 each)
    assert train.mean == test.mean  # test uses the train split's statistics
    assert len(load_dataset("digits", "all")) == 1797


def test_subset_and_stratified_subset() -> None:
    ds = _toy(200, classes=4)
    small = subset(ds, 30, seed=3)
    assert len(small) == 30 and small.mean == ds.mean and small.classes == ds.classes
    assert torch.equal(subset(ds, 30, seed=3).labels, small.labels)
    bal = stratified_subset(ds, 5, seed=1)
    assert torch.bincount(bal.labels).tolist() == [5, 5, 5, 5]
    # picked samples are real rows of ds, each at most once
    rows = {tuple(img.flatten().tolist()) for img in bal.images}
    assert len(rows) == 20
    with pytest.raises(DataError, match="subset size"):
        subset(ds, 201)
