"""Correctness checks: a physically pruned model must compute what its soft mask computes."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from prunekit.graph.tracer import iter_tensors
from prunekit.plan import PruningPlan
from prunekit.surgery import apply_plan


def _outputs(model: nn.Module, inputs: Any) -> list[torch.Tensor]:
    with torch.no_grad():
        if isinstance(inputs, dict):
            out = model(**inputs)
        else:
            out = model(*(inputs if isinstance(inputs, tuple) else (inputs,)))
        return [t.float() for t in iter_tensors(out)]


def max_rel_diff(a: nn.Module, b: nn.Module, inputs: Any) -> float:
    """max |a(x) - b(x)| / max |a(x)| over all outputs, eval mode."""
    a.eval()
    b.eval()
    oa, ob = _outputs(a, inputs), _outputs(b, inputs)
    if [t.shape for t in oa] != [t.shape for t in ob]:
        return float("inf")
    scale = max((t.abs().max().item() for t in oa), default=0.0) or 1.0
    return max(((x - y).abs().max().item() for x, y in zip(oa, ob)), default=0.0) / scale


def soft_copy(model: nn.Module, plan: PruningPlan) -> nn.Module:
    """A deep copy of ``model`` with the plan applied softly (removed entries zeroed)."""
    return apply_plan(copy.deepcopy(model), plan, soft=True)


def bn_zero_copy(model: nn.Module, plan: PruningPlan) -> nn.Module:
    """Independent reference: zero only the normalisation scale and shift of removed channels.

    On models where every pruned channel passes a BatchNorm, this silences the channel exactly
    as removing it does, without relying on the soft mode's own bookkeeping.
    """
    ref = copy.deepcopy(model)
    norms = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    with torch.no_grad():
        for name, dims in plan.tensors.items():
            path, _, attr = name.rpartition(".")
            mod = ref.get_submodule(path) if path else ref
            if isinstance(mod, norms) and attr in ("weight", "bias"):
                p = getattr(mod, attr)
                gone = sorted(set(range(p.shape[0])) - set(dims[0]))
                p[gone] = 0.0
    return ref
