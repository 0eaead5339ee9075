"""Fixtures for the prunekit.methods tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # Tiny models: a second intra-op thread only adds synchronisation, and on a busy 2-core
    # machine spinning OpenMP threads make each step many times slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
