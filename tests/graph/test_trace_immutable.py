"""Contract: ``trace`` never changes the user's model — values, devices, dtypes,
``requires_grad``, per-module training flags, attributes and hooks are identical afterwards,
on the test zoo and on modules that alias, share or tie their tensors."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from prunekit.graph import trace
from prunekit.models import build_model

warnings.filterwarnings("ignore", category=FutureWarning)

ZOO = [
    ("torchvision:resnet18", {}, (1, 3, 64, 64)),
    ("torchvision:mobilenet_v3_small", {}, (1, 3, 64, 64)),
    ("torchvision:shufflenet_v2_x0_5", {}, (1, 3, 64, 64)),
    ("torchvision:efficientnet_b0", {}, (1, 3, 64, 64)),
    ("torchvision:googlenet", {"aux_logits": True, "init_weights": False}, (1, 3, 96, 96)),
    ("torchvision:convnext_tiny", {}, (1, 3, 64, 64)),
    ("torchvision:swin_t", {}, (1, 3, 64, 64)),
    ("torchvision:vit_b_32", {"image_size": 64}, (1, 3, 64, 64)),
    ("zoo:vgg19", {}, (1, 3, 32, 32)),
    ("zoo:preresnet", {"depth": 29}, (1, 3, 32, 32)),
    ("zoo:densenet", {"depth": 22}, (1, 3, 32, 32)),
    ("zoo:lenet5", {}, (1, 1, 28, 28)),
]


class Aliased(nn.Module):
    """A submodule under two names, a parameter tied between two layers, an aliased buffer,
    a non-persistent buffer, a frozen BatchNorm inside a training model, a user hook."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.pe = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pe_again = self.pe  # CoaT-style shared position encoding
        self.b = nn.Conv2d(8, 8, 1)
        self.tied = nn.Conv2d(8, 8, 1)
        self.tied.weight = self.b.weight
        self.register_buffer("scale", torch.linspace(0.5, 1.5, 8).reshape(8, 1, 1))
        self.scale_alias = self.scale
        self.register_buffer("table", torch.arange(8.0).reshape(8, 1, 1), persistent=False)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Conv2d(8, 4, 1)
        self.cached: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        y = self.a(x)
        y = y + self.pe(y)
        y = self.b(y) * self.scale
        y = y + self.pe_again(y)
        y = self.tied(y) + self.scale_alias + self.table
        self.cached = y  # a forward that caches a tensor on the module
        return self.head(self.bn(y))


def _fingerprint(model: nn.Module) -> dict[str, Any]:
    state = {}
    named = list(model.named_parameters(remove_duplicate=False))
    named += list(model.named_buffers(remove_duplicate=False))
    for name, t in named:
        state[name] = (id(t), t.device, t.dtype, t.requires_grad, t.detach().clone())
    hooks = {
        path: {k: len(getattr(m, k)) for k in vars(m) if k.endswith("hooks")}
        for path, m in model.named_modules(remove_duplicate=False)
    }
    return {
        "state": state,
        "training": {p: m.training for p, m in model.named_modules(remove_duplicate=False)},
        "hooks": hooks,
        "attrs": {
            p: sorted((k, id(v)) for k, v in vars(m).items())
            for p, m in model.named_modules(remove_duplicate=False)
        },
    }


def _assert_same(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert before["training"] == after["training"]
    assert before["hooks"] == after["hooks"]
    assert before["attrs"] == after["attrs"]
    assert before["state"].keys() == after["state"].keys()
    for name, (tid, dev, dtype, grad, value) in before["state"].items():
        tid2, dev2, dtype2, grad2, value2 = after["state"][name]
        assert (tid, dev, dtype, grad) == (tid2, dev2, dtype2, grad2), name
        assert torch.equal(value, value2), name


def _mixed_modes(model: nn.Module) -> None:
    """Training model with every other BatchNorm frozen, a user hook, one frozen weight."""
    model.train()
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms[::2]:
        m.eval()
    first = next(m for m in model.modules() if list(m.parameters(recurse=False)))
    first.register_forward_hook(lambda mod, inp, out: None)
    next(first.parameters()).requires_grad_(False)


@pytest.mark.parametrize("spec,kwargs,shape", ZOO, ids=[z[0] for z in ZOO])
def test_trace_leaves_zoo_models_unchanged(spec: str, kwargs: dict[str, Any], shape: Any) -> None:
    model = build_model(spec, **kwargs)
    _mixed_modes(model)
    before = _fingerprint(model)
    trace(model, torch.randn(*shape))
    _assert_same(before, _fingerprint(model))


@pytest.mark.parametrize("pass_", ["never", "always"])
def test_trace_leaves_aliased_shared_and_tied_modules_unchanged(pass_: str) -> None:
    model = Aliased()
    _mixed_modes(model)
    before = _fingerprint(model)
    x = torch.randn(2, 3, 8, 8)
    trace(model, x, training_pass=pass_)
    _assert_same(before, _fingerprint(model))
    assert model.pe.weight.device.type == "cpu"
    model.eval()
    assert torch.isfinite(model(x)).all()  # and it still runs


def test_trace_of_a_model_run_for_real_leaves_it_unchanged() -> None:
    """A forward that needs real values (data-dependent Python) is traced on the real model."""

    class DataDependent(Aliased):
        def forward(self, x: Tensor) -> Tensor:
            if float(x.mean()) > 1e9:  # needs a real value: no meta trace
                return x
            return super().forward(x)

    model = DataDependent()
    _mixed_modes(model)
    before = _fingerprint(model)
    trace(model, torch.randn(2, 3, 8, 8), training_pass="always")
    _assert_same(before, _fingerprint(model))
