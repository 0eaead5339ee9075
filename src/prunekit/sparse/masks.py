"""Unstructured (element-wise) weight masks built on :mod:`torch.nn.utils.parametrize`.

A mask is a boolean tensor of the parameter's shape; ``True`` keeps an entry, ``False`` prunes
it. :func:`apply_masks` registers a :class:`WeightMask` parametrization on the owning module, so

* ``module.weight`` is recomputed as ``where(mask, original, 0)`` on every access: pruned entries
  are exactly zero in every forward pass, and autograd sends them exactly zero gradient;
* the dense original stays untouched under ``module.parametrizations.weight.original`` (the same
  ``nn.Parameter`` object as before, so an optimizer built earlier keeps working), which lets
  :func:`remove_masks` undo the pruning;
* the mask lives as a buffer on the parametrization: it follows ``model.to(device)`` and is saved
  in ``model.state_dict()``, so a masked training run can be checkpointed and resumed.

Parameters are addressed by their *logical* names, the ones an unmasked model has
(``"features.0.weight"``), never by the ``parametrizations.…original`` names. To hand weights to
code that knows nothing about masks, use :func:`bake` (make the zeros permanent, drop the
parametrizations) or :func:`export_state_dict` (a plain state dict, the model stays masked).

Example:
    >>> masks = {"fc.weight": model.fc.weight.abs() > 0.01}
    >>> apply_masks(model, masks)
    >>> train(model)            # pruned entries stay exactly zero
    >>> bake(model)             # plain nn.Linear again, zeros kept
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from typing import cast

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from prunekit.errors import ConfigError

_PARAMETRIZATIONS = "parametrizations"


class WeightMask(nn.Module):
    """Parametrization ``w -> where(mask, w, 0)`` holding the boolean mask as a buffer.

    Args:
        mask: boolean tensor of the parametrized tensor's shape (``True`` = keep).
    """

    mask: Tensor

    def __init__(self, mask: Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.detach().to(torch.bool).clone())

    def forward(self, weight: Tensor) -> Tensor:
        # ``where`` (not ``weight * mask``) so that inf/NaN in a pruned entry still gives 0.
        return torch.where(
            self.mask, weight, torch.zeros((), dtype=weight.dtype, device=weight.device)
        )


def _plist(module: nn.Module, attr: str) -> parametrize.ParametrizationList:
    """The parametrization list of ``module.<attr>`` (typed for mypy)."""
    plists = cast(nn.ModuleDict, module.parametrizations)
    return cast(parametrize.ParametrizationList, plists[attr])


def _logical_tensors(model: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    """Map every logical parameter name to ``(owning module, attribute name)``, in model order."""
    found: dict[str, tuple[nn.Module, str]] = {}
    for mod_name, module in model.named_modules():
        if isinstance(module, parametrize.ParametrizationList):
            continue  # its ``original`` is reported under the parent's logical name below
        prefix = f"{mod_name}." if mod_name else ""
        # Parametrized tensors first: parametrize moves them out of ``_parameters``, and listing
        # them first keeps the usual ``weight, bias`` order of Conv/Linear layers.
        if parametrize.is_parametrized(module):
            for attr in module.parametrizations:
                found[prefix + attr] = (module, attr)
        for attr, param in module.named_parameters(recurse=False):
            if param is not None:
                found[prefix + attr] = (module, attr)
    return found


def parameter_names(model: nn.Module) -> list[str]:
    """Logical names of all parameters (masked ones under their unmasked names).

    Args:
        model: any module, masked or not.

    Returns:
        Names such as ``["conv1.weight", "conv1.bias", ...]`` in ``named_parameters`` order.
    """
    return list(_logical_tensors(model))


def default_param_names(model: nn.Module) -> list[str]:
    """Names of the tensors pruned by default: the weights of Conv*/Linear layers.

    Biases and normalisation parameters are left out: they are a tiny share of the parameters and
    pruning them hurts accuracy for almost no compression (Han et al. 2015 prune weights only).
    """
    names = []
    for mod_name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
            names.append(f"{mod_name}.weight" if mod_name else "weight")
    return names


def select_params(model: nn.Module, params: Iterable[str] | None = None) -> list[str]:
    """Resolve a selection of parameters to logical names.

    Args:
        model: the model.
        params: exact names or glob patterns (``"features.*.weight"``, ``"fc?.weight"``);
            ``None`` selects the default (Conv/Linear weights, see :func:`default_param_names`).

    Returns:
        Matching names, in model order, without duplicates.

    Raises:
        ConfigError: a name or pattern matches no parameter.
    """
    available = parameter_names(model)
    if params is None:
        return default_param_names(model)
    if isinstance(params, str):
        params = [params]
    chosen: set[str] = set()
    for pattern in params:
        hits = [n for n in available if n == pattern or fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise ConfigError(
                f"parameter name or pattern {pattern!r} matches nothing in the model; "
                f"names look like {available[:4]} (see prunekit.sparse.parameter_names(model))"
            )
        chosen.update(hits)
    return [n for n in available if n in chosen]


def _lookup(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    tensors = _logical_tensors(model)
    if name not in tensors:
        raise ConfigError(
            f"model has no parameter {name!r}; use a name from prunekit.sparse.parameter_names(model)"
        )
    return tensors[name]


def stored_tensor(model: nn.Module, name: str) -> Tensor:
    """The tensor that actually holds ``name``'s values: the dense original if it is masked.

    Writing into it in place (under ``torch.no_grad()``) changes the parameter without touching
    its mask; used to snapshot and restore parameters exactly.
    """
    module, attr = _lookup(model, name)
    if parametrize.is_parametrized(module, attr):
        return _plist(module, attr).original
    return getattr(module, attr)


def _own_class(module: nn.Module) -> None:
    """Give a parametrized ``module`` a class of its own before its parametrizations change.

    ``torch.nn.utils.parametrize`` keeps each parametrized tensor as a property on a generated
    ``Parametrized<Layer>`` class, and ``copy.deepcopy`` gives the copy that *same* class, so
    adding or removing a parametrization on one copy (``delattr(cls, "weight")``) would change
    the other too (``bake`` on a copy broke the original: no attribute 'weight'). A private
    class with the same bases and properties decouples them; the base is unchanged, so
    ``remove_parametrizations`` still restores the plain layer class.
    """
    cls = type(module)
    if not parametrize.is_parametrized(module):
        return
    body = {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")}
    module.__class__ = type(cls.__name__, cls.__bases__, body)


def _mask_module(module: nn.Module, attr: str) -> WeightMask | None:
    """The WeightMask on ``module.<attr>``, or None when that tensor is not masked."""
    if not parametrize.is_parametrized(module, attr):
        return None
    for p in _plist(module, attr):
        if isinstance(p, WeightMask):
            return p
    return None


def _check_mask(name: str, mask: Tensor, target: Tensor) -> Tensor:
    if not isinstance(mask, Tensor):
        raise ConfigError(f"mask for {name!r} must be a torch.Tensor, got {type(mask).__name__}")
    if tuple(mask.shape) != tuple(target.shape):
        raise ConfigError(
            f"mask for {name!r} has shape {tuple(mask.shape)} but the parameter has "
            f"{tuple(target.shape)}; build the mask from that parameter"
        )
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ConfigError(f"mask for {name!r} must be boolean (or only 0/1 values)")
        mask = mask != 0
    return mask.to(target.device)


def apply_masks(model: nn.Module, masks: Mapping[str, Tensor]) -> nn.Module:
    """Mask parameters in place; an already masked parameter gets its mask replaced.

    Args:
        model: the model (modified in place).
        masks: logical parameter name -> boolean tensor of the parameter's shape, ``True`` = keep.

    Returns:
        ``model`` (for chaining).

    Raises:
        ConfigError: unknown name, wrong shape, non-boolean mask, or the tensor already carries a
            parametrization that is not a prunekit mask.

    Example:
        >>> apply_masks(model, {"fc1.weight": model.fc1.weight.abs() > 0.05})
    """
    checked = []
    for name, mask in masks.items():  # validate everything before touching the model
        module, attr = _lookup(model, name)
        current = getattr(module, attr)
        existing = _mask_module(module, attr)
        if parametrize.is_parametrized(module, attr) and existing is None:
            raise ConfigError(
                f"{name!r} already has a parametrization that is not a prunekit mask; "
                "remove it (torch.nn.utils.parametrize.remove_parametrizations) before masking"
            )
        checked.append((module, attr, existing, _check_mask(name, mask, current)))
    for module, attr, existing, mask in checked:
        if existing is not None:
            existing.mask.copy_(mask)
        else:
            _own_class(module)  # the new property must not appear on a deepcopy's shared class
            parametrize.register_parametrization(module, attr, WeightMask(mask))
    return model


def masked_param_names(model: nn.Module) -> list[str]:
    """Logical names of the parameters that currently carry a mask."""
    return [n for n, (m, a) in _logical_tensors(model).items() if _mask_module(m, a) is not None]


def get_masks(model: nn.Module) -> dict[str, Tensor]:
    """Copies of the current masks, keyed by logical parameter name.

    Returns:
        ``{name: BoolTensor}`` for every masked parameter (empty if none is masked).
    """
    out = {}
    for name, (module, attr) in _logical_tensors(model).items():
        wm = _mask_module(module, attr)
        if wm is not None:
            out[name] = wm.mask.detach().clone()
    return out


def _remove(model: nn.Module, params: Sequence[str] | None, *, keep_zeros: bool) -> list[str]:
    names = masked_param_names(model) if params is None else select_params(model, params)
    done = []
    for name in names:
        module, attr = _lookup(model, name)
        if _mask_module(module, attr) is None:
            continue
        if len(_plist(module, attr)) != 1:
            raise ConfigError(f"{name!r} carries other parametrizations besides its mask")
        _own_class(module)  # removing deletes a class property: keep it off shared classes
        parametrize.remove_parametrizations(module, attr, leave_parametrized=keep_zeros)
        done.append(name)
    return done


def remove_masks(model: nn.Module, params: Sequence[str] | None = None) -> list[str]:
    """Drop masks and restore the dense original values (undo the pruning).

    The originals are whatever the optimizer left in them: entries masked during training got no
    gradient, but momentum or weight decay may still have moved them.

    Args:
        model: the model (modified in place).
        params: names/patterns to unmask; ``None`` unmasks every masked parameter.

    Returns:
        The names that were unmasked.
    """
    return _remove(model, params, keep_zeros=False)


def bake(model: nn.Module, params: Sequence[str] | None = None) -> list[str]:
    """Make masks permanent: write the zeros into the parameters and drop the parametrizations.

    The ``nn.Parameter`` objects are kept (only their data changes), so an optimizer built before
    still updates them; pruned entries may of course become non-zero again if trained further.

    Args:
        model: the model (modified in place).
        params: names/patterns to bake; ``None`` bakes every masked parameter.

    Returns:
        The names that were baked.

    Example:
        >>> bake(model); model.state_dict().keys()  # plain names: 'fc1.weight', ...
    """
    return _remove(model, params, keep_zeros=True)


def export_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """A plain state dict with masks applied, loadable into the unmasked architecture.

    The model itself stays masked. Keys are the usual ones (``"fc1.weight"``), values of masked
    parameters are the masked (zeroed) weights, and the mask buffers are left out.

    Returns:
        ``{name: tensor}`` (detached copies for masked tensors, the usual references otherwise).
    """
    return merge_masked_state_dict(model.state_dict())


def merge_masked_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Turn a state dict of a masked model into a plain one (``original * mask`` under ``name``).

    Works on a bare mapping (e.g. read from a safetensors file), no model needed. Tensors
    with other parametrizations are reported as their ``original``.

    Args:
        state: a ``state_dict()``-like mapping.

    Returns:
        A new dict in the same order; unmasked entries are passed through unchanged.
    """
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        if _PARAMETRIZATIONS not in parts:
            out[key] = value
            continue
        i = len(parts) - 1 - parts[::-1].index(_PARAMETRIZATIONS)
        rest = parts[i + 1 :]
        if len(rest) != 2 or rest[1] != "original":
            continue  # a mask buffer (``weight.0.mask``) or another parametrization's state
        base = ".".join([*parts[:i], rest[0]])
        mask = state.get(f"{'.'.join(parts[: i + 2])}.0.mask")
        out[base] = value if mask is None else torch.where(mask.bool(), value, value.new_zeros(()))
    return out


@torch.no_grad()
def zero_pruned(tensors: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> None:
    """Zero, in place, every entry a keep-mask marks as pruned — the one in-place masking step.

    Structured soft masks (:func:`prunekit.surgery.apply_plan` with ``soft=True``), the
    structured pruning schedules, the recipe executor and sensitivity analysis all zero weights
    through this function; :func:`apply_masks` is the other half of the one mechanism: it
    *attaches* a mask so every forward pass re-applies it (forward-only masking).

    Args:
        tensors: name → tensor (parameters or stored originals) to modify.
        masks: name → keep-mask broadcastable to the tensor (``True``/1 keeps); names missing
            from ``tensors`` are ignored (e.g. buffers a plan also slices).

    Example:
        >>> zero_pruned(dict(model.named_parameters()), plan.keep_masks(model))
    """
    for name, mask in masks.items():
        t = tensors.get(name)
        if t is not None:  # masked_fill, not mul: a pruned inf/NaN becomes exactly 0 too
            t.masked_fill_(mask.to(t.device) == 0, 0.0)
