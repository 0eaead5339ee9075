"""The tensor-LR SGD update used inside captured CUDA graphs equals torch.optim.SGD (checked on
the CPU, so it is covered even where no GPU is present)."""

from __future__ import annotations

import pytest
import torch

from prunekit.errors import ConfigError
from prunekit.train.cuda_graphs import GraphedSGDStep, sgd_update_


@pytest.mark.parametrize(
    ("momentum", "nesterov", "wd"), [(0.9, False, 1e-4), (0.9, True, 5e-4), (0.0, False, 0.0)]
)
def test_sgd_update_matches_torch_sgd(momentum: float, nesterov: bool, wd: float) -> None:
    ref = [torch.randn(4, 3, requires_grad=True), torch.randn(5, requires_grad=True)]
    mine = [p.detach().clone().requires_grad_(True) for p in ref]
    opt = torch.optim.SGD(ref, lr=0.1, momentum=momentum, nesterov=nesterov, weight_decay=wd)
    bufs = [torch.zeros_like(p) for p in mine] if momentum else [None, None]
    for step in range(4):
        lr = 0.1 / (step + 1)
        for group in opt.param_groups:
            group["lr"] = lr
        grads = [torch.randn_like(p) for p in ref]
        for p, q, g in zip(ref, mine, grads):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        sgd_update_(mine, bufs, torch.tensor(lr), momentum, wd, nesterov)
        for p, q in zip(ref, mine):
            assert torch.allclose(p, q, atol=1e-6, rtol=1e-6), step
    if momentum:
        assert torch.allclose(opt.state[ref[0]]["momentum_buffer"], bufs[0], atol=1e-6)


def test_sgd_update_needs_grads_and_buffers() -> None:
    p = torch.zeros(2, requires_grad=True)
    with pytest.raises(ConfigError, match="gradient"):
        sgd_update_([p], [None], torch.tensor(0.1), 0.0, 0.0, False)
    p.grad = torch.ones(2)
    with pytest.raises(ConfigError, match="momentum buffer"):
        sgd_update_([p], [None], torch.tensor(0.1), 0.9, 0.0, False)


def test_graphed_step_refuses_cpu_and_adamw() -> None:
    p = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ConfigError, match="CUDA"):
        GraphedSGDStep(lambda x, y: (x, y), torch.optim.SGD([p], lr=0.1))
    with pytest.raises(ConfigError, match="sgd"):
        GraphedSGDStep(lambda x, y: (x, y), torch.optim.AdamW([p], lr=0.1))
