"""Surgery: apply a :class:`~prunekit.plan.PruningPlan` to a model.

Physical mode slices every planned tensor (parameters and buffers, BatchNorm running stats
included) and updates module attributes through a registry of small handlers, one per layer
kind. Soft mode zeros the removed parameter entries instead, keeping shapes: the reference the
physically pruned model must match (norm weights also remember their kept channels, so
normalisation statistics leave the removed ones out: :mod:`prunekit.graph.norms`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from prunekit.device import threads_set
from prunekit.errors import ConfigError, PlanError
from prunekit.graph.norms import mark_kept
from prunekit.plan import PruningPlan
from prunekit.registry import for_class
from prunekit.sparse.masks import zero_pruned

# Handlers take Any: nn.Module attribute access is untyped (Tensor | Module) for mypy.
ModuleFix = Callable[[Any, dict[str, Any]], None]
#: module class (or its ``"module.QualName"``, for optional dependencies that prunekit does not
#: import) -> handler updating its attributes after its tensors were sliced.
MODULE_FIXES: dict[type[nn.Module] | str, ModuleFix] = {}


def register_module(
    cls: type[nn.Module] | str, *, override: bool = False
) -> Callable[[ModuleFix], ModuleFix]:
    """Register how to update a module's attributes after slicing (subclasses inherit).

    The handler gets the module and a dict with its original attributes (``"before"``). A class
    that already has a handler is refused unless ``override=True`` (two handlers for one layer
    kind would silently disagree). ``cls`` may be a ``"module.QualName"`` string, e.g.
    ``"timm.layers.attention.Attention"``, so registering never imports the library.
    """

    def deco(fn: ModuleFix) -> ModuleFix:
        if cls in MODULE_FIXES and not override:
            what = cls if isinstance(cls, str) else cls.__name__
            raise ConfigError(
                f"{what} already has a surgery handler; pass override=True to replace it"
            )
        MODULE_FIXES[cls] = fn
        return fn

    return deco


def _fix_for(mod: nn.Module) -> ModuleFix | None:
    return for_class(MODULE_FIXES, mod)


@register_module(nn.modules.conv._ConvNd)
def _conv(mod: Any, before: dict[str, Any]) -> None:
    w = mod.weight
    g0, cin0, cout0 = before["groups"], before["in_channels"], before["out_channels"]
    depthwise = g0 > 1 and g0 == cin0
    if mod.transposed:
        cin = w.shape[0]
        groups = cin if depthwise else g0
        cout = w.shape[1] * groups
    else:
        cout = w.shape[0]
        groups = cout // (cout0 // g0) if depthwise else g0
        cin = groups if depthwise else w.shape[1] * groups
    mod.in_channels, mod.out_channels, mod.groups = cin, cout, groups


@register_module(nn.Linear)
def _linear(mod: Any, before: dict[str, Any]) -> None:
    mod.out_features, mod.in_features = mod.weight.shape


@register_module(nn.modules.batchnorm._NormBase)
def _norm(mod: Any, before: dict[str, Any]) -> None:
    ref = mod.weight if mod.weight is not None else mod.running_mean
    if ref is not None:
        mod.num_features = ref.shape[0]


@register_module(nn.GroupNorm)
def _group_norm(mod: Any, before: dict[str, Any]) -> None:
    if mod.weight is not None:
        g0, c0, c = before["num_groups"], before["num_channels"], mod.weight.shape[0]
        # one group stays one; otherwise whole groups were removed (prunekit.graph.norms)
        mod.num_groups = 1 if g0 == 1 else c // (c0 // g0)
        mod.num_channels = c


@register_module(nn.LayerNorm)
@register_module(nn.RMSNorm)
def _layer_norm(mod: Any, before: dict[str, Any]) -> None:
    if mod.weight is not None:
        mod.normalized_shape = tuple(mod.weight.shape)


@register_module(nn.PReLU)
def _prelu(mod: Any, before: dict[str, Any]) -> None:
    mod.num_parameters = mod.weight.numel()


@register_module(nn.Embedding)
def _embedding(mod: Any, before: dict[str, Any]) -> None:
    mod.embedding_dim = mod.weight.shape[1]


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, attr = name.rpartition(".")
    try:
        mod = model.get_submodule(path) if path else model
    except AttributeError:
        raise PlanError(
            f"plan names tensor {name!r}, but the model has no module {path!r}"
        ) from None
    if attr not in mod._parameters and attr not in mod._buffers:
        raise PlanError(f"plan names tensor {name!r}, which the model does not have")
    return mod, attr


def _check(model: nn.Module, plan: PruningPlan) -> None:
    for name, shape in plan.shapes.items():
        mod, attr = _owner(model, name)
        t: torch.Tensor | None = mod._parameters.get(attr)
        t = t if t is not None else mod._buffers.get(attr)
        if t is None or list(t.shape) != list(shape):
            got = None if t is None else list(t.shape)
            raise PlanError(
                f"plan was made for another model: tensor {name!r} has shape {got}, plan expects "
                f"{shape}. Re-trace this model and make a new plan."
            )


def _slice(t: torch.Tensor, dims: dict[int, list[int]]) -> torch.Tensor:
    out = t.detach()
    for d, idx in sorted(dims.items()):
        out = out.index_select(d, torch.tensor(idx, dtype=torch.long, device=t.device))
    if (
        t.dim() == 4
        and t.is_contiguous(memory_format=torch.channels_last)
        and not t.is_contiguous()
    ):
        return out.contiguous(memory_format=torch.channels_last)
    return out.contiguous()


def apply_plan(model: nn.Module, plan: PruningPlan, *, soft: bool = False) -> nn.Module:
    """Prune ``model`` in place according to ``plan``.

    Args:
        model: the model the plan was made for (checked by tensor shapes).
        plan: the plan.
        soft: if True, zero the removed parameter entries instead of removing them.

    Returns:
        The same model object, with smaller ordinary layers (or zeroed entries). dtype, device,
        memory format, ``requires_grad`` and train/eval mode are preserved. Optimizers built
        before surgery hold stale parameters: build them afterwards.

    Example:
        >>> apply_plan(model, make_plan(graph, scores, ratio=0.5))
    """
    _check(model, plan)
    with threads_set(1):  # hundreds of small ops: threads only add overhead (10x under load)
        if soft:
            _zero(model, plan)
        else:
            _slice_all(model, plan)
    return model


def _touched(model: nn.Module, plan: PruningPlan) -> list[tuple[nn.Module, dict[str, Any]]]:
    """Modules owning a planned tensor, and their ancestors that have a handler (an attention
    block's head count lives in the block, its tensors in child layers), with their attributes
    from before."""
    owners = {name.rpartition(".")[0] for name in plan.tensors}
    out = []
    for path, mod in model.named_modules():
        above = not path or any(o.startswith(f"{path}.") for o in owners)
        if path in owners or (above and _fix_for(mod) is not None):
            out.append((mod, {k: v for k, v in vars(mod).items() if not k.startswith("_")}))
    return out


def _slice_all(model: nn.Module, plan: PruningPlan) -> None:
    touched = _touched(model, plan)
    for name, dims in plan.tensors.items():
        mod, attr = _owner(model, name)
        if attr in mod._parameters:
            old: Any = mod._parameters[attr]
            assert old is not None
            mod._parameters[attr] = nn.Parameter(_slice(old, dims), requires_grad=old.requires_grad)
        else:
            buf = mod._buffers[attr]
            assert buf is not None
            mod._buffers[attr] = _slice(buf, dims)
    for mod, before in touched:
        fix = _fix_for(mod)
        if fix is not None:
            fix(mod, before)


def _zero(model: nn.Module, plan: PruningPlan) -> None:
    params = dict(model.named_parameters(remove_duplicate=False))
    zero_pruned(params, plan.keep_masks(params))
    for name, dims in plan.tensors.items():
        p = params.get(name)
        if p is not None and p.dim() == 1 and p.is_floating_point():
            # a norm weight then normalises the kept channels only, as after removal
            mark_kept(p, dims[0])
