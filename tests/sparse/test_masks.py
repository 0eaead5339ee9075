"""Mask semantics: exact zeros, gradient masking, state-dict compatibility, undo and bake."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.sparse import (
    apply_masks,
    bake,
    default_param_names,
    export_state_dict,
    get_masks,
    masked_param_names,
    merge_masked_state_dict,
    parameter_names,
    remove_masks,
    select_params,
    stored_tensor,
)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc1 = nn.Linear(4 * 6 * 6, 16)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x))).flatten(1)
        return self.fc2(torch.relu(self.fc1(x)))


def _random_masks(model: nn.Module, keep: float = 0.5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        n: torch.rand(model.get_parameter(n).shape, generator=g) < keep
        for n in default_param_names(model)
    }


def test_names_defaults_and_globs() -> None:
    model = Net()
    assert default_param_names(model) == ["conv.weight", "fc1.weight", "fc2.weight"]
    assert select_params(model, ["fc*.weight"]) == ["fc1.weight", "fc2.weight"]
    assert select_params(model, ["fc2.bias", "conv.*"]) == ["conv.weight", "conv.bias", "fc2.bias"]
    with pytest.raises(ConfigError, match="matches nothing"):
        select_params(model, ["nope.*"])


def test_masked_entries_are_exact_zeros_and_names_unchanged() -> None:
    model = Net()
    masks = _random_masks(model)
    before = parameter_names(model)
    apply_masks(model, masks)
    assert parameter_names(model) == before  # logical names survive the parametrization
    assert masked_param_names(model) == list(masks)
    for name, mask in masks.items():
        weight = model.get_submodule(name.rsplit(".", 1)[0]).weight
        assert torch.count_nonzero(weight[~mask]) == 0
        assert torch.equal(weight[mask], stored_tensor(model, name)[mask])
    got = get_masks(model)
    assert all(torch.equal(got[n], masks[n]) for n in masks)
    got["fc1.weight"].fill_(True)  # a copy: must not change the model's mask
    assert torch.equal(get_masks(model)["fc1.weight"], masks["fc1.weight"])


def test_training_keeps_zeros_and_masks_gradients() -> None:
    model = Net()
    params_before = list(model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    masks = _random_masks(model, keep=0.3)
    apply_masks(model, masks)
    # the optimizer built before masking still holds the very tensors being trained
    assert {id(p) for p in model.parameters()} == {id(p) for p in params_before}
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))
    start = {n: stored_tensor(model, n).detach().clone() for n in masks}
    for _ in range(5):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        for n, m in masks.items():
            grad = stored_tensor(model, n).grad
            assert grad is not None and torch.count_nonzero(grad[~m]) == 0
            assert torch.count_nonzero(grad[m]) > 0
        opt.step()
    sd = export_state_dict(model)
    for n, m in masks.items():
        assert torch.count_nonzero(sd[n][~m]) == 0  # still exactly zero after 5 steps
        assert not torch.equal(sd[n][m], start[n][m])  # while the live weights did train


def test_export_state_dict_loads_into_plain_model() -> None:
    model = Net().eval()
    apply_masks(model, _random_masks(model))
    assert any("parametrizations" in k for k in model.state_dict())
    plain = Net().eval()
    sd = export_state_dict(model)
    assert set(sd) == set(plain.state_dict())
    plain.load_state_dict(sd, strict=True)
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(plain(x), model(x))
    assert masked_param_names(model)  # exporting leaves the model masked


def test_merge_masked_state_dict_without_model() -> None:
    model = Net()
    masks = _random_masks(model)
    apply_masks(model, masks)
    merged = merge_masked_state_dict(model.state_dict())
    assert list(merged) == list(export_state_dict(model))
    assert torch.count_nonzero(merged["fc1.weight"][~masks["fc1.weight"]]) == 0


def test_bake_makes_zeros_permanent_and_plain_names() -> None:
    model = Net().eval()
    masks = _random_masks(model)
    apply_masks(model, masks)
    fc1_param = stored_tensor(model, "fc1.weight")
    x = torch.randn(4, 1, 8, 8)
    expected = model(x)
    assert bake(model) == list(masks)
    assert masked_param_names(model) == []
    assert type(model.fc1) is nn.Linear  # parametrized subclass is gone
    assert model.fc1.weight is fc1_param  # same Parameter object, optimizer-safe
    assert torch.count_nonzero(model.fc1.weight[~masks["fc1.weight"]]) == 0
    plain = Net().eval()
    plain.load_state_dict(model.state_dict(), strict=True)
    assert torch.equal(plain(x), expected)


def test_remove_masks_restores_dense_weights() -> None:
    model = Net()
    dense = {n: p.detach().clone() for n, p in model.named_parameters()}
    apply_masks(model, _random_masks(model))
    assert remove_masks(model, ["fc*.weight"]) == ["fc1.weight", "fc2.weight"]
    assert masked_param_names(model) == ["conv.weight"]
    remove_masks(model)
    for n, p in model.named_parameters():
        assert torch.equal(p, dense[n])


def test_reapply_replaces_mask_and_deepcopy_works() -> None:
    model = Net()
    first = _random_masks(model, keep=0.5)
    apply_masks(model, first)
    second = {"fc1.weight": torch.zeros_like(first["fc1.weight"])}
    apply_masks(model, second)
    assert torch.count_nonzero(model.fc1.weight) == 0
    clone = copy.deepcopy(model)
    assert torch.equal(get_masks(clone)["conv.weight"], first["conv.weight"])
    # masks accept 0/1 tensors of any dtype
    apply_masks(model, {"fc2.weight": torch.ones(3, 16)})
    assert torch.count_nonzero(model.fc2.weight) == 48


@pytest.mark.parametrize(
    ("masks", "match"),
    [
        ({"fc9.weight": torch.ones(1, dtype=torch.bool)}, "no parameter 'fc9.weight'"),
        ({"fc2.weight": torch.ones(16, 3, dtype=torch.bool)}, "shape"),
        ({"fc2.weight": torch.full((3, 16), 0.5)}, "boolean"),
    ],
)
def test_bad_masks_raise_clear_errors(masks: dict[str, torch.Tensor], match: str) -> None:
    model = Net()
    with pytest.raises(ConfigError, match=match):
        apply_masks(model, masks)
    assert masked_param_names(model) == []  # validated before anything was changed


@pytest.mark.gpu
def test_masks_follow_the_model_to_cuda() -> None:
    model = Net()
    masks = _random_masks(model)
    apply_masks(model, masks)
    model.cuda()
    out = model(torch.randn(2, 1, 8, 8, device="cuda"))
    assert out.is_cuda
    assert get_masks(model)["fc1.weight"].is_cuda
    assert torch.count_nonzero(model.fc1.weight[~masks["fc1.weight"].cuda()]) == 0


def _masked_linear() -> nn.Linear:
    torch.manual_seed(0)
    layer = nn.Linear(6, 4)
    apply_masks(layer, {"weight": layer.weight.abs() > 0.2})
    return layer


def test_bake_on_a_deepcopy_leaves_the_original_masked() -> None:
    # parametrize gives a deepcopy the original's generated class; baking the copy deleted the
    # 'weight' property from that shared class and broke the original
    original = _masked_linear()
    expected = original.weight.detach().clone()
    copied = copy.deepcopy(original)
    assert bake(copied) == ["weight"]
    assert type(copied) is nn.Linear and torch.equal(copied.weight, expected)
    assert masked_param_names(original) == ["weight"]
    assert torch.equal(original.weight, expected)  # still readable, still masked
    x = torch.randn(3, 6)
    assert torch.equal(original(x), copied(x))
    assert bake(original) == ["weight"] and type(original) is nn.Linear


def test_masking_or_unmasking_a_copy_does_not_touch_the_original() -> None:
    original = _masked_linear()
    copied = copy.deepcopy(original)
    apply_masks(copied, {"bias": torch.tensor([True, False, True, False])})
    assert masked_param_names(original) == ["weight"]
    assert masked_param_names(copied) == ["weight", "bias"]
    assert original.bias[1] != 0 and copied.bias[1] == 0
    remove_masks(copied)
    assert type(copied) is nn.Linear and masked_param_names(original) == ["weight"]
    assert torch.equal(original.weight, _masked_linear().weight)
