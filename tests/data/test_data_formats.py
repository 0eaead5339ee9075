"""Every supported on-disk layout, read through load_dataset, and its error messages."""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from datasynth import make_pixels, write_cifar10_python, write_idx, write_image_tree

from prunekit.data import load_dataset, parse_dataset_spec, safe_load_pickle
from prunekit.errors import DataError


def test_cifar10_python_pickles(tmp_path: Path, cache_dir: Path) -> None:
    ref = write_cifar10_python(tmp_path / "cifar-10-batches-py")
    # the parent folder is accepted too (torchvision's root=...)
    train = load_dataset(f"cifar10:{tmp_path}", "train", cache_dir=cache_dir)
    test = load_dataset(tmp_path / "cifar-10-batches-py", "test", cache_dir=cache_dir)
    assert train.images.shape == (20, 3, 32, 32) and len(test) == 4
    assert train.classes[:2] == ["class0", "class1"]
    # row layout: 1024 red values, then green, then blue, each row-major
    row = ref["train_x"][7]
    assert torch.equal(train.images[7, 1], torch.from_numpy(row[1024:2048].reshape(32, 32)))
    assert train.labels.tolist() == ref["train_y"].tolist()
    expected_mean = (ref["train_x"].reshape(20, 3, -1) / 255.0).mean(axis=(0, 2))
    assert np.allclose(train.mean, expected_mean)


