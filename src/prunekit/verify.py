"""Correctness checks: a physically pruned model must compute what its soft mask computes.

:func:`check_plan` is the one check every API path that performs surgery runs
(:func:`prunekit.pipeline.prune`, :func:`prunekit.methods.stages.prune_model`,
:meth:`prunekit.structured.StructuredPruner.finalize`, the CLI): a model is never returned
pruned without it unless the caller opts out.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from prunekit.device import threads_set
from prunekit.errors import VerificationError, first_line
from prunekit.graph.tracer import iter_tensors
from prunekit.plan import PruningPlan
from prunekit.surgery import apply_plan

#: relative tolerance of :func:`check_plan` (float32 reassociation noise is ~1e-6)
TOLERANCE = 1e-4


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


def redraw_degenerate(model: nn.Module, seed: int = 0, std: float = 0.02) -> int:
    """Redraw every constant floating parameter around its value; returns how many.

    Zero-initialised heads, biases and norm shifts, and 1e-6 layer scales make a model's output
    (nearly) blind to its channels: a ViT with a zero head outputs 0 whatever the pruning did,
    so a soft-vs-pruned comparison on it cannot fail. Only for checking copies: the draw uses
    its own generator, never the global RNG.
    """
    gen = torch.Generator().manual_seed(seed)
    n = 0
    with torch.no_grad():
        for p in model.parameters():
            if not p.is_floating_point() or p.numel() == 0:
                continue
            first = p.detach().reshape(-1)[0]
            if not bool(torch.isfinite(first)) or not bool((p == first).all()):
                continue
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            p.add_((noise * (std + 0.1 * float(first.abs()))).to(p.device, p.dtype))
            n += 1
    return n


def _on_device(inputs: Any, model: nn.Module) -> Any:
    dev = next((t.device for t in model.parameters()), None)
    if dev is None:
        return inputs
    if isinstance(inputs, torch.Tensor):
        return inputs.to(dev)
    if isinstance(inputs, (list, tuple)):
        return type(inputs)(_on_device(x, model) for x in inputs)
    if isinstance(inputs, dict):
        return {k: _on_device(v, model) for k, v in inputs.items()}
    return inputs


@contextlib.contextmanager
def _where(model: nn.Module, stack: list[str]) -> Iterator[None]:
    """Keep the path of the module running (for the message of a failing forward)."""

    def enter(path: str) -> Any:
        return lambda mod, args: stack.append(path)  # returns None: inputs unchanged

    def leave(mod: nn.Module, args: Any, out: Any) -> None:
        stack.pop()

    handles = []
    for path, mod in model.named_modules():
        handles.append(mod.register_forward_pre_hook(enter(path)))
        handles.append(mod.register_forward_hook(leave))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _run(model: nn.Module, inputs: Any, what: str) -> list[torch.Tensor]:
    stack: list[str] = []
    try:
        with _where(model, stack):
            return _outputs(model, inputs)
    except Exception as exc:
        where = stack[-1] if stack and stack[-1] else "<model>"
        raise VerificationError(
            f"the {what} model does not run (in module {where!r}: {type(exc).__name__}: "
            f"{first_line(exc)}); the plan is inconsistent, please report this model, and pass "
            "the module to ignored_layers to work around it"
        ) from exc


def check_plan(
    model: nn.Module, plan: PruningPlan, inputs: Any, *, tol: float = TOLERANCE
) -> float:
    """Check that ``plan`` prunes ``model`` exactly: removing equals zeroing, on ``inputs``.

    ``model`` (dense, unchanged) is copied once; degenerate parameters of the copy are redrawn
    (:func:`redraw_degenerate`), the plan is applied softly, the copy is run, then the plan is
    applied physically to the same copy (it removes exactly the zeroed entries) and it is run
    again. Both in eval mode.

    Args:
        model: the dense model the plan was made for.
        plan: the plan.
        inputs: example inputs (a tensor, a tuple, or a dict of keyword inputs).
        tol: the largest allowed ``max |soft - pruned| / max |soft|``.

    Returns:
        The max relative difference.

    Raises:
        VerificationError: the pruned copy does not run, changes its output shapes, or differs
            by more than ``tol``.

    Example:
        >>> check_plan(model, plan, torch.randn(1, 3, 224, 224))
        2.1e-07
    """
    if not plan.tensors:
        return 0.0  # nothing is removed: the pruned model is the model
    with threads_set(1):  # many small copies: threads only add overhead (10x under load)
        work = copy.deepcopy(model).eval()
        redraw_degenerate(work)
    inputs = _on_device(inputs, work)
    with torch.random.fork_rng(devices=[]):  # the caller's RNG stream is left as it was
        soft = _run(apply_plan(work, plan, soft=True), inputs, "soft-masked")
        pruned = _run(apply_plan(work, plan), inputs, "pruned")
    if [t.shape for t in soft] != [t.shape for t in pruned]:
        raise VerificationError(
            f"pruning changed the output shapes {[tuple(t.shape) for t in soft]} -> "
            f"{[tuple(t.shape) for t in pruned]}; a model output was pruned, please report this"
        )
    scale = max((t.abs().max().item() for t in soft), default=0.0) or 1.0
    diff = max(((a - b).abs().max().item() for a, b in zip(soft, pruned)), default=0.0) / scale
    if not diff <= tol:
        raise VerificationError(
            f"the pruned model differs from its soft mask by {diff:.2e} (> {tol:g}); nothing was "
            "pruned. Please report this model; pass the modules involved to ignored_layers to "
            "work around it, or verify=False to skip this check"
        )
    return diff
