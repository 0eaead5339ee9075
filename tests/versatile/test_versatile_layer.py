"""VersatileConv2d equals the s·n-convolution formulation exactly (float64), outputs and grads."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from prunekit.errors import ConfigError
from prunekit.versatile import VersatileConv2d, naive_versatile_conv2d, unfold_weight

# (kernel, spatial) x (stride, padding, dilation) x (delta, g); c = 6 input channels.
KERNELS = [(1, True), (2, True), (3, True), (3, False), (4, True), (5, True)]
GEOMETRY = [
    (1, 0, 1), (1, 1, 1), (1, 2, 1), (2, 1, 1), (2, 0, 2), (1, 2, 2), (3, (2, 1), 1),
    (1, "same", 1), (1, "same", 2), (1, "valid", 1), ((2, 1), (1, 0), (1, 2)),
]  # fmt: skip
CHANNEL = [(0, 1), (1, 1), (2, 1), (2, 2), (4, 2)]
CASES = [
    (k, sp, st, pad, dil, dl, g)
    for (k, sp), (st, pad, dil), (dl, g) in itertools.product(KERNELS, GEOMETRY, CHANNEL)
    if (sp and k > 1) or dl  # at least one variant on
]


def _naive(conv: VersatileConv2d, x: torch.Tensor) -> torch.Tensor:
    return naive_versatile_conv2d(
        x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation,
        conv.spatial, conv.delta, conv.g, conv.padding_mode,
    )  # fmt: skip


def _both(conv: VersatileConv2d, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(one-conv, naive) pairs: output, d/dinput, d/dweight, d/dbias."""
    results = []
    for fn in (conv, lambda t: _naive(conv, t)):
        conv.zero_grad()
        xi = x.clone().requires_grad_(True)
        y = fn(xi)
        upstream = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)
        (y * upstream).sum().backward()
        grads = [xi.grad, conv.weight.grad] + ([conv.bias.grad] if conv.bias is not None else [])
        results.append([y.detach(), *[gr.clone() for gr in grads]])
    return list(zip(*results))


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(("k", "spatial", "stride", "padding", "dilation", "delta", "g"), CASES)
def test_one_conv_equals_naive(k, spatial, stride, padding, dilation, delta, g, bias):
    s = (k + 1) // 2 if spatial else 1
    n = delta // g + 1 if delta else 1
    conv = VersatileConv2d(
        6, 2 * s * n, k, stride, padding, dilation, bias=bias, spatial=spatial, delta=delta, g=g,
        dtype=torch.float64,
    )  # fmt: skip
    x = torch.randn(2, 6, 9, 13, dtype=torch.float64)  # non-square input
    pairs = _both(conv, x)
    assert pairs[0][0].shape[1] == conv.out_channels
    for one, naive in pairs:
        assert one.shape == naive.shape
        torch.testing.assert_close(one, naive, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("padding", [2, "same"])
def test_padding_modes_equal_naive(mode, padding):
    conv = VersatileConv2d(6, 12, 5, padding=padding, padding_mode=mode, delta=2, g=2,
                           dtype=torch.float64)  # fmt: skip
    for one, naive in _both(conv, torch.randn(2, 6, 8, 11, dtype=torch.float64)):
        torch.testing.assert_close(one, naive, rtol=1e-12, atol=1e-12)


def test_spatial_secondary_filters_are_the_centred_crops():
    conv = VersatileConv2d(3, 3, 5, padding=2, dtype=torch.float64)  # one primary, s = 3
    w = conv.dense_weight().detach()
    primary = conv.weight.detach()[0]
    for i in range(3):
        inner = w[i, :, i : 5 - i, i : 5 - i]
        torch.testing.assert_close(inner, primary[:, i : 5 - i, i : 5 - i])
        assert float(w[i].abs().sum() - inner.abs().sum()) == 0.0  # zero outside the crop


def test_channel_offsets_shift_the_primary_filter():
    conv = VersatileConv2d(8, 3, 1, spatial=False, delta=4, g=2, bias=False)  # n = 3, ĉ = 4
    w = conv.dense_weight().detach()[:, :, 0, 0]
    p = conv.weight.detach()[0, :, 0, 0]
    for j in range(3):
        expected = torch.zeros(8)
        expected[2 * j : 2 * j + 4] = p
        torch.testing.assert_close(w[j], expected)


def test_shapes_and_counts():
    conv = VersatileConv2d(16, 32, 3, padding=1, delta=2, g=2)
    assert (conv.s, conv.n) == (2, 2)
    assert tuple(conv.weight.shape) == (8, 14, 3, 3)
    assert tuple(conv.bias.shape) == (32,)
    assert tuple(conv(torch.randn(1, 16, 7, 10)).shape) == (1, 32, 7, 10)
    assert tuple(unfold_weight(conv.weight, spatial=True, delta=2, g=2).shape) == (32, 16, 3, 3)


def test_one_conv_matches_f_conv2d_on_the_unfolded_weight():
    conv = VersatileConv2d(6, 12, 3, stride=2, padding=1, delta=2, g=1)
    x = torch.randn(3, 6, 11, 9)
    ref = F.conv2d(x, conv.dense_weight(), conv.bias, 2, 1)
    assert torch.equal(conv(x), ref)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kernel_size": (1, 3)}, "square kernel"),
        ({"groups": 2}, "groups=1"),
        ({"delta": 8}, "delta must satisfy"),
        ({"delta": -1}, "delta must satisfy"),
        ({"delta": 3, "g": 2}, "divisor of delta"),
        ({"delta": 2, "g": 0}, "divisor of delta"),
        ({"out_channels": 9}, "divisible by s·n = 2·1"),
        ({"out_channels": 16, "delta": 4, "g": 2}, "divisible by s·n = 2·3"),
        ({"padding_mode": "mirror"}, "padding_mode"),
        ({"padding": "same", "stride": 2}, "stride 1"),
    ],
)
def test_invalid_arguments_one_clear_error(kwargs, match):
    args = {"in_channels": 8, "out_channels": 12, "kernel_size": 3} | kwargs
    with pytest.raises(ConfigError, match=match):
        VersatileConv2d(**args)
