"""Deployment export: a pruned model is an ordinary model, so ONNX export just works.

Example:
    >>> to_onnx(prunekit.load("resnet18-p50"), torch.randn(1, 3, 224, 224), "r18.onnx")
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit.errors import ConfigError


def to_onnx(
    model: nn.Module, inputs: Any, path: str | Path, *, opset: int = 17, dynamic_batch: bool = True
) -> Path:
    """Export ``model`` (eval mode) to an ONNX file, atomically, and check it.

    Args:
        model: the model.
        inputs: example inputs (tensor or tuple).
        path: output ``.onnx`` file.
        opset: ONNX opset version.
        dynamic_batch: make the batch dimension dynamic.

    Returns:
        The path written.
    """
    try:
        import onnx
    except ImportError:
        raise ConfigError(
            "ONNX export needs the 'onnx' extra: pip install 'prunekit[onnx]'"
        ) from None
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [f"input{i}" if i else "input" for i in range(len(args))]
    axes = {n: {0: "batch"} for n in names} if dynamic_batch else None
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    model.eval()
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated but needs no extra packages and handles
            # every model prunekit produces (ordinary layers only).
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model,
                args,
                tmp,
                dynamo=False,
                opset_version=opset,
                input_names=names,
                dynamic_axes=axes,
            )
        onnx.checker.check_model(onnx.load(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
