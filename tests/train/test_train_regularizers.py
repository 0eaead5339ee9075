"""Regularizers change exactly the gradients they should, by exactly their subgradient."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.train import BNL1Regularizer, GroupLassoRegularizer, L1Regularizer, Regularizer


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, bias=False),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, 8),
        nn.BatchNorm1d(8),
        nn.Linear(8, 3),
    )
    with torch.no_grad():  # signs of every kind, including exact zeros (sign(0) = 0)
        net[1].weight.copy_(torch.tensor([0.5, -0.3, 0.0, 1.2, -2.0, 0.1]))
        net[5].weight.copy_(torch.linspace(-1, 1, 8))
    return net


def _grads(net: nn.Module, reg: Regularizer | None) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    x, y = torch.randn(5, 3, 6, 6), torch.tensor([0, 1, 2, 0, 1])
    net.zero_grad()
    nn.functional.cross_entropy(net(x), y).backward()
    if reg is not None:
        reg.after_backward(net)
    return {n: p.grad.clone() for n, p in net.named_parameters()}


def test_bn_l1_changes_only_gamma_grads_by_s_sign_gamma() -> None:
    net, s = _net(), 1e-2
    plain = _grads(copy.deepcopy(net), None)
    reg = _grads(net, BNL1Regularizer(s))
    gammas = {"1.weight", "5.weight"}
    for name in plain:
        if name in gammas:
            p = dict(net.named_parameters())[name]
            assert torch.equal(reg[name], plain[name].add(torch.sign(p), alpha=s)), name
            assert torch.allclose(reg[name] - plain[name], s * torch.sign(p), atol=1e-7)
        else:
            assert torch.equal(reg[name], plain[name]), f"{name} must not change"
    assert reg["1.weight"][2] == plain["1.weight"][2]  # γ = 0 → no push


def test_bn_l1_filters_and_penalty() -> None:
    net = _net()
    plain = _grads(copy.deepcopy(net), None)
    by_name = _grads(copy.deepcopy(net), BNL1Regularizer(0.1, modules=["5"]))
    assert torch.equal(by_name["1.weight"], plain["1.weight"])
    assert not torch.equal(by_name["5.weight"], plain["5.weight"])
    by_fn = _grads(copy.deepcopy(net), BNL1Regularizer(0.1, lambda n, m: m.num_features == 6))
    assert not torch.equal(by_fn["1.weight"], plain["1.weight"])
    assert torch.equal(by_fn["5.weight"], plain["5.weight"])
    expected = 0.1 * (4.1 + float(torch.linspace(-1, 1, 8).abs().sum()))
    assert BNL1Regularizer(0.1).penalty(net) == pytest.approx(expected, rel=1e-6)
    assert isinstance(BNL1Regularizer(0.1), Regularizer)


def test_bn_l1_bad_input() -> None:
    with pytest.raises(ConfigError, match="no affine BatchNorm named"):
        BNL1Regularizer(1e-4, modules=["nope"]).after_backward(_net())
    with pytest.raises(ConfigError, match="strength"):
        BNL1Regularizer(-1.0)


def test_l1_regularizer_named_params() -> None:
    net, lam = _net(), 1e-3
    plain = _grads(copy.deepcopy(net), None)
    reg = _grads(net, L1Regularizer({"4.weight": lam}))
    w = net[4].weight
    assert torch.equal(reg["4.weight"], plain["4.weight"].add(torch.sign(w), alpha=lam))
    assert all(torch.equal(reg[n], plain[n]) for n in plain if n != "4.weight")
    assert L1Regularizer({"4.weight": lam}).penalty(net) == pytest.approx(
        lam * float(w.detach().abs().sum()), rel=1e-6
    )
    with pytest.raises(ConfigError, match="no parameter"):
        L1Regularizer({"missing.weight": 1.0}).after_backward(net)


@pytest.mark.parametrize("dim", [0, 1])
def test_group_lasso_matches_autograd_of_its_penalty(dim: int) -> None:
    net, lam = _net(), 0.05
    with torch.no_grad():
        net[0].weight[2].zero_()  # an all-zero filter: subgradient 0, no NaN
    plain = _grads(copy.deepcopy(net), None)
    reg = GroupLassoRegularizer({"0.weight": lam}, dim=dim)
    got = _grads(net, reg)
    w = net[0].weight.detach().clone().requires_grad_(True)
    others = [d for d in range(4) if d != dim]
    norms = torch.linalg.vector_norm(w, dim=others)
    (lam * norms[norms > 0].sum()).backward()
    assert torch.allclose(got["0.weight"] - plain["0.weight"], w.grad, atol=1e-7)
    assert reg.penalty(net) == pytest.approx(lam * float(norms.detach().sum()), rel=1e-6)
    assert all(torch.equal(got[n], plain[n]) for n in plain if n != "0.weight")


def test_group_lasso_group_dims_kernels_and_layer() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3))
    w = model[0].weight
    model(torch.randn(2, 3, 5, 5)).sum().backward()
    base = w.grad.clone()
    kernels = GroupLassoRegularizer({"0.weight": 0.1}, group_dims=(0, 1))
    kernels.after_backward(model)
    norms = w.detach().flatten(2).norm(dim=2, keepdim=True).unsqueeze(-1)
    assert torch.allclose(w.grad - base, 0.1 * w.detach() / norms, atol=1e-5)
    assert kernels.penalty(model) == pytest.approx(0.1 * float(norms.sum()))
    layer = GroupLassoRegularizer({"0.weight": 0.1}, group_dims=())
    assert layer.penalty(model) == pytest.approx(0.1 * float(w.detach().norm()))


def test_group_variance_gradient_is_autograd_of_inverse_variance() -> None:
    from prunekit.train import GroupVarianceRegularizer

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 3, 3))
    w = model[0].weight
    w.grad = torch.zeros_like(w)
    reg = GroupVarianceRegularizer({"0.weight": 0.5})
    reg.after_backward(model)
    ref = w.detach().clone().requires_grad_(True)
    norms = (ref.square().sum(dim=(0, 2, 3)) + 1e-8).sqrt()  # per input channel
    (0.5 / norms.var()).backward()
    assert torch.allclose(w.grad, ref.grad)
    assert reg.penalty(model) == pytest.approx(float(0.5 / norms.detach().var()))
