"""Deployment export: ONNX checked in onnxruntime, optional BatchNorm folding, int8 hand-off.

A pruned model is an ordinary model, so it exports like any other. :func:`to_onnx` writes the
file atomically, validates it with ``onnx.checker`` and then *runs* it in onnxruntime on the
example input (and, with a dynamic batch axis, on a batch of another size): the largest
relative difference to PyTorch is returned and an error is raised above the tolerance.

Example:
    >>> check = to_onnx(prunekit.load("resnet18-p50"), torch.randn(1, 3, 224, 224), "r18.onnx")
    >>> check.max_rel_diff          # e.g. 2e-6
"""

from __future__ import annotations

import copy
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from prunekit._fileio import atomic_path
from prunekit.errors import ConfigError, VerificationError
from prunekit.latency.measure import LatencyConfig, LatencyStats, compare_latency

__all__ = ["OnnxCheck", "ort_latency", "ort_outputs", "ort_session", "to_onnx", "verify_onnx"]

ORT_TOL = 1e-4  # ORT vs PyTorch, max |Δ| / max |y| (float32 reassociation is ~1e-6)


def _require(module: str, extra: str = "onnx") -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise ConfigError(
            f"this needs {module!r}, part of the {extra!r} extra: pip install 'prunekit[{extra}]'"
        ) from None


@dataclass
class OnnxCheck:
    """What :func:`to_onnx` verified.

    Attributes:
        path: the ONNX file.
        max_rel_diff: largest relative difference ORT vs PyTorch over the checked batches.
        batch_sizes: batch sizes checked (two with a dynamic batch axis).
        fold: the BatchNorm fold record when folding was asked for.
    """

    path: Path
    max_rel_diff: float
    batch_sizes: list[int]
    fold: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def _args(inputs: Any) -> tuple[Any, ...]:
    return inputs if isinstance(inputs, tuple) else (inputs,)


def _names(n: int) -> list[str]:
    return [f"input{i}" if i else "input" for i in range(n)]


def to_onnx(
    model: nn.Module,
    inputs: Any,
    path: str | os.PathLike[str],
    *,
    opset: int = 17,
    dynamic_batch: bool = True,
    fold_bn: bool = False,
    verify: bool = True,
    tol: float = ORT_TOL,
) -> OnnxCheck:
    """Export ``model`` (eval mode) to ONNX atomically, validate it and check it in onnxruntime.

    Args:
        model: the model (left unchanged: folding, and swapping each module that has a
            ``deploy_module()`` — e.g. :class:`~prunekit.versatile.VersatileConv2d` — for
            the standard layer it returns, work on a copy).
        inputs: example inputs (tensor or tuple of tensors).
        path: output ``.onnx`` file.
        opset: ONNX opset version.
        dynamic_batch: make the batch dimension dynamic (checked with a second batch size).
        fold_bn: fold conv/linear + BatchNorm pairs first (:func:`prunekit.fold.fold_bn`).
        verify: run the file in onnxruntime and compare with PyTorch.
        tol: largest accepted relative difference.

    Returns:
        An :class:`OnnxCheck`.

    Raises:
        VerificationError: ORT's outputs differ from PyTorch's by more than ``tol`` (no file
            is left behind then).
        ConfigError: ``onnx``/``onnxruntime`` are not installed.
    """
    onnx = _require("onnx")
    args = _args(inputs)
    src = _deployable(model)
    record = None
    if fold_bn:
        from prunekit.fold import fold_bn as _fold

        src = copy.deepcopy(model) if src is model else src
        record = _fold(src, inputs)
    src.eval()
    names = _names(len(args))
    axes = {n: {0: "batch"} for n in names} if dynamic_batch else None
    target = Path(path)
    with atomic_path(target) as tmp:
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated but needs no extra packages and handles
            # every model prunekit produces (ordinary layers only).
            warnings.simplefilter("ignore")
            torch.onnx.export(src, args, str(tmp), dynamo=False, opset_version=opset,
                              input_names=names, dynamic_axes=axes)  # fmt: skip
        onnx.checker.check_model(onnx.load(str(tmp)))
        diff, sizes = (verify_onnx(tmp, model, inputs, dynamic_batch=dynamic_batch, tol=tol)
                       if verify else (float("nan"), []))  # fmt: skip
    return OnnxCheck(target, diff, sizes, record)


