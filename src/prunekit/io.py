"""Save and load pruned models without pickle.

A saved model is a folder:

* ``model.safetensors`` — the weights;
* ``spec.json`` — how to build the base model (``{"model": "torchvision:resnet18",
  "kwargs": {...}}``), the format version and the SHA-256 of the weights file;
* ``plans.json`` — the pruning plans applied to the base model, in order.

:func:`load` rebuilds the base model from the spec, replays the plans with
:func:`~prunekit.surgery.apply_plan`, and loads the weights strictly. Every file is written
atomically (temp file + ``os.replace``), ``spec.json`` last, so a kill never leaves a folder
that loads wrongly.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from prunekit._fileio import atomic_path, atomic_write_text
from prunekit.errors import CheckpointError, PlanError, PrunekitError
from prunekit.models import build_model
from prunekit.plan import PruningPlan
from prunekit.surgery import apply_plan

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
    spec: dict[str, Any] | str,
    plans: list[PruningPlan] | None = None,
) -> Path:
    """Save ``model`` as safetensors + JSON.

    Args:
        model: the (pruned) model.
        out_dir: target folder (created).
        spec: model spec string or ``{"model": spec, "kwargs": {...}}`` building the *unpruned*
            base model.
        plans: plans applied to the base model; default: those recorded on the model by
            :func:`~prunekit.surgery.apply_plan` (``model.prunekit_plans``).

    Returns:
        The folder.

    Example:
        >>> save(pruned, "out/resnet18-p50", "torchvision:resnet18")
        >>> model = load("out/resnet18-p50")
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec_d = {"model": spec, "kwargs": {}} if isinstance(spec, str) else dict(spec)
    if "model" not in spec_d:
        raise CheckpointError(
            "spec must name the base model, e.g. {'model': 'torchvision:resnet18'}"
        )
    plans = list(getattr(model, "prunekit_plans", [])) if plans is None else list(plans)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(out / WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})
        digest = _sha256(tmp)
    atomic_write_text(out / PLANS, json.dumps([p.to_dict() for p in plans], indent=1))
    meta = {
        "format": FORMAT,
        "model": spec_d["model"],
        "kwargs": spec_d.get("kwargs", {}),
        "sha256": digest,
        "torch": torch.__version__,
    }
    atomic_write_text(out / SPEC, json.dumps(meta, indent=1, sort_keys=True))
    return out


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


def read_plans(path: str | Path) -> list[PruningPlan]:
    """The plans of a saved model folder."""
    p = Path(path) / PLANS
    if not p.exists():
        return []
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{p} is corrupt ({exc}); re-save the model") from None
    if not isinstance(data, list):
        raise CheckpointError(f"{p} must hold a list of plans")
    try:
        return [PruningPlan.from_dict(d) for d in data]
    except PlanError as exc:
        raise CheckpointError(f"{p}: {exc}; re-save the model") from None


def load(path: str | Path, *, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model saved by :func:`save` (no pickle involved).

    Args:
        path: the folder.
        map_location: device for the weights.

    Returns:
        The model in eval mode, with ``prunekit_plans`` and ``prunekit_spec`` attributes.
    """
    path = Path(path)
    spec = read_spec(path)
    weights = path / WEIGHTS
    if not weights.exists():
        raise CheckpointError(f"{weights} is missing; the folder is incomplete, re-save the model")
    if _sha256(weights) != spec.get("sha256"):
        raise CheckpointError(
            f"{weights} does not match its checksum in {SPEC} (corrupt or replaced)"
        )
    model = build_model(spec["model"], **spec.get("kwargs", {}))
    for plan in read_plans(path):
        try:
            apply_plan(model, plan)
        except PrunekitError as exc:
            raise CheckpointError(f"{path}: plan does not fit {spec['model']}: {exc}") from None
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"cannot read {weights}: {exc}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"{weights} does not fit the rebuilt model: {first}") from None
    model.prunekit_spec = spec  # type: ignore[assignment]
    return model.eval().to(map_location)
