"""BatchNorm folding: conv/linear followed by BatchNorm becomes one layer.

In eval mode BatchNorm is an affine map per channel, ``y = s·(x - μ) + β`` with
``s = γ / sqrt(σ² + ε)`` (Ioffe & Szegedy 2015), so a conv or linear layer whose output feeds
*only* that BatchNorm can absorb it: ``W' = s·W`` (per output channel) and ``b' = s·(b - μ) + β``.
The BatchNorm is replaced by ``nn.Identity``. The arithmetic is done in float64 and cast back.

Which pairs fold is found by running the model once: a pair folds when the BatchNorm's input is
the very tensor the layer returned, nothing else reads that tensor, each module runs once, and
the BatchNorm uses running statistics. The folded model is then checked against the original on
the example inputs (a :class:`~prunekit.errors.VerificationError` if it differs).

:func:`fold_bn` returns a JSON record of the folded pairs; :func:`apply_fold_record` replays the
*structure* on a freshly built (and pruned) base model, so a saved folded model can be rebuilt
and its weights loaded strictly.

Example:
    >>> record = fold_bn(model, torch.randn(1, 3, 224, 224))
    >>> fresh = apply_fold_record(torchvision.models.resnet18(), record)
    >>> fresh.load_state_dict(model.state_dict())
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from prunekit.errors import PlanError, VerificationError
from prunekit.graph.tracer import iter_tensors
from prunekit.record import CONVERSIONS, Conversion
from prunekit.verify import max_rel_diff

__all__ = ["FOLD_FORMAT", "apply_fold_record", "fold_bn", "fold_conversion", "foldable_pairs"]

FOLD_FORMAT = "prunekit.fold_bn/1"
_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class _Readers(TorchFunctionMode):
    """Counts, per tensor, the torch calls that read it and return a tensor (metadata queries
    such as ``x.dim()`` or ``x.shape`` return none and are not reads)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: dict[int, int] = {}

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if any(True for _ in iter_tensors(out)):
            for t in iter_tensors((args, kwargs or {})):
                self.reads[id(t)] = self.reads.get(id(t), 0) + 1
        return out


def _run(model: nn.Module, inputs: Any) -> None:
    if isinstance(inputs, dict):
        model(**inputs)
    else:
        model(*(inputs if isinstance(inputs, tuple) else (inputs,)))


def foldable_pairs(model: nn.Module, example_inputs: Any) -> list[tuple[str, str]]:
    """``(layer path, batchnorm path)`` pairs of ``model`` that :func:`fold_bn` would fold.

    The model runs once in eval mode (no grad); it is not changed.
    """
    names = {id(m): n for n, m in model.named_modules()}
    calls: dict[str, int] = {}
    produced: dict[int, str] = {}  # id(output tensor) -> layer path
    fed: list[tuple[str, int]] = []  # (bn path, id(its input))
    keep: list[Any] = []  # holds the traced tensors so their ids are not reused
    readers = _Readers()

    def post(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        n = names[id(mod)]
        calls[n] = calls.get(n, 0) + 1
        keep.append(out)
        if isinstance(mod, _LAYERS) and isinstance(out, torch.Tensor):
            produced[id(out)] = n
            readers.reads[id(out)] = 0  # a new tensor: reads counted so far were a dead one's
        if isinstance(mod, _NORMS) and args and isinstance(args[0], torch.Tensor):
            fed.append((n, id(args[0])))
            keep.append(args[0])

    mods = [m for m in model.modules() if isinstance(m, (*_LAYERS, *_NORMS))]
    hooks = [m.register_forward_hook(post) for m in mods]
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), readers:
            _run(model, example_inputs)
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    pairs = []
    for bn_name, tid in fed:
        layer = produced.get(tid)
        bn = model.get_submodule(bn_name)
        if (
            layer is not None
            and readers.reads.get(tid, 0) == 1
            and calls.get(layer) == 1
            and calls.get(bn_name) == 1
            and _compatible(model.get_submodule(layer), bn)
        ):
            pairs.append((layer, bn_name))
    return pairs


def _compatible(layer: nn.Module, bn: Any) -> bool:
    """Running statistics present and one BatchNorm channel per layer output channel."""
    if bn.running_mean is None or bn.running_var is None:
        return False
    out = layer.out_channels if isinstance(layer, nn.modules.conv._ConvNd) else layer.out_features
    return bool(out == bn.num_features)


def _set(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, new)


