"""Per-iteration learning-rate schedules.

The learning rate is a pure function of the global iteration, so the only scheduler state a
checkpoint needs is the iteration counter and a resumed run lands on exactly the same values.

Example:
    >>> sched = LRSchedule("step", base_lr=0.1, epochs=160, steps_per_epoch=391)
    >>> [round(sched.lr(i * 391), 6) for i in (0, 79, 80, 120)]
    [0.1, 0.1, 0.01, 0.001]
"""

from __future__ import annotations

import math

from prunekit.errors import ConfigError

# One-cycle constants as in Smith & Topping 2019 ("Super-Convergence") and torch's OneCycleLR:
# start at lr/25, peak at lr, end at lr/25/1e4, cosine-annealed in both phases.
ONECYCLE_DIV = 25.0
ONECYCLE_FINAL_DIV = 1e4
ONECYCLE_DEFAULT_PCT = 0.3
# Network Slimming (Liu et al. 2017) reference schedule: ×0.1 at 50% and at 75% of the epochs.
STEP_MILESTONES = (0.5, 0.75)
STEP_GAMMA = 0.1


def _cos_interp(start: float, end: float, t: float) -> float:
    """Cosine interpolation from ``start`` (t=0) to ``end`` (t=1)."""
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * min(max(t, 0.0), 1.0)))


class LRSchedule:
    """Learning rate as a function of the global iteration.

    Args:
        kind: ``"step"``, ``"onecycle"``, ``"cosine"`` or ``"constant"``.
        base_lr: peak learning rate.
        epochs: length of the run in epochs.
        steps_per_epoch: iterations per epoch (``len(train_loader)``).
        warmup: epochs of linear warm-up (``"onecycle"``: length of the rising phase).
    """

    def __init__(
        self, kind: str, base_lr: float, epochs: int, steps_per_epoch: int, warmup: float = 0.0
    ) -> None:
        if kind not in ("step", "onecycle", "cosine", "constant"):
            raise ConfigError(
                f"unknown schedule {kind!r}; use one of step, onecycle, cosine, constant"
            )
        if steps_per_epoch < 1:
            raise ConfigError("the training loader is empty (len(loader) == 0); give it data")
        self.kind = kind
        self.base_lr = base_lr
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = epochs * steps_per_epoch
        self.warmup_steps = round(warmup * steps_per_epoch)
        if self.warmup_steps >= self.total_steps:
            raise ConfigError(
                f"warmup ({warmup} epochs) must be shorter than the run ({epochs} epochs)"
            )
        # Milestones fall on epoch boundaries, as in the reference (decay at epochs 80 and 120
        # of 160); int() keeps them integral for odd epoch counts.
        self.milestones = [int(epochs * f) * steps_per_epoch for f in STEP_MILESTONES]

    def factor(self, step: int) -> float:
        """Multiplier of ``base_lr`` at iteration ``step`` (0-based)."""
        if self.kind == "onecycle":
            return self._onecycle(step)
        warm = 1.0
        if step < self.warmup_steps:
            warm = (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return warm
        if self.kind == "step":
            return warm * STEP_GAMMA ** sum(step >= m for m in self.milestones)
        # cosine (Loshchilov & Hutter 2017, SGDR without restarts), after the warm-up.
        span = max(self.total_steps - self.warmup_steps, 1)
        return warm * _cos_interp(1.0, 0.0, (step - self.warmup_steps) / span)

    def _onecycle(self, step: int) -> float:
        rise = self.warmup_steps or max(round(ONECYCLE_DEFAULT_PCT * self.total_steps), 1)
        start = 1.0 / ONECYCLE_DIV
        end = start / ONECYCLE_FINAL_DIV
        if step < rise:
            return _cos_interp(start, 1.0, step / rise)
        fall = max(self.total_steps - 1 - rise, 1)
        return _cos_interp(1.0, end, (step - rise) / fall)

    def lr(self, step: int) -> float:
        """Learning rate at iteration ``step``."""
        return self.base_lr * self.factor(step)
