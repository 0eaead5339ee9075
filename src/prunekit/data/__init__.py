"""Datasets as uint8 tensors, decoded once and cached, fed by a device-resident loader.

Dataset specs (strings usable from the CLI and recipes):

* ``"digits"`` — scikit-learn's embedded 8×8 digits (1797 gray images, 10 classes; no files
  needed). ``train``/``test`` are a fixed, stratified 80/20 split.
* ``"cifar10:PATH"``, ``"cifar100:PATH"``, ``"mnist:PATH"``, ``"fashionmnist:PATH"`` — load
  ``PATH`` (any layout below) and check it has the expected classes and channels.
* ``"imagefolder:PATH"`` or a bare ``PATH`` — detect the layout:

  - a ``.tar[.gz|.bz2|.xz]`` archive of an image-folder tree (``train/<class>/*.jpg`` and
    ``test/<class>/*.jpg``; ``training``/``testing``/``val`` also accepted; may be wrapped in
    one top folder), e.g. ``../shared/data/cifar10-jpeg.tar.gz``, ``mnist-png.tar.gz``;
  - the same tree already extracted, or a folder of ``<class>/`` folders without splits
    (split 80/20 per class like ``digits``);
  - torchvision's CIFAR files: ``cifar-10-batches-py/``, ``cifar-100-python/``,
    ``cifar-10-batches-bin/``, ``cifar-100-binary/`` (the folder or its parent); pickles are read
    with a restricted unpickler that only admits numpy arrays;
  - MNIST idx files (``train-images-idx3-ubyte[.gz]`` ...), directly or in ``MNIST/raw/``;
  - an archive holding one of those (e.g. ``cifar-10-python.tar.gz``).

Image files are decoded in a process pool and cached as safetensors under ``$PRUNEKIT_CACHE``
(default ``~/.cache/prunekit/datasets``); later loads take a fraction of a second.

Example:
    >>> train = load_dataset("digits", "train")
    >>> loader = TensorLoader(train, 128, shuffle=True, augment="flip")
    >>> x, y = next(iter(loader))
    >>> x.shape
    torch.Size([128, 1, 8, 8])
"""

from __future__ import annotations

from prunekit.data.cache import default_cache_dir
from prunekit.data.dataset import (
    ImageTensors,
    channel_stats,
    stratified_split,
    stratified_subset,
    subset,
)
from prunekit.data.load import SPLITS, DatasetSpec, load_dataset, parse_dataset_spec
from prunekit.data.loader import AUGMENT_PRESETS, AugmentConfig, TensorLoader, augment_batch
from prunekit.data.safe_pickle import RestrictedUnpickler, safe_load_pickle

__all__ = [
    "AUGMENT_PRESETS",
    "SPLITS",
    "AugmentConfig",
    "DatasetSpec",
    "ImageTensors",
    "RestrictedUnpickler",
    "TensorLoader",
    "augment_batch",
    "channel_stats",
    "default_cache_dir",
    "load_dataset",
    "parse_dataset_spec",
    "safe_load_pickle",
    "stratified_split",
    "stratified_subset",
    "subset",
]