def _deployable(model: nn.Module) -> nn.Module:
    """``model``, or a copy of it in which every module with a ``deploy_module()`` method is
    replaced by the standard layer that method returns (it computes the same function; ONNX
    then holds one ordinary op instead of the weight-building graph behind it)."""
    paths = [
        p for p, m in model.named_modules() if p and callable(getattr(m, "deploy_module", None))
    ]
    if not paths:
        return model
    out = copy.deepcopy(model)
    for path in paths:
        parent, _, name = path.rpartition(".")
        holder = out.get_submodule(parent) if parent else out
        setattr(holder, name, getattr(holder, name).deploy_module())
    return out


def ort_session(path: str | os.PathLike[str], *, threads: int | None = None) -> Any:
    """An onnxruntime CPU inference session with ``threads`` intra-op threads."""
    ort = _require("onnxruntime")
    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # No spin-waiting threads: several sessions are timed interleaved (and machines are shared);
    # idle sessions spinning on the cores would slow whichever one is being timed.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _feeds(session: Any, inputs: Any) -> dict[str, np.ndarray]:
    names = [i.name for i in session.get_inputs()]
    return {n: t.detach().cpu().numpy() for n, t in zip(names, _args(inputs))}


def ort_outputs(session: Any, inputs: Any) -> list[np.ndarray]:
    """Run ``session`` on PyTorch ``inputs``; the outputs as numpy arrays."""
    return [np.asarray(o) for o in session.run(None, _feeds(session, inputs))]


def _rel_diff(ref: list[np.ndarray], got: list[np.ndarray]) -> float:
    if [r.shape for r in ref] != [g.shape for g in got]:
        return float("inf")
    scale = max((float(np.abs(r).max()) for r in ref if r.size), default=0.0) or 1.0
    return (
        max((float(np.abs(r - g).max()) for r, g in zip(ref, got) if r.size), default=0.0) / scale
    )


def _torch_outputs(model: nn.Module, inputs: Any) -> list[np.ndarray]:
    from prunekit.graph.tracer import iter_tensors

    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(*_args(inputs))
    finally:
        model.train(was)
    return [t.detach().float().cpu().numpy() for t in iter_tensors(out)]


def _rebatch(inputs: Any, n: int) -> Any:
    """The inputs with batch size ``n`` (repeating, then fresh noise so rows differ)."""
    out = []
    for t in _args(inputs):
        reps = [-(-n // t.shape[0])] + [1] * (t.dim() - 1)
        big = t.repeat(*reps)[:n].clone()
        if big.is_floating_point():
            big[t.shape[0] :] = torch.randn_like(big[t.shape[0] :]) * t.std() + t.mean()
        out.append(big)
    return tuple(out) if isinstance(inputs, tuple) else out[0]


def verify_onnx(
    path: str | os.PathLike[str],
    model: nn.Module,
    inputs: Any,
    *,
    dynamic_batch: bool = True,
    tol: float = ORT_TOL,
) -> tuple[float, list[int]]:
    """Largest relative difference between ORT running ``path`` and ``model`` in PyTorch.

    Returns:
        ``(max_rel_diff, batch sizes checked)``.

    Raises:
        VerificationError: above ``tol``.
    """
    sess = ort_session(path)
    batches = [inputs]
    if dynamic_batch:
        batches.append(_rebatch(inputs, _args(inputs)[0].shape[0] + 2))
    worst, sizes = 0.0, []
    for b in batches:
        worst = max(worst, _rel_diff(_torch_outputs(model, b), ort_outputs(sess, b)))
        sizes.append(int(_args(b)[0].shape[0]))
    if worst > tol:
        raise VerificationError(
            f"onnxruntime's outputs differ from PyTorch's by {worst:.2e} (> {tol:g}) on batch "
            f"sizes {sizes}; the ONNX file was not written. Please report this model."
        )
    return worst, sizes


def ort_latency(
    paths: dict[str, str | os.PathLike[str]], inputs: Any, config: LatencyConfig | None = None
) -> dict[str, LatencyStats]:
    """ORT latency of several ONNX files on the same inputs, timed interleaved.

    Args:
        paths: name -> ONNX file (e.g. ``{"dense": ..., "pruned": ...}``).
        inputs: PyTorch example inputs.
        config: timing settings (``threads`` sets ORT's intra-op threads).

    Returns:
        name -> :class:`~prunekit.latency.LatencyStats` (device ``"ort-cpu"``).
    """
    cfg = config or LatencyConfig()
    runs = {}
    for name, p in paths.items():
        sess = ort_session(p, threads=cfg.threads)
        feeds = _feeds(sess, inputs)
        runs[name] = lambda sess=sess, feeds=feeds: sess.run(None, feeds)
    stats = compare_latency(runs, None, LatencyConfig(
        warmup=cfg.warmup, repeats=cfg.repeats, threads=cfg.threads, device="cpu"))  # fmt: skip
    for s in stats.values():
        s.device = "ort-cpu"
    return stats
