"""The deployment step in one call: ONNX (checked in onnxruntime), ORT latency dense vs pruned,
and optionally int8 with accuracy before/after on real data. Used by ``prunekit export``.

Example:
    >>> res = export_model(pruned, torch.randn(1, 1, 28, 28), "lenet5.onnx",
    ...                    ExportConfig(int8=True, calib="mnist:../shared/data/mnist-png.tar.gz"),
    ...                    dense=dense)
    >>> print(res.summary())
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from prunekit._fileio import atomic_write_text
from prunekit.errors import ConfigError
from prunekit.export import ORT_TOL, to_onnx
from prunekit.latency.measure import LatencyConfig, environment

__all__ = ["ExportConfig", "ExportResult", "export_model"]


@dataclass(frozen=True)
class ExportConfig:
    """Settings of :func:`export_model` (``None`` means the default).

    Attributes:
        opset: ONNX opset.
        fold_bn: fold conv/linear + BatchNorm pairs before export.
        verify: compare onnxruntime with PyTorch (error above ``tol``).
        tol: accepted relative difference.
        latency: time the files in onnxruntime (dense vs pruned, fp32 vs int8), interleaved.
        threads: ORT intra-op threads for timing (``None``: ORT's default).
        repeats: timed runs per file.
        int8: also write ``<name>.int8.onnx`` (static quantization).
        calib: dataset spec calibrating int8 (train split) and measuring accuracy (test split).
        calib_batches: calibration batches (of 32 samples).
        eval_batch: batch size for the accuracy runs.
    """

    opset: int = 17
    fold_bn: bool = False
    verify: bool = True
    tol: float = ORT_TOL
    latency: bool = True
    threads: int | None = None
    repeats: int = 30
    int8: bool = False
    calib: str | None = None
    calib_batches: int = 16
    eval_batch: int = 256

    def __post_init__(self) -> None:
        if self.int8 and self.calib is None:
            raise ConfigError("int8 export needs calibration data: calib='<dataset spec>'")


@dataclass
class ExportResult:
    """What :func:`export_model` wrote and measured (also saved as ``<name>.export.json``)."""

    onnx: str
    max_rel_diff: float | None
    batch_sizes: list[int]
    fold: dict[str, Any] | None = None
    ort_ms: dict[str, float] = field(default_factory=dict)
    ort_iqr_ms: dict[str, float] = field(default_factory=dict)
    int8: str | None = None
    accuracy: dict[str, float] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    def summary(self) -> str:
        """Human-readable lines."""
        lines = [f"wrote {self.onnx}"]
        if self.max_rel_diff is not None:
            lines.append(f"  onnxruntime vs PyTorch: max rel diff {self.max_rel_diff:.2e} "
                         f"(batch sizes {self.batch_sizes})")  # fmt: skip
        if self.fold:
            lines.append(f"  BatchNorm folded into {len(self.fold['pairs'])} layers")
        for k, v in self.ort_ms.items():
            lines.append(f"  ORT latency {k:<14} {v:8.3f} ms (IQR {self.ort_iqr_ms[k]:.3f})")
        base = self.ort_ms.get("dense")
        for k in ("pruned", "int8"):
            if base and self.ort_ms.get(k):
                lines.append(f"  speed-up {k} vs dense: {base / self.ort_ms[k]:.2f}x")
        if self.int8:
            lines.append(f"wrote {self.int8}")
        for k, v in self.accuracy.items():
            lines.append(f"  accuracy {k:<6} {v:.2%}")
        return "\n".join(lines)


def export_model(
    model: nn.Module,
    inputs: Any,
    path: str | os.PathLike[str],
    config: ExportConfig | None = None,
    *,
    dense: nn.Module | None = None,
) -> ExportResult:
    """Export ``model`` to ONNX, check it, time it against ``dense`` and optionally make int8.

    Args:
        model: the (pruned) model.
        inputs: example inputs (batch dimension first).
        path: the ``.onnx`` file to write.
        config: settings.
        dense: the unpruned model, for the ORT latency comparison (optional).

    Returns:
        An :class:`ExportResult`, also written as JSON beside the ONNX file.
    """
    cfg = config or ExportConfig()
    out = Path(path)
    check = to_onnx(model, inputs, out, opset=cfg.opset, fold_bn=cfg.fold_bn, verify=cfg.verify,
                    tol=cfg.tol)  # fmt: skip
    res = ExportResult(str(out), None if not cfg.verify else check.max_rel_diff,
                       check.batch_sizes, check.fold)  # fmt: skip
    files: dict[str, Any] = {"pruned" if dense is not None else "model": out}
    with tempfile.TemporaryDirectory(prefix="pk-export-") as tmp:
        if dense is not None and cfg.latency:
            files = {"dense": to_onnx(dense, inputs, Path(tmp) / "dense.onnx", opset=cfg.opset,
                                      fold_bn=cfg.fold_bn, verify=False).path, **files}  # fmt: skip
        if cfg.int8:
            _int8(res, out, cfg, files)
        if cfg.latency:
            from prunekit.export import ort_latency

            lat = LatencyConfig(warmup=5, repeats=cfg.repeats, threads=cfg.threads)
            stats = ort_latency(files, inputs, lat)
            res.ort_ms = {k: s.median_ms for k, s in stats.items()}
            res.ort_iqr_ms = {k: s.iqr_ms for k, s in stats.items()}
    res.env = environment(LatencyConfig(threads=cfg.threads))
    atomic_write_text(out.with_suffix(".export.json"), json.dumps(res.to_dict(), indent=1))
    return res


def _int8(res: ExportResult, fp32: Path, cfg: ExportConfig, files: dict[str, Any]) -> None:
    """Quantize, then measure fp32 and int8 accuracy on the test split of ``cfg.calib``."""
    from prunekit.data import TensorLoader, load_dataset
    from prunekit.quantize import calibration_batches, ort_accuracy, quantize_int8

    assert cfg.calib is not None
    int8 = fp32.with_name(fp32.stem + ".int8.onnx")
    quantize_int8(fp32, int8, calibration_batches(cfg.calib, n=cfg.calib_batches))
    res.int8 = str(int8)
    files["int8"] = int8
    test = TensorLoader(load_dataset(cfg.calib, "test"), cfg.eval_batch)
    res.accuracy = {"fp32": ort_accuracy(fp32, test, threads=cfg.threads),
                    "int8": ort_accuracy(int8, test, threads=cfg.threads)}  # fmt: skip
