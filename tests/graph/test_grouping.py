"""Unit grouping by signature: the hashed fast path must equal exact grouping, collisions too."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from prunekit._gc import gc_paused, with_gc_paused
from prunekit.graph import graph as graph_mod


def _segments(rng: np.random.Generator, n: int, nkeys: int) -> tuple[np.ndarray, ...]:
    """Random sorted key segments, many of them repeated."""
    pool = [np.sort(rng.choice(nkeys, size=rng.integers(1, 6), replace=False)) for _ in range(7)]
    segs = [pool[i] for i in rng.integers(0, len(pool), size=n)]
    lens = np.array([len(s) for s in segs])
    starts = np.r_[0, np.cumsum(lens)[:-1]]
    return np.concatenate(segs), starts, lens


def _exact(k: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> list[tuple[int, ...]]:
    return [tuple(k[s : s + n].tolist()) for s, n in zip(starts, lens)]


def _check(ids: np.ndarray, first: np.ndarray, seqs: list[tuple[int, ...]]) -> None:
    # same class <=> same contents, and first[c] is the first segment of class c
    for i, a in enumerate(seqs):
        for j, b in enumerate(seqs):
            assert (ids[i] == ids[j]) == (a == b)
    for c, f in enumerate(first.tolist()):
        assert ids[f] == c and not np.any(ids[:f] == c)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_segment_classes_equal_exact_grouping(seed: int) -> None:
    k, starts, lens = _segments(np.random.default_rng(seed), 60, 12)
    ids, first = graph_mod._segment_classes(k, starts, lens, 12)
    _check(ids, first, _exact(k, starts, lens))
    # classes are numbered in order of first appearance
    assert np.all(np.diff(first) > 0)


def test_segment_classes_survive_hash_collisions(monkeypatch: pytest.MonkeyPatch) -> None:
    """All-zero key weights make every equal-length segment collide; the check must catch it."""

    class ZeroRng:
        def integers(self, low: int, high: int, size: tuple[int, int], dtype: type) -> np.ndarray:
            return np.zeros(size, dtype=dtype)

    k, starts, lens = _segments(np.random.default_rng(3), 40, 9)
    monkeypatch.setattr(graph_mod.np.random, "default_rng", lambda seed: ZeroRng())
    ids, first = graph_mod._segment_classes(k, starts, lens, 9)
    _check(ids, first, _exact(k, starts, lens))


def test_gc_paused_restores_state_and_nests() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner block must not re-enable inside the outer one
    assert gc.isenabled()

    @with_gc_paused
    def boom() -> None:
        assert not gc.isenabled()
        raise ValueError("x")

    with pytest.raises(ValueError):
        boom()
    assert gc.isenabled()
