"""Tensor operations the recipe executor needs: unstructured masks, BN-scale (slimming) masks,
regularization penalties and the distillation loss.

All functions are pure (they return new masks / losses and never modify their inputs).
Masks are boolean tensors shaped like their parameter, ``True`` = keep.

Example:
    >>> masks = magnitude_masks({"fc.weight": w}, sparsity=0.9)
    >>> masks["fc.weight"].float().mean()   # ≈ 0.1
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor


def _keep_top(scores: Tensor, sparsity: float) -> Tensor:
    """Mask keeping the ``round((1 - sparsity)·n)`` largest scores (ties broken by index)."""
    n = scores.numel()
    k_prune = min(n, round(sparsity * n))
    mask = torch.ones(n, dtype=torch.bool, device=scores.device)
    if k_prune > 0:
        # argsort is stable, so equal scores (e.g. already-pruned zeros) are pruned in order.
        order = torch.argsort(scores.flatten(), stable=True)
        mask[order[:k_prune]] = False
    return mask.view_as(scores)


def magnitude_masks(
    params: Mapping[str, Tensor],
    sparsity: float | None = None,
    per_param: Mapping[str, float] | None = None,
    global_ranking: bool = False,
) -> dict[str, Tensor]:
    """Prune the smallest |w| (Han et al. 2015, arXiv:1506.02626).

    Args:
        params: name → weight tensor.
        sparsity: fraction to prune in each tensor (or over all of them if ``global_ranking``).
        per_param: name → fraction, overriding ``sparsity`` per tensor.
        global_ranking: rank all tensors' weights together under one threshold.

    Returns:
        name → keep mask.
    """
    if global_ranking:
        if sparsity is None:
            raise ValueError("global_ranking needs one sparsity")
        flat = torch.cat([p.detach().abs().flatten().float().cpu() for p in params.values()])
        keep = _keep_top(flat, sparsity)
        out, start = {}, 0
        for name, p in params.items():
            out[name] = keep[start : start + p.numel()].view_as(p).to(p.device)
            start += p.numel()
        return out
    out = {}
    for name, p in params.items():
        level = (per_param or {}).get(name, sparsity)
        if level is None:
            raise ValueError(f"no sparsity for {name!r}")
        out[name] = _keep_top(p.detach().abs(), level)
    return out


def threshold_masks(
    params: Mapping[str, Tensor], thresholds: Mapping[str, float]
) -> dict[str, Tensor]:
    """Keep |w| > threshold (Distiller's MagnitudeParameterPruner)."""
    return {n: p.detach().abs() > thresholds[n] for n, p in params.items()}


def std_masks(
    params: Mapping[str, Tensor], sensitivities: Mapping[str, float]
) -> dict[str, Tensor]:
    """Keep |w| > s·std(W) per tensor (Han et al. 2015, "a quality parameter multiplied by the
    standard deviation of a layer's weights"; Distiller's SensitivityPruner)."""
    out = {}
    for name, p in params.items():
        w = p.detach().float()
        out[name] = w.abs() > sensitivities[name] * w.std()
    return out


def slim_masks(
    bn_weights: Mapping[str, Tensor], percent: float, floor: int = 1
) -> dict[str, Tensor]:
    """Network Slimming channel selection (Liu et al. 2017, arXiv:1708.06519).

    One global threshold over all |γ| prunes ``percent`` of the channels; each layer keeps at
    least ``floor`` channels (its largest) so no layer vanishes.

    Returns:
        BN weight name → per-channel keep mask (1-D).
    """
    keep = magnitude_masks(bn_weights, sparsity=percent, global_ranking=True)
    for name, g in bn_weights.items():
        need = min(floor, g.numel())
        if int(keep[name].sum()) < need:
            top = torch.topk(g.detach().abs().flatten(), need).indices
            keep[name] = keep[name].clone()
            keep[name][top] = True
    return keep


# ---------------------------------------------------------------------------------------------
# penalties and distillation
# ---------------------------------------------------------------------------------------------


def l1_penalty(params: Mapping[str, Tensor], strengths: Mapping[str, float]) -> Tensor:
    """Σ_p λ_p·‖p‖₁. On BN scales this is Network Slimming's sparsity term; its gradient is the
    λ·sign(γ) sub-gradient of Liu et al. 2017."""
    total = torch.zeros(())
    for name, p in params.items():
        total = total.to(p.device) + strengths[name] * p.abs().sum()
    return total


def group_lasso_penalty(
    params: Mapping[str, Tensor], strengths: Mapping[str, float], group: str
) -> Tensor:
    """Σ_p λ_p·Σ_g ‖w_g‖₂ (Yuan & Lin 2006; structured sparsity, Wen et al. 2016,
    arXiv:1608.03665). ``group``: ``filters``/``rows`` (dim 0) or ``channels``/``cols`` (dim 1).
    Each group norm is scaled by √|g| as in Yuan & Lin, so layers of different shape compare."""
    dim = 0 if group in ("filters", "rows") else 1
    total = torch.zeros(())
    for name, p in params.items():
        w = p.transpose(0, dim).reshape(p.shape[dim], -1)
        norms = torch.sqrt((w * w).sum(dim=1) + 1e-12)  # epsilon: finite gradient at zero
        total = total.to(p.device) + strengths[name] * math.sqrt(w.shape[1]) * norms.sum()
    return total


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor,
    temperature: float,
    alpha: float,
    label_smoothing: float = 0.0,
) -> Tensor:
    """Hinton et al. 2015 (arXiv:1503.02531): α·T²·KL(p_T^teacher ‖ p_T^student) + (1-α)·CE.

    The T² factor keeps the soft-target gradients on the same scale as the hard-target ones.
    """
    t = temperature
    soft = F.kl_div(
        F.log_softmax(student_logits / t, dim=1),
        F.log_softmax(teacher_logits.detach() / t, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    hard = F.cross_entropy(student_logits, targets, label_smoothing=label_smoothing)
    return alpha * t * t * soft + (1.0 - alpha) * hard
