"""Shared test fixtures and markers."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PRUNEKIT_SHARED_DATA", REPO.parent / "shared" / "data"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    skip_data = pytest.mark.skip(reason=f"real datasets not found in {SHARED_DATA}")
    have_data = (SHARED_DATA / "mnist-png.tar.gz").exists()
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)
        if "data" in item.keywords and not have_data:
            item.add_marker(skip_data)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder holding the real dataset archives (``../shared/data``)."""
    return SHARED_DATA


def _tiny_cifar(archive: Path, out: Path, per_class: int) -> Path:
    """A tar with the first ``per_class`` JPEGs per class of each split of the real archive."""
    counts: dict[str, int] = {}
    with tarfile.open(archive) as src, tarfile.open(out, "w") as dst:
        for m in src:
            parts = m.name.split("/")
            if not m.isfile() or len(parts) < 3 or parts[-3] not in ("train", "test"):
                continue
            key = "/".join(parts[-3:-1])
            if counts.get(key, 0) < per_class:
                counts[key] = counts.get(key, 0) + 1
                data = src.extractfile(m)
                assert data is not None
                blob = data.read()
                info = tarfile.TarInfo("/".join(parts[-3:]))
                info.size = len(blob)
                dst.addfile(info, io.BytesIO(blob))
    assert len(counts) == 20  # 10 classes × 2 splits
    return out


@pytest.fixture(scope="session")
def tiny_cifar(
    shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[int], Path]:
    """``make(per_class)``: a tar of the real CIFAR-10 JPEGs, ``per_class`` per class and split
    (decoding all 60,000 images takes tens of seconds on 2 busy cores; this needs a few)."""
    made: dict[int, Path] = {}

    def make(per_class: int) -> Path:
        if per_class not in made:
            out = tmp_path_factory.mktemp("tiny-cifar") / f"cifar10-{per_class}.tar"
            made[per_class] = _tiny_cifar(shared_data / "cifar10-jpeg.tar.gz", out, per_class)
        return made[per_class]

    return make