def test_cifar100_python_and_binary(tmp_path: Path, cache_dir: Path) -> None:
    rng = np.random.default_rng(1)
    c100 = tmp_path / "cifar-100-python"
    c100.mkdir()
    data = rng.integers(0, 256, size=(6, 3072), dtype=np.uint8)
    for name in ("train", "test"):
        batch = {b"data": data, b"fine_labels": [0, 1, 2, 99, 5, 5], b"coarse_labels": [0] * 6}
        (c100 / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"fine_label_names": [f"f{i}".encode() for i in range(100)]}
    (c100 / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    ds = load_dataset(f"cifar100:{c100}", "test", cache_dir=cache_dir)
    assert ds.num_classes == 100 and ds.labels.tolist() == [0, 1, 2, 99, 5, 5]

    binroot = tmp_path / "cifar-10-batches-bin"
    binroot.mkdir()
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = np.array([[3], [9]], dtype=np.uint8)
        (binroot / name).write_bytes(np.concatenate([labels, data[:2]], axis=1).tobytes())
    (binroot / "batches.meta.txt").write_text("\n".join(f"n{i}" for i in range(10)) + "\n")
    ds = load_dataset(tmp_path / "cifar-10-batches-bin", "train", cache_dir=cache_dir)
    assert len(ds) == 10 and ds.labels[:2].tolist() == [3, 9] and ds.classes[9] == "n9"
    assert torch.equal(ds.images[1].flatten(), torch.from_numpy(data[1]))


def test_restricted_unpickler_refuses_code(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (print, ("pwned",))

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(DataError, match=r"refusing to unpickle .*print"):
        safe_load_pickle(path)
    path.write_bytes(b"\x80\x02garbage")
    with pytest.raises(DataError, match="not a readable pickle"):
        safe_load_pickle(path)


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx(tmp_path: Path, cache_dir: Path, compress: bool) -> None:
    raw = tmp_path / "MNIST" / "raw"
    suffix = ".gz" if compress else ""
    imgs = make_pixels(12, (28, 28), seed=2)
    labels = np.arange(12) % 10
    write_idx(raw / f"train-images-idx3-ubyte{suffix}", imgs, compress)
    write_idx(raw / f"train-labels-idx1-ubyte{suffix}", labels, compress)
    write_idx(raw / f"t10k-images-idx3-ubyte{suffix}", imgs[:5], compress)
    write_idx(raw / f"t10k-labels-idx1-ubyte{suffix}", labels[:5], compress)
    ds = load_dataset(f"mnist:{tmp_path}", "train", cache_dir=cache_dir)
    assert ds.images.shape == (12, 1, 28, 28) and ds.classes == [str(i) for i in range(10)]
    assert torch.equal(ds.images[:, 0], torch.from_numpy(imgs))
    assert len(load_dataset(f"mnist:{tmp_path}", "test", cache_dir=cache_dir)) == 5
    (raw / f"t10k-images-idx3-ubyte{suffix}").write_bytes(b"\x00\x00\x09\x03")
    with pytest.raises(DataError, match="idx"):
        load_dataset(tmp_path, "test", cache_dir=cache_dir)


def _tree(seed: int) -> dict[str, dict[str, np.ndarray]]:
    return {
        "train": {
            "cat": make_pixels(5, (3, 6, 6), seed),
            "dog": make_pixels(4, (3, 6, 6), seed + 1),
        },
        "test": {
            "cat": make_pixels(2, (3, 6, 6), seed + 2),
            "dog": make_pixels(3, (3, 6, 6), seed + 3),
        },
    }


def test_image_folder_with_splits(tmp_path: Path, cache_dir: Path) -> None:
    tree = write_image_tree(tmp_path / "ds", _tree(0))
    train = load_dataset(tmp_path / "ds", "train", cache_dir=cache_dir)
    test = load_dataset(tmp_path / "ds", "test", cache_dir=cache_dir)
    assert train.classes == ["cat", "dog"] and train.labels.tolist() == [0] * 5 + [1] * 4
    assert torch.equal(train.images[5:], torch.from_numpy(tree["train"]["dog"]))  # PNG is lossless
    assert torch.equal(test.images[:2], torch.from_numpy(tree["test"]["cat"]))
    both = load_dataset(tmp_path / "ds", "all", cache_dir=cache_dir)
    assert len(both) == 14 and torch.equal(both.images[:9], train.images)
    (tmp_path / "ds" / "test").rename(tmp_path / "ds" / "val")  # ImageNet-style name
    val = load_dataset(tmp_path / "ds", "test", cache_dir=cache_dir)
    assert torch.equal(val.images, test.images)


def test_tar_archive_wrapped_in_top_folder(tmp_path: Path, cache_dir: Path) -> None:
    tree = write_image_tree(
        tmp_path / "mnistish",
        {
            "training": {"0": make_pixels(3, (1, 7, 7), 4)},
            "testing": {"0": make_pixels(2, (1, 7, 7), 5)},
        },
    )
    archive = tmp_path / "mnistish.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tmp_path / "mnistish", arcname="mnistish")
    train = load_dataset(archive, "train", cache_dir=cache_dir)
    assert train.images.shape == (3, 1, 7, 7)
    assert torch.equal(train.images, torch.from_numpy(tree["training"]["0"]))
    assert len(load_dataset(archive, "test", cache_dir=cache_dir)) == 2


def test_archive_of_cifar_pickles(tmp_path: Path, cache_dir: Path) -> None:
    ref = write_cifar10_python(tmp_path / "src" / "cifar-10-batches-py", per_batch=2)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    ds = load_dataset(f"cifar10:{archive}", "test", cache_dir=cache_dir)
    assert ds.labels.tolist() == ref["test_y"].tolist()


def test_folder_without_splits_is_split_80_20(tmp_path: Path, cache_dir: Path) -> None:
    write_image_tree(
        tmp_path / "flat",
        {"": {"a": make_pixels(10, (3, 4, 4), 6), "b": make_pixels(5, (3, 4, 4), 7)}},
    )
    train = load_dataset(tmp_path / "flat", "train", cache_dir=cache_dir)
    test = load_dataset(tmp_path / "flat", "test", cache_dir=cache_dir)
    assert torch.bincount(test.labels).tolist() == [2, 1]
    assert torch.bincount(train.labels).tolist() == [8, 4]
    assert len(load_dataset(tmp_path / "flat", "all", cache_dir=cache_dir)) == 15


def test_errors_name_the_path_and_the_fix(tmp_path: Path, cache_dir: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nope", cache_dir=cache_dir)
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no class folders under .*empty/train; expected"):
        load_dataset(tmp_path / "empty", cache_dir=cache_dir)
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="not a tar archive"):
        load_dataset(tmp_path / "notes.txt", cache_dir=cache_dir)
    write_image_tree(
        tmp_path / "mixed",
        {"": {"a": make_pixels(1, (3, 4, 4), 0), "b": make_pixels(1, (3, 5, 5), 1)}},
    )
    with pytest.raises(DataError, match="same size"):
        load_dataset(tmp_path / "mixed", cache_dir=cache_dir)
    write_image_tree(tmp_path / "rgb", _tree(3))
    with pytest.raises(DataError, match="'mnist' expects 10 classes"):
        load_dataset(f"mnist:{tmp_path / 'rgb'}", cache_dir=cache_dir)
    with pytest.raises(DataError, match="unknown split"):
        load_dataset("digits", "validation")
    with pytest.raises(DataError, match="unknown dataset kind 'imagenet'"):
        load_dataset("imagenet:/x", cache_dir=cache_dir)


def test_parse_dataset_spec() -> None:
    assert parse_dataset_spec("digits").kind == "digits"
    spec = parse_dataset_spec("CIFAR10:/data/c.tar.gz")
    assert (spec.kind, str(spec.path)) == ("cifar10", "/data/c.tar.gz")
    assert parse_dataset_spec("/data/mnist").kind == "auto"
    assert parse_dataset_spec(Path("rel/dir")).path == Path("rel/dir")
    with pytest.raises(DataError, match="lacks a path"):
        parse_dataset_spec("mnist:")
