"""Fixtures for the data-layer tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    """A fresh, empty dataset cache folder."""
    return tmp_path / "cache"


@pytest.fixture
def single_thread() -> Iterator[None]:
    """Run tiny models on one intra-op thread: on a busy 2-core runner, OpenMP's spinning
    worker threads make such models up to 30x slower than one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
