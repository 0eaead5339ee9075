"""``VersatileConv2d``: a convolution whose secondary filters live inside stored primary filters.

Wang et al., "Learning Versatile Filters for Efficient Convolutional Neural Networks",
NeurIPS 2018:

* **Spatial versatile filters** (paper §3.1). A stored k×k primary filter ``f`` yields
  ``s = ⌈k/2⌉`` secondary filters ``f_i = M_i ∘ f``: its centred ``(k−2i)×(k−2i)`` crops,
  ``i = 0…s−1``, each applied with padding ``p − i·dilation`` so every output has the same size.
* **Channel versatile filters** (paper §3.2, Eq. 6). A primary filter covers ``ĉ = c − δ`` input
  channels and slides over the ``c`` input channels with stride ``g``: it is applied at
  ``n = δ/g + 1`` channel offsets ``0, g, …, δ``.

One primary filter therefore gives ``s·n`` output channels, and a layer with ``out_channels``
outputs stores ``out_channels / (s·n)`` primary filters of ``ĉ×k×k`` weights.

Instead of running ``s·n`` convolutions, the layer builds the equivalent ordinary weight — each
crop is the primary filter times a 0/1 ring mask, each channel offset a zero-padded shift — as a
differentiable tensor op and runs **one** convolution. Cropping a filter to its centre and
reducing the padding by ``i·dilation`` reads exactly the input positions the zero-masked full
filter reads with padding ``p``, so the two compute the same output (tested exactly in float64
against :func:`prunekit.versatile.naive.naive_versatile_conv2d`).

Output channel order: the ``s·n`` outputs of primary filter ``q`` are contiguous, crop-major:
output ``o = q·(s·n) + i·n + j`` is crop ``i`` (0 = the full k×k filter, ``s−1`` the smallest)
at channel offset ``j·g``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair
from torch.overrides import wrap_torch_function

from prunekit.errors import ConfigError

__all__ = [
    "VersatileConv2d",
    "channel_offsets",
    "explicit_padding",
    "num_crops",
    "unfold_weight",
    "versatile_conv2d",
]

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def num_crops(kernel_size: int, spatial: bool) -> int:
    """Secondary filters per primary filter from the spatial variant: ``s = ⌈k/2⌉`` (or 1)."""
    return (kernel_size + 1) // 2 if spatial else 1


def channel_offsets(delta: int, g: int) -> int:
    """Channel positions of one primary filter: ``n = δ/g + 1`` (paper Eq. 6)."""
    return delta // g + 1 if delta else 1


def _masks(k: int, s: int, like: Tensor) -> Tensor:
    """``[s, k, k]`` 0/1 masks; mask ``i`` keeps the centred ``(k−2i)×(k−2i)`` square."""
    idx = torch.arange(k, device=like.device)
    ring = torch.minimum(idx, k - 1 - idx)  # distance to the border, per row/column
    depth = torch.minimum(ring[:, None], ring[None, :])
    return (depth[None] >= torch.arange(s, device=like.device)[:, None, None]).to(like.dtype)


def unfold_weight(weight: Tensor, *, spatial: bool, delta: int, g: int) -> Tensor:
    """The ordinary conv weight equivalent to primary filters ``weight``.

    Args:
        weight: primary filters ``[out/(s·n), c−δ, k, k]``.
        spatial: whether the spatial variant is on.
        delta: δ, input channels a primary filter does not cover.
        g: channel stride of the channel variant.

    Returns:
        ``[out, c, k, k]`` in the documented output order; differentiable in ``weight``.

    Example:
        >>> unfold_weight(torch.randn(4, 6, 3, 3), spatial=True, delta=2, g=1).shape
        torch.Size([24, 8, 3, 3])
    """
    q, c_hat, k, _ = weight.shape
    s, n = num_crops(k, spatial), channel_offsets(delta, g)
    w = weight.unsqueeze(1) * _masks(k, s, weight)[None, :, None]  # [q, s, ĉ, k, k]
    if n > 1:
        # Offset j puts the ĉ covered channels at j·g … j·g+ĉ−1 of the c inputs.
        shifted = [F.pad(w, (0, 0, 0, 0, j * g, delta - j * g)) for j in range(n)]
        w = torch.stack(shifted, dim=2)  # [q, s, n, c, k, k]
    else:
        w = w.unsqueeze(2)
    return w.reshape(q * s * n, c_hat + delta, k, k)


def explicit_padding(
    padding: str | tuple[int, int], kernel_size: int, dilation: tuple[int, int]
) -> tuple[int, int, int, int]:
    """``(left, right, top, bottom)`` of a conv's padding; ``"same"`` puts the odd one right."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        out: list[int] = []
        for d in (dilation[1], dilation[0]):
            total = d * (kernel_size - 1)
            out += [total // 2, total - total // 2]
        return (out[0], out[1], out[2], out[3])
    assert not isinstance(padding, str)
    return (padding[1], padding[1], padding[0], padding[0])


def _relevant(input: Tensor, weight: Tensor, bias: Tensor | None = None, *_: Any, **__: Any) -> Any:
    return (input, weight) if bias is None else (input, weight, bias)


@wrap_torch_function(_relevant)
def versatile_conv2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: tuple[int, int] = (1, 1),
    padding: str | tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
    spatial: bool = True,
    delta: int = 0,
    g: int = 1,
) -> Tensor:
    """Functional versatile convolution: one ``F.conv2d`` with :func:`unfold_weight`.

    It is one torch function (overridable by ``__torch_function__``), so prunekit's tracer sees
    the primary filters as the layer's parameter instead of an anonymous computed weight.

    Args:
        input: ``[B, c, H, W]``.
        weight: primary filters ``[out/(s·n), c−δ, k, k]``.
        bias: ``[out]`` or None.
        stride, padding, dilation: as for ``F.conv2d`` (zero padding).
        spatial, delta, g: the versatile hyper-parameters (module docstring).

    Returns:
        ``[B, out, H', W']`` in the documented output channel order.
    """
    full = unfold_weight(weight, spatial=spatial, delta=delta, g=g)
    return F.conv2d(input, full, bias, stride, padding, dilation)


