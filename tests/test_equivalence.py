"""Contract: for every model CI can afford, the physically pruned model computes exactly what
its soft mask computes (max |diff| <= 1e-4 * max |output|), and really is smaller."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torchvision

from prunekit.models import build_model
from prunekit.pipeline import PruneConfig, prune
from prunekit.report import count_params
from prunekit.verify import bn_zero_copy, max_rel_diff, soft_copy

warnings.filterwarnings("ignore", category=FutureWarning)

# (spec, kwargs, input shape, minimum params reduction at ratio 0.5)
MODELS = [
    ("torchvision:resnet18", {}, (1, 3, 64, 64), 0.5),
    ("torchvision:mobilenet_v3_small", {}, (1, 3, 64, 64), 0.3),
    ("torchvision:shufflenet_v2_x0_5", {}, (1, 3, 64, 64), 0.3),
    ("torchvision:squeezenet1_1", {}, (1, 3, 64, 64), 0.3),
    ("torchvision:regnet_x_400mf", {}, (1, 3, 64, 64), 0.5),
    ("torchvision:efficientnet_b0", {}, (1, 3, 64, 64), 0.3),
    ("torchvision:googlenet", {"aux_logits": True, "init_weights": False}, (1, 3, 96, 96), 0.3),
    ("torchvision:mnasnet0_5", {}, (1, 3, 64, 64), 0.3),
    ("torchvision:convnext_tiny", {}, (1, 3, 64, 64), 0.3),
    ("torchvision:swin_t", {}, (1, 3, 64, 64), 0.2),
    ("torchvision:vit_b_32", {"image_size": 64}, (1, 3, 64, 64), 0.3),
    ("torchvision:lraspp_mobilenet_v3_large", {"weights_backbone": None}, (1, 3, 64, 64), 0.3),
    ("zoo:vgg19", {}, (1, 3, 32, 32), 0.5),
    ("zoo:preresnet", {"depth": 29}, (1, 3, 32, 32), 0.2),
    ("zoo:densenet", {"depth": 22}, (1, 3, 32, 32), 0.2),
    # 0.45: default widths round up to the hardware multiple (300 → 160, 100 → 64 on AVX-512)
    ("zoo:lenet_300_100", {}, (1, 1, 28, 28), 0.45),
    ("zoo:lenet5", {}, (1, 1, 28, 28), 0.5),
    ("zoo:digits_cnn", {}, (1, 1, 8, 8), 0.5),
]


def _randomize_bn(model: torch.nn.Module) -> None:
    # Non-trivial BN statistics and affine terms, so zeroed channels really matter.
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.normal_(0, 0.5, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                if m.weight is not None:
                    m.weight.normal_(1, 0.5, generator=g)
                    m.bias.normal_(0, 0.5, generator=g)


@pytest.mark.parametrize("spec,kwargs,shape,min_red", MODELS, ids=[m[0] for m in MODELS])
def test_pruned_equals_soft_mask(spec, kwargs, shape, min_red):
    torch.manual_seed(0)
    model = build_model(spec, **kwargs).eval()
    _randomize_bn(model)
    dense = copy.deepcopy(model)
    x = torch.randn(*shape)
    result = prune(model, x, PruneConfig(ratio=0.5, criterion="l2"))
    assert result.plan.removed_units() > 0
    diff = max_rel_diff(soft_copy(dense, result.plan), model, x)
    assert diff <= 1e-4, f"{spec}: soft vs pruned max rel diff {diff:.2e}"
    red = 1 - count_params(model) / count_params(dense)
    assert red >= min_red, f"{spec}: params reduced by only {red:.1%}"


@pytest.mark.parametrize("spec", ["torchvision:resnet18", "zoo:vgg11", "torchvision:mobilenet_v2"])
def test_matches_independent_bn_zeroing(spec):
    """On BN-heavy models, removing channels equals zeroing only their BN scale and shift."""
    torch.manual_seed(0)
    model = build_model(spec).eval()
    _randomize_bn(model)
    dense = copy.deepcopy(model)
    x = torch.randn(1, 3, 32, 32)
    result = prune(model, x, PruneConfig(ratio=0.5, criterion="l1"))
    assert max_rel_diff(bn_zero_copy(dense, result.plan), model, x) <= 1e-4


def test_torchvision_zoo_size():
    # The coverage benchmark promises all of these; keep the count visible.
    assert len(torchvision.models.list_models(module=torchvision.models)) >= 80
