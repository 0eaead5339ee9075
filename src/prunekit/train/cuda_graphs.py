"""Whole-train-step CUDA-graph capture.

On a fast GPU with a slow host CPU, eager PyTorch is launch-bound: the CPU cannot enqueue
kernels as fast as the GPU runs them. Capturing forward, backward, regularizers, clipping and
the SGD update into one ``torch.cuda.CUDAGraph`` replaces thousands of launches per step with a
single replay. Inputs are copied into static buffers; the learning rate lives in a device
tensor so the per-iteration schedule still applies without re-capture.

Only SGD is supported here: ``torch.optim.SGD`` reads its learning rate as a Python number, so
the update is re-implemented with ``_foreach`` ops that take the LR as a tensor. Momentum
buffers stay in ``optimizer.state[p]["momentum_buffer"]`` so checkpoints are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from prunekit.errors import ConfigError

# fn(x, y) -> (loss, logits), having already run backward, regularizers and clipping.
ComputeFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@torch.no_grad()
def sgd_update_(
    params: list[torch.Tensor],
    momentum_buffers: list[torch.Tensor | None],
    lr: torch.Tensor,
    momentum: float,
    weight_decay: float,
    nesterov: bool,
) -> None:
    """In-place SGD step with a tensor learning rate, matching ``torch.optim.SGD``
    (dampening 0): ``d = g + wd·p``; ``b = m·b + d``; ``d = d + m·b`` (Nesterov) or ``b``;
    ``p -= lr·d``. Buffers must be pre-allocated (zeros before the first step) when
    ``momentum > 0``. No host synchronisation, so it can be captured in a CUDA graph.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if len(grads) != len(params):
        raise ConfigError("sgd_update_ needs a gradient for every parameter it is given")
    d: list[torch.Tensor] = (
        list(torch._foreach_add(grads, params, alpha=weight_decay)) if weight_decay else grads
    )
    if momentum:
        bufs = [b for b in momentum_buffers if b is not None]
        if len(bufs) != len(params):
            raise ConfigError("sgd_update_ needs a momentum buffer per parameter")
        torch._foreach_mul_(bufs, momentum)
        torch._foreach_add_(bufs, d)
        d = list(torch._foreach_add(d, bufs, alpha=momentum)) if nesterov else bufs
    step: list[torch.Tensor] = list(torch._foreach_mul(d, lr))
    torch._foreach_sub_(params, step)


class GraphedSGDStep:
    """Callable ``step(x, y, lr) -> (loss, n_correct)`` that replays a captured CUDA graph.

    The first ``warmup`` calls run eagerly on a side stream (they are real training steps;
    warm-up lets cuDNN/cuBLAS pick algorithms and allocates gradients before capture), the next
    full-size batch is captured, and batches of another shape (a last partial batch) run
    eagerly with the same update rule.

    Args:
        compute: forward + loss + backward (+ regularizers, clipping) for one batch.
        optimizer: a ``torch.optim.SGD``; its hyper-parameters and momentum buffers are used.
        warmup: eager iterations before capture.
    """

    def __init__(
        self, compute: ComputeFn, optimizer: torch.optim.Optimizer, warmup: int = 3
    ) -> None:
        if not isinstance(optimizer, torch.optim.SGD):
            raise ConfigError("compile='cuda-graphs' supports optimizer='sgd' only")
        if len(optimizer.param_groups) != 1:
            raise ConfigError("compile='cuda-graphs' needs a single optimizer param group")
        self.compute = compute
        self.optimizer = optimizer
        self.group = optimizer.param_groups[0]
        self.params = [p for p in self.group["params"] if p.requires_grad]
        device = self.params[0].device
        if device.type != "cuda":
            raise ConfigError("compile='cuda-graphs' needs the model on a CUDA device")
        self.lr = torch.zeros((), device=device)
        self.warmup = warmup
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: tuple[torch.Tensor, ...] = ()
        self._init_buffers()

    def _init_buffers(self) -> None:
        # Persistent momentum buffers must exist (outside the graph's memory pool) before
        # capture; zero-initialised buffers give torch's first step buf = d_p exactly.
        if self.group["momentum"] == 0:
            return
        for p in self.params:
            state = self.optimizer.state[p]
            if state.get("momentum_buffer") is None:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _update(self) -> None:
        params = [p for p in self.params if p.grad is not None]
        bufs = [self.optimizer.state[p].get("momentum_buffer") for p in params]
        g = self.group
        sgd_update_(params, bufs, self.lr, g["momentum"], g["weight_decay"], g["nesterov"])

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for p in self.params:
            p.grad = None  # inside capture, gradients are then allocated from the graph pool
        loss, logits = self.compute(x, y)
        self._update()
        return loss.detach(), (logits.argmax(1) == y).sum()

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, lr: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run one training step on ``(x, y)`` at learning rate ``lr``."""
        self.lr.fill_(lr)
        self.group["lr"] = lr  # keep the optimizer's view (and checkpoints) in sync
        self.calls += 1
        if self.graph is None and self.calls <= self.warmup:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = self._step(x, y)
            torch.cuda.current_stream().wait_stream(side)
            return out
        if self.graph is None:
            self._capture(x, y)
        sx, sy, loss, correct = self.static
        if x.shape != sx.shape or y.shape != sy.shape:
            return self._step(x, y)
        sx.copy_(x, non_blocking=True)
        sy.copy_(y, non_blocking=True)
        assert self.graph is not None
        self.graph.replay()
        return loss, correct

    def _capture(self, x: torch.Tensor, y: torch.Tensor) -> None:
        sx, sy = x.clone(), y.clone()  # clone keeps the memory format (channels_last)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            loss, correct = self._step(sx, sy)
        self.graph = graph
        self.static = (sx, sy, loss, correct)