def _square(kernel_size: int | Sequence[int]) -> int:
    kh, kw = _pair(kernel_size)
    if kh != kw:
        raise ConfigError(
            f"VersatileConv2d needs a square kernel (secondary filters are centred k×k crops), "
            f"got kernel_size={(kh, kw)}"
        )
    return int(kh)


def _check(in_channels: int, out_channels: int, k: int, spatial: bool, delta: int, g: int) -> None:
    if not 0 <= delta < in_channels:
        raise ConfigError(
            f"VersatileConv2d: delta must satisfy 0 <= delta < in_channels={in_channels} "
            f"(a primary filter covers in_channels - delta channels), got delta={delta}"
        )
    if g < 1 or (delta and delta % g):
        raise ConfigError(
            f"VersatileConv2d: g must be a positive divisor of delta={delta} (n = delta/g + 1 "
            f"channel positions), got g={g}"
        )
    s, n = num_crops(k, spatial), channel_offsets(delta, g)
    if out_channels % (s * n):
        raise ConfigError(
            f"VersatileConv2d: out_channels={out_channels} must be divisible by s·n = {s}·{n} "
            f"= {s * n} (one primary filter gives s·n outputs); pick out_channels = "
            f"{math.ceil(out_channels / (s * n)) * s * n} or other delta/g"
        )


