"""Criteria hit their target sparsities exactly and prune the right entries."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.sparse import (
    CRITERIA,
    compute_masks,
    get_masks,
    masks_for,
    prune,
    prune_magnitude,
    prune_threshold_std,
    prune_to_sparsity,
    sparsity_report,
)


def _mlp() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(50, 40), nn.ReLU(), nn.Linear(40, 30), nn.ReLU(), nn.Linear(30, 7)
    )


def _zeros(model: nn.Module, name: str) -> int:
    module, attr = name.rsplit(".", 1)
    w = getattr(model.get_submodule(module), attr)
    return w.numel() - int(torch.count_nonzero(w))


def test_registry_lists_the_criteria() -> None:
    assert CRITERIA.names() == ["magnitude", "random", "std_threshold", "threshold"]
    with pytest.raises(ConfigError, match="Did you mean 'magnitude'"):
        prune(_mlp(), 0.5, criterion="magnitud")


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.37, 0.5, 0.9, 1.0])
def test_layer_magnitude_is_exact_and_drops_smallest(sparsity: float) -> None:
    model = _mlp()
    dense = {n: p.detach().clone() for n, p in model.named_parameters()}
    masks = prune_magnitude(model, sparsity)
    assert list(masks) == ["0.weight", "2.weight", "4.weight"]
    for name, mask in masks.items():
        w = dense[name]
        assert _zeros(model, name) == round(sparsity * w.numel())
        if 0 < sparsity < 1:
            assert w[~mask].abs().max() <= w[mask].abs().min()
    assert _zeros(model, "0.bias") == 0  # biases untouched by default


def test_global_magnitude_hits_total_and_uses_one_threshold() -> None:
    model = _mlp()
    with torch.no_grad():
        model[4].weight.mul_(10)  # a layer with large weights should be pruned least
    dense = {n: p.detach().clone() for n, p in model.named_parameters()}
    masks = prune_magnitude(model, 0.8, scope="global")
    total = sum(m.numel() for m in masks.values())
    pruned = sum(int((~m).sum()) for m in masks.values())
    assert pruned == round(0.8 * total)
    kept_min = min(dense[n][m].abs().min() for n, m in masks.items())
    dropped_max = max(dense[n][~m].abs().max() for n, m in masks.items())
    assert dropped_max <= kept_min
    per_layer = {n: float((~m).float().mean()) for n, m in masks.items()}
    assert per_layer["4.weight"] < 0.1 < 0.8 < per_layer["0.weight"]


def test_std_threshold_matches_formula() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(200, 300))
    with torch.no_grad():
        model[0].weight.normal_()
    w = model[0].weight.detach().clone()
    masks = prune_threshold_std(model, 1.0)
    expected = w.abs() > w.std(unbiased=False)
    assert torch.equal(masks["0.weight"], expected)
    # Gaussian weights: P(|w| <= σ) = 68.3%
    assert abs(float((~expected).float().mean()) - 0.683) < 0.01
    prune_threshold_std(model, {"0.weight": 0.0})  # s=0 keeps the live weights
    assert torch.equal(get_masks(model)["0.weight"], expected)


def test_threshold_cuts_at_a_fixed_magnitude_and_keeps_pruned_entries_pruned() -> None:
    w = torch.tensor([[-0.5, 0.1], [0.3, -0.05]])
    masks = masks_for({"w": w}, {"w": 0.2}, criterion="threshold")
    assert masks["w"].tolist() == [[True, False], [True, False]]
    current = {"w": torch.tensor([[False, True], [True, True]])}
    again = masks_for({"w": w}, {"w": 0.0}, criterion="threshold", current=current)
    assert again["w"].tolist() == [[False, True], [True, True]]  # 0 keeps all live weights
    with pytest.raises(ConfigError, match="threshold >= 0"):
        masks_for({"w": w}, {"w": -1.0}, criterion="threshold")
    with pytest.raises(ConfigError, match=r"no amount given for \['w'\]"):
        masks_for({"w": w}, {"v": 0.5}, criterion="threshold")


@pytest.mark.parametrize("criterion", CRITERIA.names())
def test_masks_for_tensors_equals_compute_masks_on_the_model(criterion: str) -> None:
    # One implementation: the tensor-level entry point (recipes) and the model-level one agree,
    # also on a model that is already masked.
    amount = 0.5 if CRITERIA.get(criterion).amount == "sparsity" else 0.05
    model = _mlp()
    prune_magnitude(model, 0.3)
    weights = {n: model.get_submodule(n[:-7]).weight for n in get_masks(model)}
    want = compute_masks(model, amount, criterion=criterion, seed=3)
    got = masks_for(
        weights,
        dict.fromkeys(weights, amount),
        criterion=criterion,
        current=get_masks(model),
        seed=3,
    )
    assert want.keys() == got.keys()
    assert all(torch.equal(want[n], got[n]) for n in want)


def test_random_is_exact_and_seeded() -> None:
    a, b = _mlp(), _mlp()
    b.load_state_dict(a.state_dict())
    ma = prune(a, 0.6, criterion="random", seed=7)
    mb = prune(b, 0.6, criterion="random", seed=7)
    for n in ma:
        assert torch.equal(ma[n], mb[n])
        assert int((~ma[n]).sum()) == round(0.6 * ma[n].numel())
    c = _mlp()
    mc = compute_masks(c, 0.6, criterion="random", seed=8)
    assert not get_masks(c)  # compute_masks leaves the model alone
    assert not torch.equal(mc["0.weight"], ma["0.weight"])


@pytest.mark.parametrize("criterion", ["magnitude", "random"])
def test_masks_only_shrink_when_sparsity_grows(criterion: str) -> None:
    model = _mlp()
    first = prune(model, 0.5, criterion=criterion, seed=0)
    second = prune(model, 0.8, criterion=criterion, seed=1)
    for n in first:
        assert not bool((second[n] & ~first[n]).any())  # nothing pruned comes back
        assert int((~second[n]).sum()) == round(0.8 * second[n].numel())


def test_prune_to_sparsity_per_param_with_override() -> None:
    model = _mlp()
    prune_to_sparsity(model, {"*.weight": 0.5, "4.weight": 0.2, "0.bias": 0.25})
    assert _zeros(model, "0.weight") == 1000
    assert _zeros(model, "2.weight") == 600
    assert _zeros(model, "4.weight") == 42
    assert _zeros(model, "0.bias") == 10
    report = sparsity_report(model)
    assert report.nonzero == sum(p.numel() for p in model.parameters()) - 1652


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"amount": 1.5}, r"sparsity in \[0, 1\]"),
        ({"amount": -0.1}, r"sparsity in \[0, 1\]"),
        ({"amount": {"0.weight": 0.5, "2.weight": 0.6}, "scope": "global"}, "one sparsity"),
        ({"amount": 1.0, "criterion": "std_threshold", "scope": "global"}, "supports scope"),
        ({"amount": -1.0, "criterion": "std_threshold"}, "multiplier >= 0"),
        ({"amount": {"0.weight": 0.5}, "params": ["2.weight"]}, "not both"),
    ],
)
def test_bad_amounts_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        prune(_mlp(), **kwargs)
