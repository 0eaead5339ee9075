"""int8 hand-off: static int8 quantization of an exported ONNX model with onnxruntime.

Pruning removes channels; int8 makes each remaining multiply-accumulate cheaper — the two
compose (Han et al. 2016, "Deep Compression"). The exported fp32 file is pre-processed (shape
inference, graph optimisation), then quantized statically (QDQ format, int8 weights per output
channel, uint8 activations — onnxruntime's recommended setting for x86 CPUs) with activation
ranges calibrated on the user's own data. Accuracy before/after is measured on real data with
:func:`ort_accuracy`.

Example:
    >>> batches = calibration_batches("mnist:../shared/data/mnist-png.tar.gz", n=32)
    >>> quantize_int8("lenet5.onnx", "lenet5.int8.onnx", batches)
    >>> ort_accuracy("lenet5.int8.onnx", TensorLoader(load_dataset(spec, "test"), 256))
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prunekit._fileio import atomic_path
from prunekit.errors import ConfigError, DataError
from prunekit.export import _require, ort_session

__all__ = ["calibration_batches", "ort_accuracy", "quantize_int8"]


def calibration_batches(
    data: Any, *, split: str = "train", n: int = 16, batch_size: int = 32, seed: int = 0
) -> list[torch.Tensor]:
    """``n`` input batches of a :mod:`prunekit.data` dataset (spec string or ImageTensors),
    shuffled with ``seed`` and normalised as the training loader does."""
    from prunekit.data import TensorLoader, load_dataset

    ds = load_dataset(data, split) if isinstance(data, (str, os.PathLike)) else data
    loader = TensorLoader(ds, batch_size, shuffle=True, seed=seed)
    out = []
    for x, _ in loader:
        out.append(x)
        if len(out) >= n:
            break
    if not out:
        raise DataError("no calibration batches: the dataset is empty")
    return out


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over PyTorch batches."""

    def __init__(self, name: str, batches: Iterable[Any]) -> None:
        self.name, self.batches = name, list(batches)
        self._it: Iterator[Any] = iter(self.batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        b = next(self._it, None)
        if b is None:
            return None
        x = b[0] if isinstance(b, (tuple, list)) else b
        return {self.name: x.detach().float().cpu().numpy()}

    def rewind(self) -> None:
        self._it = iter(self.batches)


def quantize_int8(
    fp32_path: str | os.PathLike[str],
    int8_path: str | os.PathLike[str],
    calibration: Iterable[Any],
    *,
    per_channel: bool = True,
) -> Path:
    """Static int8 quantization of an ONNX file, calibrated on ``calibration`` batches.

    Args:
        fp32_path: the exported float model (single input).
        int8_path: where to write the quantized model (atomically).
        calibration: input batches (tensors, or ``(x, y)`` pairs) from the user's data.
        per_channel: one weight scale per output channel (more accurate; QDQ format).

    Returns:
        The written path.

    Raises:
        ConfigError: onnxruntime is missing, or the model has more than one input.
    """
    _require("onnxruntime")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    inputs = ort_session(fp32_path).get_inputs()
    if len(inputs) != 1:
        raise ConfigError(f"int8 calibration supports one model input, {fp32_path} has {len(inputs)}")
    reader = _Reader(inputs[0].name, calibration)
    if not reader.batches:
        raise DataError("int8 calibration needs at least one batch of data")
    CalibrationDataReader.register(_Reader)
    with tempfile.TemporaryDirectory(prefix="pk-int8-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        with atomic_path(int8_path) as out:
            quantize_static(str(pre), str(out), reader, quant_format=QuantFormat.QDQ,
                            per_channel=per_channel, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8)  # fmt: skip
    return Path(int8_path)


def ort_accuracy(path: str | os.PathLike[str], loader: Iterable[Any], *,
                 threads: int | None = None) -> float:  # fmt: skip
    """Top-1 accuracy (fraction) of an ONNX classifier on ``(x, y)`` batches, in onnxruntime."""
    sess = ort_session(path, threads=threads)
    name = sess.get_inputs()[0].name
    right = total = 0
    for x, y in loader:
        logits = sess.run(None, {name: x.detach().float().cpu().numpy()})[0]
        right += int((logits.argmax(1) == y.cpu().numpy()).sum())
        total += int(y.numel())
    if total == 0:
        raise DataError("accuracy needs at least one labelled sample")
    return right / total
