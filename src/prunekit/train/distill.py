"""Knowledge distillation loss (Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural
Network", 2015)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.errors import ConfigError


class DistillationLoss(nn.Module):
    """``alpha·T²·KL(p_t ‖ p_s) + (1−alpha)·CE(s, y)`` with ``p = softmax(logits/T)``.

    The soft term is the KL divergence from the teacher's softened distribution to the
    student's (the teacher is the target), averaged over the batch; the ``T²`` factor keeps its
    gradient scale independent of ``T`` (Hinton et al. 2015, sec. 2). The teacher runs in eval
    mode under ``no_grad`` and is never updated.

    Args:
        teacher: the trained model to imitate.
        temperature: softening temperature ``T`` (> 0).
        alpha: weight of the soft term, in [0, 1].
        hard_loss: loss on the true labels; default cross-entropy.

    Example:
        >>> kd = DistillationLoss(teacher, temperature=4.0, alpha=0.9)
        >>> loss = kd(student(x), y, inputs=x)
    """

    def __init__(
        self,
        teacher: nn.Module,
        temperature: float = 4.0,
        alpha: float = 0.9,
        hard_loss: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if not temperature > 0:
            raise ConfigError(f"distillation temperature must be > 0, got {temperature!r}")
        if not 0 <= alpha <= 1:
            raise ConfigError(f"distillation alpha must be in [0, 1], got {alpha!r}")
        self.teacher = teacher.eval().requires_grad_(False)
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.hard_loss = hard_loss if hard_loss is not None else nn.CrossEntropyLoss()

    def train(self, mode: bool = True) -> DistillationLoss:
        """Keep the teacher in eval mode whatever mode the loss module is put in."""
        super().train(mode)
        self.teacher.eval()
        return self

    def teacher_logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """Teacher outputs for ``inputs``, without gradients."""
        with torch.no_grad():
            return self.teacher(inputs)

    def forward(
        self,
        student_logits: torch.Tensor,
        targets: torch.Tensor,
        inputs: torch.Tensor | None = None,
        teacher_logits: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Combined loss; give either ``inputs`` (teacher is run) or ``teacher_logits``."""
        if teacher_logits is None:
            if inputs is None:
                raise ConfigError("DistillationLoss needs inputs= or teacher_logits=")
            teacher_logits = self.teacher_logits(inputs)
        t = self.temperature
        log_p_s = F.log_softmax(student_logits.float() / t, dim=1)
        log_p_t = F.log_softmax(teacher_logits.float() / t, dim=1)
        soft = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
        hard = self.hard_loss(student_logits, targets)
        return self.alpha * t * t * soft + (1.0 - self.alpha) * hard
