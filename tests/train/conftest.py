"""Fixtures for prunekit.train tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # The models here are tiny: intra-op threads only add synchronisation, and on a busy
    # 2-core machine spinning OpenMP threads slow a step down by more than 10x.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