def _fold_one(layer: Any, bn: Any) -> None:
    """Fold ``bn`` into ``layer`` in place (float64 arithmetic, cast back)."""
    w = layer.weight
    scale = bn.weight.double() if bn.weight is not None else torch.ones_like(bn.running_var.double())
    scale = scale / torch.sqrt(bn.running_var.double() + bn.eps)
    shift = bn.bias.double() if bn.bias is not None else torch.zeros_like(scale)
    b0 = layer.bias.double() if layer.bias is not None else torch.zeros_like(scale)
    with torch.no_grad():
        new_w = w.double() * scale.reshape(-1, *([1] * (w.dim() - 1)))
        layer.weight.copy_(new_w.to(w.dtype))
        new_b = ((b0 - bn.running_mean.double()) * scale + shift).to(w.dtype)
        if layer.bias is None:
            layer.bias = nn.Parameter(new_b, requires_grad=w.requires_grad)
        else:
            layer.bias.copy_(new_b)


def _add_bias(layer: Any) -> None:
    if layer.bias is None:
        w = layer.weight
        n = w.shape[0]
        layer.bias = nn.Parameter(torch.zeros(n, dtype=w.dtype, device=w.device),
                                  requires_grad=w.requires_grad)  # fmt: skip


def fold_bn(
    model: nn.Module, example_inputs: Any, *, check: bool = True, tol: float = 1e-5
) -> dict[str, Any]:
    """Fold every foldable conv/linear + BatchNorm pair of ``model``, in place.

    Args:
        model: the model (its BatchNorms must hold trained running statistics: folding bakes
            the eval-mode transform in).
        example_inputs: inputs to find the pairs and check the result on.
        check: compare the folded model's outputs with the original's.
        tol: largest accepted relative difference (max |Δ| / max |y|).

    Returns:
        The fold record: ``{"format": ..., "pairs": [{"layer": path, "norm": path}, ...],
        "max_rel_diff": d}`` (JSON-ready; replay it with :func:`apply_fold_record`).

    Raises:
        VerificationError: the folded model differs from the original by more than ``tol``
            (the model is left unchanged then).

    Example:
        >>> rec = fold_bn(model, x)
        >>> len(rec["pairs"])      # resnet18: 20 conv+BN pairs
    """
    pairs = foldable_pairs(model, example_inputs)
    record: dict[str, Any] = {"format": FOLD_FORMAT,
                              "pairs": [{"layer": a, "norm": b} for a, b in pairs]}  # fmt: skip
    if check:  # fold a copy first: the user's model changes only once the result is right
        work = _folded(copy.deepcopy(model), pairs)
        diff = max_rel_diff(model, work, example_inputs)
        record["max_rel_diff"] = diff
        if diff > tol:
            raise VerificationError(
                f"folding BatchNorm changed the outputs by {diff:.2e} (> {tol:g}); the model was "
                "left unfolded. Please report this model."
            )
    _folded(model, pairs)
    return record


def _folded(model: nn.Module, pairs: list[tuple[str, str]]) -> nn.Module:
    for layer, bn in pairs:
        _fold_one(model.get_submodule(layer), model.get_submodule(bn))
        _set(model, bn, nn.Identity())
    return model


def apply_fold_record(model: nn.Module, record: Mapping[str, Any]) -> nn.Module:
    """Replay a fold record's structure on ``model`` (e.g. a freshly built base model).

    Each recorded layer gets a bias (if it had none) and each recorded BatchNorm becomes
    ``nn.Identity``; the values come from the saved state dict loaded afterwards.

    Args:
        model: a model with the same module paths as the one folded (and the same pruning).
        record: what :func:`fold_bn` returned.

    Returns:
        The same model object.

    Raises:
        PlanError: the record is malformed or names modules the model lacks.
    """
    if not isinstance(record, Mapping) or record.get("format") != FOLD_FORMAT:
        raise PlanError(f"not a BatchNorm fold record (expected format {FOLD_FORMAT!r})")
    for p in record.get("pairs", []):
        try:
            layer, bn = model.get_submodule(p["layer"]), model.get_submodule(p["norm"])
        except (AttributeError, KeyError, TypeError):
            raise PlanError(f"fold record names {p!r}, which this model does not have") from None
        if not isinstance(layer, _LAYERS) or not isinstance(bn, _NORMS):
            raise PlanError(
                f"fold record pairs {p['layer']!r} ({type(layer).__name__}) with {p['norm']!r} "
                f"({type(bn).__name__}); expected a conv/linear layer and a BatchNorm"
            )
        _add_bias(layer)
        _set(model, p["norm"], nn.Identity())
    return model


def fold_conversion(record: Mapping[str, Any]) -> Conversion:
    """The :class:`~prunekit.record.Conversion` step of a :func:`fold_bn` record (for save).

    Example:
        >>> step = fold_conversion(fold_bn(model, x))
        >>> prunekit.save(model, "out/folded", record.then(step))
    """
    return Conversion("fold_bn", dict(record), module=__name__)


def _replay(model: nn.Module, data: Mapping[str, Any]) -> None:
    apply_fold_record(model, data)


CONVERSIONS.add("fold_bn", _replay)
