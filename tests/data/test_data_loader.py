"""TensorLoader: batching, normalisation, vectorised augmentation, reproducibility."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from prunekit.data import AugmentConfig, ImageTensors, TensorLoader, augment_batch, load_dataset
from prunekit.data.loader import _stream_seed
from prunekit.errors import ConfigError, DataError


def _ds(n: int = 50, size: int = 8) -> ImageTensors:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), generator=gen, dtype=torch.uint8)
    # store the sample index in pixel (0, 0, 0) so batches can be traced back
    images[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)
    return ImageTensors(images, torch.arange(n) % 5, list("abcde"), (0.5,) * 3, (0.25,) * 3)


def test_batches_cover_every_sample_once() -> None:
    ds = _ds(50)
    loader = TensorLoader(ds, 16, shuffle=True, normalize=False)
    assert len(loader) == 4
    seen = []
    sizes = []
    for x, y in loader:
        sizes.append(x.shape[0])
        idx = (x[:, 0, 0, 0] * 255).round().long()
        assert torch.equal(y, ds.labels[idx])
        assert torch.allclose(x, ds.images[idx].float() / 255)
        seen += idx.tolist()
    assert sizes == [16, 16, 16, 2] and sorted(seen) == list(range(50))
    assert seen != list(range(50))  # shuffled
    dropped = TensorLoader(ds, 16, drop_last=True)
    assert len(dropped) == 3 and sum(x.shape[0] for x, _ in dropped) == 48


def test_normalisation_uses_dataset_stats() -> None:
    ds = load_dataset("digits", "train")
    x = torch.cat([b for b, _ in TensorLoader(ds, 500)])
    assert x.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert x.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)
    custom = next(iter(TensorLoader(ds, 8, mean=[0.0], std=[1.0])))[0]
    assert torch.allclose(custom, ds.images[:8].float() / 255)


def _reference_augment(x: torch.Tensor, cfg: AugmentConfig, seed: int) -> torch.Tensor:
    """Per-sample loop drawing the same random numbers in the same order."""
    gen = torch.Generator().manual_seed(seed)
    b, _, h, w = x.shape
    p = cfg.crop_padding
    oy = torch.randint(0, 2 * p + 1, (b, 1), generator=gen)
    ox = torch.randint(0, 2 * p + 1, (b, 1), generator=gen)
    flip = torch.rand(b, 1, generator=gen) < 0.5
    padded = F.pad(x, (p, p, p, p))
    out = []
    for i in range(b):
        crop = padded[i, :, oy[i, 0] : oy[i, 0] + h, ox[i, 0] : ox[i, 0] + w]
        out.append(crop.flip(-1) if flip[i, 0] else crop)
    return torch.stack(out)


def test_augment_matches_per_sample_reference() -> None:
    x = _ds(64, size=10).images
    cfg = AugmentConfig()
    got = augment_batch(x, cfg, torch.Generator().manual_seed(7))
    assert torch.equal(got, _reference_augment(x, cfg, 7))
    # crops really move: some samples differ from the plain image, zero padding shows up
    assert (got != x).flatten(1).any(1).float().mean() > 0.8
    assert (got == 0).float().mean() > (x == 0).float().mean()


def test_flip_only_gives_image_or_mirror() -> None:
    x = _ds(200).images
    got = augment_batch(x, AugmentConfig(crop_padding=0), torch.Generator().manual_seed(1))
    same = (got == x).flatten(1).all(1)
    mirrored = (got == x.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert 0.35 < mirrored.float().mean().item() < 0.65


def test_epochs_are_reproducible_and_distinct() -> None:
    ds = _ds(40)
    a = TensorLoader(ds, 8, shuffle=True, augment="crop_flip", seed=3)
    b = TensorLoader(ds, 8, shuffle=True, augment="crop_flip", seed=3)
    epoch0 = [x for x, _ in a]
    epoch1 = [x for x, _ in a]  # iterating again advances to epoch 1
    b.set_epoch(1)  # a resumed run jumps straight to epoch 1
    assert all(torch.equal(u, v) for u, v in zip(epoch1, [x for x, _ in b]))
    assert not torch.equal(epoch0[0], epoch1[0])
    b.set_epoch(0)
    assert torch.equal(next(iter(b))[0], epoch0[0])
    assert _stream_seed(3, 1) != _stream_seed(4, 0)


def test_dtype_channels_last_and_tuple_input() -> None:
    images = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    loader = TensorLoader(
        (images, torch.zeros(10, dtype=torch.long)), 4, dtype=torch.bfloat16, channels_last=True
    )
    x, _ = next(iter(loader))
    assert x.dtype == torch.bfloat16 and x.is_contiguous(memory_format=torch.channels_last)
    # stats computed from the tuple's images → normalised data is centred
    full = torch.cat([b.float() for b, _ in loader])
    assert abs(full.mean().item()) < 0.02


def test_bad_arguments_raise_clear_errors() -> None:
    ds = _ds(10)
    with pytest.raises(ConfigError, match="unknown augmentation preset"):
        TensorLoader(ds, 4, augment="mixup")
    with pytest.raises(ConfigError, match="invalid augmentation config"):
        TensorLoader(ds, 4, augment={"crop_pad": 4})
    assert TensorLoader(ds, 4, augment={"crop_padding": None}).augment == AugmentConfig()
    with pytest.raises(ConfigError, match="batch_size"):
        TensorLoader(ds, 0)
    with pytest.raises(DataError, match="uint8"):
        TensorLoader((ds.images.float(), ds.labels), 4)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            TensorLoader(ds, 4, device="cuda")


@pytest.mark.gpu
def test_cuda_resident_loader_matches_shapes_and_stats() -> None:
    ds = load_dataset("digits", "train")
    loader = TensorLoader(ds, 256, shuffle=True, augment="crop_flip", device="cuda")
    assert loader.images.is_cuda
    batches = list(loader)
    assert all(x.is_cuda and y.is_cuda for x, y in batches)
    assert sum(x.shape[0] for x, _ in batches) == len(ds)
    plain = torch.cat([x for x, _ in TensorLoader(ds, 512, device="cuda")])
    assert abs(plain.mean().item()) < 1e-4
    # the same (seed, epoch) gives the same batches on the device
    again = TensorLoader(ds, 256, shuffle=True, augment="crop_flip", device="cuda")
    assert torch.equal(next(iter(again))[0], batches[0][0])
