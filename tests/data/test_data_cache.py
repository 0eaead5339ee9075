"""Decode-once cache: hits, invalidation, corruption recovery, atomic files."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from datasynth import make_pixels, png_bytes, write_image_tree

import prunekit.data.load as load_mod
from prunekit.data import default_cache_dir, load_dataset
from prunekit.data.decode import decode_images


def _tree(root: Path) -> Path:
    write_image_tree(
        root,
        {
            "train": {"a": make_pixels(4, (3, 5, 5), 0), "b": make_pixels(4, (3, 5, 5), 1)},
            "test": {"a": make_pixels(2, (3, 5, 5), 2), "b": make_pixels(2, (3, 5, 5), 3)},
        },
    )
    return root


def _forbid_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("source was read although the cache should have been used")

    monkeypatch.setattr(load_mod, "_read_source", boom)


def test_second_load_comes_from_cache(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _tree(tmp_path / "ds")
    first = load_dataset(root, "train", cache_dir=cache_dir)
    files = sorted(p.suffix for p in cache_dir.iterdir())
    assert files == [".json", ".safetensors"]  # and no temp files left behind
    _forbid_reading(monkeypatch)
    second = load_dataset(root, "train", cache_dir=cache_dir)
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert second.mean == first.mean and second.classes == first.classes
    test = load_dataset(root, "test", cache_dir=cache_dir)
    assert len(test) == 4 and test.mean == first.mean


def test_changed_source_invalidates_cache(tmp_path: Path, cache_dir: Path) -> None:
    root = _tree(tmp_path / "ds")
    assert len(load_dataset(root, "train", cache_dir=cache_dir)) == 8
    extra = root / "train" / "b" / "0099.png"
    extra.write_bytes(png_bytes(make_pixels(1, (3, 5, 5), 9)[0]))
    os.utime(extra.parent, ns=(1, 1))  # force a visible mtime change even on coarse clocks
    assert len(load_dataset(root, "train", cache_dir=cache_dir)) == 9


@pytest.mark.parametrize("damage", ["truncate", "json", "flip_header"])
def test_corrupt_cache_is_rebuilt(
    tmp_path: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    root = _tree(tmp_path / "ds")
    ref = load_dataset(root, "train", cache_dir=cache_dir)
    data = next(cache_dir.glob("*.safetensors"))
    meta = next(cache_dir.glob("*.json"))
    if damage == "truncate":
        data.write_bytes(data.read_bytes()[:-50])
    elif damage == "json":
        meta.write_text("{not json")
    else:
        raw = bytearray(data.read_bytes())
        raw[8:9] = b"X"  # the header's opening brace
        data.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING):
        again = load_dataset(root, "train", cache_dir=cache_dir)
    assert torch.equal(again.images, ref.images)
    if damage != "json":
        assert "corrupt" in caplog.text
    # the rebuilt entry is valid again
    assert json.loads(meta.read_text())["splits"]["train"] == [8, 3, 5, 5]


def test_env_var_and_refresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "envcache"))
    assert default_cache_dir() == tmp_path / "envcache"
    root = _tree(tmp_path / "ds")
    load_dataset(root, "train")
    assert len(list((tmp_path / "envcache").glob("*.safetensors"))) == 1
    calls = []
    original = load_mod._read_source

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(load_mod, "_read_source", counting)
    load_dataset(root, "train")
    load_dataset(root, "train", refresh=True)
    assert len(calls) == 1


def test_unwritable_cache_still_loads(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _tree(tmp_path / "ds")
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING):
        ds = load_dataset(root, "train", cache_dir=blocker / "sub")
    assert len(ds) == 8 and "could not write dataset cache" in caplog.text


def test_parallel_decode_matches_serial() -> None:
    # above the in-process threshold, so the process pool really runs (2 workers)
    pixels = make_pixels(16, (3, 6, 6), 5)
    payloads = [png_bytes(p) for p in pixels]
    items = [(f"img{i}", payloads[i % 16]) for i in range(4200)]
    serial = decode_images(items, workers=1)
    parallel = decode_images(items, workers=2)
    assert parallel.shape == (4200, 3, 6, 6)
    assert torch.equal(serial, parallel)
    assert torch.equal(parallel[17], torch.from_numpy(pixels[1]))


def test_gray_and_rgb_mix_is_promoted() -> None:
    gray = make_pixels(1, (1, 4, 4), 0)[0]
    rgb = make_pixels(1, (3, 4, 4), 1)[0]
    out = decode_images([("g", png_bytes(gray)), ("c", png_bytes(rgb))], workers=1)
    assert out.shape == (2, 3, 4, 4)
    assert torch.equal(out[0], torch.from_numpy(np.repeat(gray, 3, axis=0)))
