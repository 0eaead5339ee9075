"""Save and load pruned models without pickle.

A saved model is a folder:

* ``model.safetensors`` — the weights;
* ``spec.json`` — how to build the base model (``{"model": "torchvision:resnet18",
  "kwargs": {...}}``), the format version and the SHA-256 of the weights file;
* ``plans.json`` — the steps applied to the base model, in order: pruning plans and structural
  conversions (:mod:`prunekit.record`).

:func:`save` first checks that the base model plus the steps has exactly the model's tensors
(so a folder that would not load is never written); :func:`load` rebuilds the base model from
the spec, replays the steps, and loads the weights strictly. Every file is written
atomically (temp file + ``os.replace``), ``spec.json`` last, so a kill never leaves a folder
that loads wrongly.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from prunekit._fileio import atomic_path, atomic_write_text
from prunekit.errors import CheckpointError, PlanError, PrunekitError
from prunekit.record import ModelRecord, Step, step_from_dict, step_to_dict

FORMAT = "prunekit.model/1"
WEIGHTS, SPEC, PLANS = "model.safetensors", "spec.json", "plans.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save(
    model: nn.Module,
    out_dir: str | Path,
    spec: str | Mapping[str, Any] | ModelRecord,
    steps: Sequence[Step] | None = None,
) -> Path:
    """Save ``model`` as safetensors + JSON, after checking the folder will load.

    Args:
        model: the (pruned, converted) model.
        out_dir: target folder (created).
        spec: how the model was made: a :class:`~prunekit.record.ModelRecord`, or the base
            model's spec (``"torchvision:resnet18"`` or ``{"model": ..., "kwargs": {...}}``)
            together with ``steps``.
        steps: the plans/conversions applied to the base model, in order (with a plain spec).

    Returns:
        The folder.

    Raises:
        CheckpointError: the base model plus the steps does not have the model's tensors (e.g.
            a plan was left out), so the folder could not be loaded back.

    Example:
        >>> result = prune(model, x, PruneConfig(ratio=0.5))
        >>> save(model, "out/resnet18-p50", "torchvision:resnet18", [result.plan])
        >>> model = load("out/resnet18-p50")
    """
    record = ModelRecord.of(spec)
    if steps is not None:
        if isinstance(spec, ModelRecord):
            raise CheckpointError("give the steps inside the ModelRecord or beside a spec, not both")
        record = record.then(*steps)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    _check_rebuilds(record, state)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})
        digest = _sha256(tmp)
    atomic_write_text(out / PLANS, json.dumps([step_to_dict(s) for s in record.steps], indent=1))
    meta = {
        "format": FORMAT,
        "model": record.model,
        "kwargs": dict(record.kwargs),
        "sha256": digest,
        "torch": torch.__version__,
    }
    atomic_write_text(out / SPEC, json.dumps(meta, indent=1, sort_keys=True))
    return out


def _rebuild(record: ModelRecord) -> nn.Module:
    """The record's model without computing weights (meta tensors) where the builder allows."""
    try:
        with torch.device("meta"):
            return record.build()
    except PrunekitError:
        raise
    except Exception:  # a builder that needs real tensors (e.g. loads weights): build for real
        return record.build()


def _check_rebuilds(record: ModelRecord, state: Mapping[str, torch.Tensor]) -> None:
    try:
        expected = {k: tuple(v.shape) for k, v in _rebuild(record).state_dict().items()}
    except PrunekitError as exc:
        raise CheckpointError(f"cannot rebuild {record.model} with its steps: {exc}") from None
    have = {k: tuple(v.shape) for k, v in state.items()}
    if have == expected:
        return
    extra, missing = sorted(set(have) - set(expected)), sorted(set(expected) - set(have))
    wrong = [k for k in have if k in expected and have[k] != expected[k]]
    if wrong:
        what = f"{wrong[0]} has shape {list(have[wrong[0]])}, the rebuilt one {list(expected[wrong[0]])}"
    else:
        what = f"tensors {(extra or missing)[:3]} are only in the {'model' if extra else 'rebuilt model'}"
    raise CheckpointError(
        f"the model is not {record.model} + its {len(record.steps)} recorded step(s): {what}; "
        "pass every plan/conversion applied to the base model (e.g. save(model, dir, spec, "
        "[result.plan])), and bake masks first (prunekit.sparse.bake)"
    )


def read_spec(path: str | Path) -> dict[str, Any]:
    """The ``spec.json`` of a saved model folder, validated."""
    p = Path(path) / SPEC
    if not p.exists():
        raise CheckpointError(
            f"{path} is not a prunekit model folder (no {SPEC}); save one with prunekit.save"
        )
    try:
        spec = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{p} is corrupt ({exc}); re-save the model") from None
    if not isinstance(spec, dict) or spec.get("format") != FORMAT or "model" not in spec:
        raise CheckpointError(f"{p} is not a {FORMAT} spec; re-save the model with this prunekit")
    return spec


def read_steps(path: str | Path) -> list[Step]:
    """The steps (plans and conversions) of a saved model folder."""
    p = Path(path) / PLANS
    if not p.exists():
        return []
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{p} is corrupt ({exc}); re-save the model") from None
    if not isinstance(data, list):
        raise CheckpointError(f"{p} must hold a list of steps")
    try:
        return [step_from_dict(d) for d in data]
    except PlanError as exc:
        raise CheckpointError(f"{p}: {exc}; re-save the model") from None


def load_record(path: str | Path) -> ModelRecord:
    """How the model saved in ``path`` was made (base spec + steps), without loading weights.

    Example:
        >>> record = load_record("out/resnet18-p50")
        >>> save(finetuned, "out/resnet18-p50-ft", record)
    """
    spec = read_spec(path)
    return ModelRecord(spec["model"], dict(spec.get("kwargs", {})), tuple(read_steps(path)))


def load(path: str | Path, *, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model saved by :func:`save` (no pickle involved).

    Args:
        path: the folder.
        map_location: device for the weights.

    Returns:
        The model in eval mode (:func:`load_record` tells how it was made).
    """
    path = Path(path)
    record = load_record(path)
    weights = path / WEIGHTS
    if not weights.exists():
        raise CheckpointError(f"{weights} is missing; the folder is incomplete, re-save the model")
    if _sha256(weights) != read_spec(path).get("sha256"):
        raise CheckpointError(
            f"{weights} does not match its checksum in {SPEC} (corrupt or replaced)"
        )
    try:
        model = record.build()
    except PrunekitError as exc:
        raise CheckpointError(f"{path}: steps do not fit {record.model}: {exc}") from None
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"cannot read {weights}: {exc}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"{weights} does not fit the rebuilt model: {first}") from None
    return model.eval().to(map_location)
