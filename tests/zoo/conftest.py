"""Fixtures for the zoo tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Batch-of-2 forward/backward passes gain nothing from a second intra-op thread, and on a
    busy 2-core runner OpenMP's spinning threads make them many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
