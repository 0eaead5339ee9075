"""Sparsity regularizers applied as gradient terms between ``backward()`` and ``step()``.

Each regularizer adds the (sub)gradient of its penalty to the parameters' ``.grad`` in place,
which is how the Network Slimming reference applies its BN penalty (``updateBN``) and keeps the
loss value itself comparable between runs with and without regularization.

Example:
    >>> reg = BNL1Regularizer(1e-4)
    >>> loss.backward(); reg.after_backward(model); optimizer.step()
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from prunekit.errors import ConfigError

BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
ModuleFilter = Callable[[str, nn.Module], bool]


@runtime_checkable
class Regularizer(Protocol):
    """Adds a penalty's gradient to parameter gradients, after backward and before the step."""

    def after_backward(self, model: nn.Module) -> None:
        """Modify ``p.grad`` of the parameters of ``model`` in place."""
        ...


def _check_strength(value: float, what: str) -> float:
    if not value >= 0:  # also rejects NaN
        raise ConfigError(f"{what} must be a number >= 0, got {value!r}")
    return float(value)


class BNL1Regularizer:
    """Network Slimming's L1 penalty on BatchNorm scale factors γ.

    Liu et al., "Learning Efficient Convolutional Networks through Network Slimming", ICCV 2017,
    eq. (1): ``L = loss + s·Σ|γ|``, applied through its subgradient ``γ.grad += s·sign(γ)``.
    The paper uses ``s = 1e-4`` for VGG and ``1e-5`` for ResNet/DenseNet.

    Args:
        s: penalty strength.
        modules: which BatchNorm layers; ``None`` → every affine BatchNorm1d/2d/3d; an iterable
            of module names; or ``fn(name, module) -> bool``.

    Example:
        >>> BNL1Regularizer(1e-4).after_backward(model)
    """

    def __init__(self, s: float, modules: Iterable[str] | ModuleFilter | None = None) -> None:
        self.s = _check_strength(s, "BN L1 strength s")
        self.modules = modules if modules is None or callable(modules) else list(modules)

    def scales(self, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        """The selected ``(module name, γ)`` pairs of ``model``."""
        bns = {n: m for n, m in model.named_modules() if isinstance(m, BN_TYPES) and m.affine}
        if isinstance(self.modules, list):
            missing = [n for n in self.modules if n not in bns]
            if missing:
                raise ConfigError(
                    f"BNL1Regularizer: no affine BatchNorm named {missing}; "
                    f"available: {sorted(bns)}"
                )
            bns = {n: bns[n] for n in self.modules}
        elif callable(self.modules):
            keep = self.modules
            bns = {n: m for n, m in bns.items() if keep(n, m)}
        return [(n, m.weight) for n, m in bns.items()]

    @torch.no_grad()
    def after_backward(self, model: nn.Module) -> None:
        """``γ.grad += s·sign(γ)`` for every selected BatchNorm (layers without a grad skipped)."""
        if self.s == 0:
            return
        for _, gamma in self.scales(model):
            if gamma.grad is not None:
                gamma.grad.add_(torch.sign(gamma), alpha=self.s)

    @torch.no_grad()
    def penalty(self, model: nn.Module) -> float:
        """Current value of ``s·Σ|γ|``."""
        return self.s * float(sum(g.abs().sum() for _, g in self.scales(model)))


class _NamedParamRegularizer:
    """Shared plumbing: a ``{parameter name: strength}`` mapping resolved against a model."""

    kind = "regularizer"

    def __init__(self, strengths: Mapping[str, float]) -> None:
        if not strengths:
            raise ConfigError(f"{self.kind}: give at least one parameter name → strength")
        self.strengths = {
            k: _check_strength(v, f"{self.kind} strength of {k!r}") for k, v in strengths.items()
        }

    def params(self, model: nn.Module) -> list[tuple[nn.Parameter, float]]:
        named = dict(model.named_parameters())
        missing = [n for n in self.strengths if n not in named]
        if missing:
            raise ConfigError(
                f"{self.kind}: model has no parameter {missing}; e.g. {list(named)[:5]}"
            )
        return [(named[n], s) for n, s in self.strengths.items()]


class L1Regularizer(_NamedParamRegularizer):
    """Element-wise L1 penalty ``λ·Σ|w|`` on named parameters (Distiller's ``L1Regularizer``).

    Args:
        strengths: ``{parameter name: λ}`` (Distiller's ``reg_regims``).

    Example:
        >>> L1Regularizer({"features.0.weight": 1e-5}).after_backward(model)
    """

    kind = "L1Regularizer"

    @torch.no_grad()
    def after_backward(self, model: nn.Module) -> None:
        """``w.grad += λ·sign(w)``."""
        for p, lam in self.params(model):
            if p.grad is not None and lam:
                p.grad.add_(torch.sign(p), alpha=lam)

    @torch.no_grad()
    def penalty(self, model: nn.Module) -> float:
        """Current value of ``Σ λ·Σ|w|``."""
        return float(sum(lam * p.abs().sum() for p, lam in self.params(model)))


class GroupLassoRegularizer(_NamedParamRegularizer):
    """Group-lasso penalty ``λ·Σ_g ||w_g||₂`` (Yuan & Lin 2006; used for structured sparsity by
    Wen et al., "Learning Structured Sparsity in Deep Neural Networks", NeurIPS 2016).

    A group is one slice along ``dim``: ``dim=0`` → output filters/rows, ``dim=1`` → input
    channels/columns. ``group_dims`` generalises it: a group is one index of those dims, e.g.
    ``(0, 1)`` → each 2-D kernel of a conv, ``()`` → the whole tensor (Wen et al.'s layer-wise
    group). Subgradient: ``λ·w_g/||w_g||₂`` (0 for an all-zero group).

    Args:
        strengths: ``{parameter name: λ}``.
        dim: dimension whose slices form the groups.
        group_dims: the dims indexing the groups (overrides ``dim``).
    """

    kind = "GroupLassoRegularizer"

    def __init__(
        self,
        strengths: Mapping[str, float],
        dim: int = 0,
        *,
        group_dims: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__(strengths)
        self.dim = dim
        self.group_dims = (dim,) if group_dims is None else tuple(group_dims)

    def _norms(self, p: torch.Tensor) -> torch.Tensor:
        bad = [d for d in self.group_dims if not -p.dim() <= d < p.dim()]
        if bad:
            raise ConfigError(
                f"{self.kind}: dim={bad[0]} is out of range for shape {tuple(p.shape)}"
            )
        keep = {d % p.dim() for d in self.group_dims}
        other = [d for d in range(p.dim()) if d not in keep]
        return torch.linalg.vector_norm(p, dim=other, keepdim=True) if other else p.abs()

    @torch.no_grad()
    def after_backward(self, model: nn.Module) -> None:
        """``w_g.grad += λ·w_g/||w_g||₂`` per group."""
        for p, lam in self.params(model):
            if p.grad is None or not lam:
                continue
            norms = self._norms(p)
            safe = torch.where(norms > 0, norms, torch.ones_like(norms))
            p.grad.add_(p / safe, alpha=lam)

    @torch.no_grad()
    def penalty(self, model: nn.Module) -> float:
        """Current value of ``Σ λ·Σ_g ||w_g||₂``."""
        return float(sum(lam * self._norms(p).sum() for p, lam in self.params(model)))


class GroupVarianceRegularizer(_NamedParamRegularizer):
    """``λ / Var_c(‖w_c‖₂)`` over the input channels ``c`` of each named weight: a small variance
    of the channel norms is penalised, so the norms spread apart and weak channels can be pruned
    (Torfi et al. 2018, "Attention-Based Guided Structured Sparsity of Deep Neural Networks",
    arXiv:1802.09902; Distiller's GroupVarianceRegularizer). The variance is the unbiased one
    and each norm has 1e-8 under its square root, as in Distiller. Gradient by autograd.

    Args:
        strengths: ``{parameter name: λ}``.
    """

    kind = "GroupVarianceRegularizer"

    @staticmethod
    def _term(p: torch.Tensor) -> torch.Tensor:
        other = [d for d in range(p.dim()) if d != 1]
        norms = (p.square().sum(dim=other) + 1e-8).sqrt()
        return 1.0 / norms.var()

    def after_backward(self, model: nn.Module) -> None:
        """``w.grad += λ·∂(1/Var)/∂w``."""
        for p, lam in self.params(model):
            if p.grad is None or not lam:
                continue
            with torch.enable_grad():
                w = p.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(self._term(w), w)
            p.grad.add_(grad, alpha=lam)

    @torch.no_grad()
    def penalty(self, model: nn.Module) -> float:
        """Current value of ``Σ λ / Var(‖w_c‖₂)``."""
        return float(sum(lam * self._term(p) for p, lam in self.params(model)))
