"""Run-time parts of a recipe beyond "prune at epoch start, re-mask after every step".

* :class:`PolicyMasks` carries out a pruner policy's ``masking`` (Distiller's PruningPolicy
  ``args``): masks recomputed every N steps, masks applied to the forward pass only (optionally
  with the unmasked values kept apart for the optimizer — dynamic network surgery's two copies —
  and with masked gradients), discarded after each step, or kept for good at the policy's end.
* the mask makers of the pruners whose masks need state or more than a criterion: structure
  masks inside a tensor (``group``), dynamic network surgery (``splicing``), the sensitivity
  threshold taken once (``std: first``), BN-folded ranking (``fold_bn``).

Everything here is checkpointed through :meth:`PolicyMasks.state_dict` so a resumed run matches
an uninterrupted one.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from prunekit.recipes.native import (
    GroupPrunerConfig,
    PolicyMasking,
    Recipe,
    SplicingPrunerConfig,
    StdThresholdPrunerConfig,
)
from prunekit.recipes.resolve import PruneAction, ResolvedRecipe
from prunekit.sparse import masks_for, std_of
from prunekit.sparse.groups import group_masks
from prunekit.sparse.masks import zero_pruned

_DEFAULT = PolicyMasking()


def event_generator(seed: int, pruner: str, epoch: int, step: int) -> torch.Generator:
    """A generator seeded by the event, so random masks are the same after a resume."""
    return torch.Generator().manual_seed(zlib.crc32(f"{seed}:{pruner}:{epoch}:{step}".encode()))


class PolicyMasks:
    """Masks of policies whose masks do not simply stay in the weights (``forward_only`` or
    ``discard``), and the hooks that apply them around each training step.

    A forward pre-hook masks the weights before the forward pass (saving the unmasked values of
    ``double_copies`` policies); an optimizer step pre-hook masks the gradients of
    ``mask_gradients`` policies and puts the saved values back, so the step updates the dense
    weights with gradients taken at the masked point (Guo et al. 2016).
    """

    def __init__(self, recipe: Recipe, resolved: ResolvedRecipe) -> None:
        self.recipe = recipe
        self.masking = {i: p.masking or _DEFAULT for i, p in enumerate(recipe.policies)}
        self.active: dict[int, set[int]] = {}  # epoch → policies with events in it
        self.last: dict[int, int] = {}  # policy → its last event epoch within the run
        for plan in resolved.epochs:
            for action in plan.prune:
                self.active.setdefault(plan.epoch, set()).add(action.policy)
                self.last[action.policy] = plan.epoch
        self.masks: dict[int, dict[str, Tensor]] = {}
        self.saved: dict[str, Tensor] = {}
        self.masked = False
        self.enabled = False
        self.epoch = 0
        self._params: dict[str, nn.Parameter] = {}
        self._handles: list[Any] = []

    # -- which policies -------------------------------------------------------------------------

    def of(self, action: PruneAction) -> PolicyMasking:
        """The masking of ``action``'s policy."""
        return self.masking.get(action.policy, _DEFAULT)

    def transient(self, action: PruneAction) -> bool:
        """Whether ``action``'s masks live here instead of in the weights."""
        m = self.of(action)
        return m.forward_only or m.discard

    def set(self, action: PruneAction, masks: dict[str, Tensor]) -> None:
        """Replace the masks of ``action``'s policy (Distiller replaces, so weights may return)."""
        self.masks[action.policy] = {n: m.detach().clone() for n, m in masks.items()}

    def current(self, action: PruneAction) -> dict[str, Tensor]:
        """The masks ``action``'s policy holds now."""
        return self.masks.get(action.policy, {})

    def _live(self) -> list[int]:
        return [i for i in self.masks if i in self.active.get(self.epoch, set()) and self.masks[i]]

    # -- hooks ----------------------------------------------------------------------------------

    def install(self, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
        """Register the forward and optimizer-step hooks (once per run)."""
        needed = any(m.forward_only or m.discard for m in self.masking.values())
        if self._handles or not needed or optimizer is None:
            return
        self._params = dict(model.named_parameters())
        self._handles = [
            model.register_forward_pre_hook(lambda mod, args: self._before_forward()),
            optimizer.register_step_pre_hook(lambda opt, args, kwargs: self._before_step()),
        ]

    def remove(self) -> None:
        """Remove the hooks (the run is over)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    @torch.no_grad()
    def _before_forward(self) -> None:
        if not self.enabled or self.masked:
            return
        live = self._live()
        if not live:
            return
        for i in live:
            double = self.masking[i].double_copies
            if double:
                for name in self.masks[i]:
                    self.saved.setdefault(name, self._params[name].detach().clone())
            zero_pruned(self._params, self.masks[i])
        self.masked = True

    @torch.no_grad()
    def _before_step(self) -> None:
        if not self.masked:
            return
        for i in self._live():
            if self.masking[i].mask_gradients:
                for name, mask in self.masks[i].items():
                    g = self._params[name].grad
                    if g is not None:
                        g.mul_((mask != 0).to(g.dtype))
        self.restore()

    @torch.no_grad()
    def restore(self) -> None:
        """Put the unmasked values back (before a step, and before each checkpoint)."""
        for name, value in self.saved.items():
            self._params[name].copy_(value)
        self.saved = {}
        self.masked = False

    def after_step(self) -> None:
        """Drop the masks of ``discard`` policies (Distiller: at the end of every mini-batch)."""
        for i in list(self.masks):
            if self.masking[i].discard:
                del self.masks[i]

    def keep_ending(self, epoch: int) -> dict[str, Tensor]:
        """Masks of ``keep`` policies whose last event epoch is ``epoch``: they leave this store
        and become permanent (the caller merges them into the weights' masks)."""
        kept: dict[str, Tensor] = {}
        for i in list(self.masks):
            if self.masking[i].keep and self.last.get(i) == epoch:
                for name, mask in self.masks.pop(i).items():
                    m = mask != 0
                    kept[name] = m if name not in kept else kept[name] & m
        return kept

    # -- checkpoints ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"masks": {str(i): dict(m) for i, m in self.masks.items()}}

    def load_state_dict(self, state: Mapping[str, Any], device: torch.device) -> None:
        self.masks = {
            int(i): {n: t.to(device) for n, t in m.items()} for i, m in state["masks"].items()
        }


# ---------------------------------------------------------------------------------------------
# mask makers
# ---------------------------------------------------------------------------------------------


def group_event(
    cfg: GroupPrunerConfig,
    action: PruneAction,
    tensors: dict[str, Tensor],
    current: dict[str, Tensor],
    generator: torch.Generator,
) -> dict[str, Tensor]:
    """Masks of one ``group`` pruner event."""
    if action.level_range is not None:
        lo, hi = action.level_range
        rng = random.Random(int(torch.randint(0, 2**31, (1,), generator=generator)))
        amounts = {n: rng.uniform(lo, hi) for n in tensors}  # one level per tensor and event
    else:
        amounts = {n: float(action.per_param.get(n, action.sparsity or 0.0)) for n in tensors}
    threshold = cfg.threshold_norm if action.quantity == "threshold" else None
    return group_masks(
        tensors,
        amounts,
        cfg.group,
        criterion=cfg.criterion,
        thresholds=threshold,
        block_shape=cfg.block_shape,
        current=None if cfg.criterion == "bernoulli" else current,
        generator=generator,
    )


def std_first_event(
    cfg: StdThresholdPrunerConfig,
    action: PruneAction,
    tensors: dict[str, Tensor],
    current: dict[str, Tensor],
    stats: dict[str, float],
) -> dict[str, Tensor]:
    """``|w| > s·std`` with std taken at the pruner's first event and kept in ``stats``
    (Distiller's SensitivityPruner)."""
    for n, w in tensors.items():
        stats.setdefault(n, std_of(w.detach()))
    thresholds = {n: action.per_param[n] * stats[n] for n in tensors}
    return masks_for(tensors, thresholds, criterion="threshold", current=current)


@torch.no_grad()
def splice_event(
    cfg: SplicingPrunerConfig,
    action: PruneAction,
    tensors: dict[str, Tensor],
    previous: dict[str, Tensor],
    stats: dict[str, list[float]],
) -> dict[str, Tensor]:
    """Dynamic network surgery (Guo et al. 2016, eq. 3) on the current weights: a weight with
    |w| < a is cut, one with |w| >= b is spliced back, the others keep their previous state;
    a, b = (mean|W| + s·std|W|)·(low, high) with mean and std of |W| from the first event."""
    out = {}
    for n, w in tensors.items():
        mag = w.detach().abs()
        if n not in stats:
            stats[n] = [float(mag.float().mean()), std_of(mag)]
        mean, std = stats[n]
        base = mean + std * action.per_param[n]
        old = previous.get(n)
        old_keep = (
            torch.ones_like(mag, dtype=torch.bool) if old is None else old.to(mag.device) != 0
        )
        out[n] = (mag >= base * cfg.high) | ((mag >= base * cfg.low) & old_keep)
    return out


def fold_tensors(model: nn.Module, names: list[str], norms: Mapping[str, str]) -> dict[str, Tensor]:
    """BN-folded copies of ``names`` (see :func:`prunekit.importance.fold_bn`)."""
    from prunekit.importance import fold_bn

    return fold_bn(model, names, norms)