class VersatileConv2d(nn.Module):
    """Drop-in ``nn.Conv2d`` (``groups=1``) built from versatile filters (module docstring).

    Args:
        in_channels: input channels ``c``.
        out_channels: output channels; divisible by ``s·n``.
        kernel_size: square kernel ``k`` (int or ``(k, k)``).
        stride, padding, dilation, bias, padding_mode: as for ``nn.Conv2d``
            (``padding`` may be ``"same"``/``"valid"``).
        spatial: spatial versatile filters on (``s = ⌈k/2⌉`` crops) or off (``s = 1``).
        delta: δ, ``0 <= δ < in_channels``; 0 turns the channel variant off.
        g: channel stride, a divisor of δ; ``n = δ/g + 1``.

    Attributes:
        weight: the primary filters, ``[out_channels/(s·n), in_channels − δ, k, k]``.
        bias: one entry per output channel (``[out_channels]``), or None.
        s, n: secondary filters per primary from the spatial and channel variants.

    Raises:
        ConfigError: non-square kernel, groups ≠ 1, δ out of range, g not dividing δ,
            out_channels not divisible by ``s·n``, or an unknown padding mode.

    Example:
        >>> conv = VersatileConv2d(16, 32, 3, padding=1, delta=2, g=2)  # s=2, n=2
        >>> conv.weight.shape, conv(torch.randn(1, 16, 8, 8)).shape
        (torch.Size([8, 14, 3, 3]), torch.Size([1, 32, 8, 8]))
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: str | int | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        spatial: bool = True,
        delta: int = 0,
        g: int = 1,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        k = _square(kernel_size)
        if groups != 1:
            raise ConfigError(
                f"VersatileConv2d supports groups=1 only (got groups={groups}); keep grouped "
                "and depthwise convolutions as nn.Conv2d"
            )
        if padding_mode not in _PADDING_MODES:
            raise ConfigError(f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")
        _check(in_channels, out_channels, k, spatial, int(delta), int(g))
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = (k, k)
        self.stride, self.dilation = _pair(stride), _pair(dilation)
        self.padding = padding if isinstance(padding, str) else _pair(padding)
        if self.padding == "same" and self.stride != (1, 1):
            raise ConfigError("padding='same' needs stride 1 (as in nn.Conv2d)")
        self.groups, self.padding_mode = 1, padding_mode
        self.spatial, self.delta, self.g = bool(spatial), int(delta), int(g)
        factory = {"device": device, "dtype": dtype}
        shape = (out_channels // (self.s * self.n), in_channels - self.delta, k, k)
        self.weight = nn.Parameter(torch.empty(shape, **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self.reset_parameters()

    @property
    def s(self) -> int:
        """Crops per primary filter (spatial variant)."""
        return num_crops(self.kernel_size[0], self.spatial)

    @property
    def n(self) -> int:
        """Channel offsets per primary filter (channel variant)."""
        return channel_offsets(self.delta, self.g)

    def reset_parameters(self) -> None:
        """``nn.Conv2d``'s initialisation, with the primary filter's fan-in ``ĉ·k²``."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.kernel_size[0] ** 2
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            nn.init.uniform_(self.bias, -bound, bound)

    def dense_weight(self) -> Tensor:
        """The equivalent ordinary ``[out, in, k, k]`` weight (differentiable)."""
        return unfold_weight(self.weight, spatial=self.spatial, delta=self.delta, g=self.g)

    def deploy_module(self) -> nn.Conv2d:
        """An ``nn.Conv2d`` holding :meth:`dense_weight`: the very convolution this layer runs
        (same weight, same ``F.conv2d`` call), for runtimes that know only standard layers.
        :func:`prunekit.export.to_onnx` swaps any module with a ``deploy_module()`` this way.

        Example:
            >>> conv = VersatileConv2d(16, 32, 3, padding=1).deploy_module()
        """
        w = self.weight
        conv = nn.Conv2d(
            self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
            self.dilation, bias=self.bias is not None,
            padding_mode=self.padding_mode,  # type: ignore[arg-type]  # checked in __init__
            device=w.device, dtype=w.dtype,
        )  # fmt: skip
        with torch.no_grad():
            conv.weight.copy_(self.dense_weight())
            if conv.bias is not None and self.bias is not None:
                conv.bias.copy_(self.bias)
        conv.weight.requires_grad_(w.requires_grad)
        return conv.train(self.training)

    def forward(self, input: Tensor) -> Tensor:
        padding: str | tuple[int, int] = self.padding
        if self.padding_mode != "zeros":
            pads = explicit_padding(self.padding, self.kernel_size[0], self.dilation)
            input = F.pad(input, pads, mode=self.padding_mode)
            padding = (0, 0)
        return versatile_conv2d(
            input, self.weight, self.bias, self.stride, padding, self.dilation,
            self.spatial, self.delta, self.g,
        )  # fmt: skip

    def extra_repr(self) -> str:
        text = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}"
        )
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.bias is None:
            text += ", bias=False"
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode!r}"
        return (
            text
            + f", spatial={self.spatial}, delta={self.delta}, g={self.g} (s={self.s}, n={self.n})"
        )
