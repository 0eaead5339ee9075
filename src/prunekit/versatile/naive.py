"""The versatile convolution written as the paper describes it: ``s·n`` separate convolutions.

Independent of :mod:`prunekit.versatile.layer` (no unfolded weight, no masks): every secondary
filter is a real crop of the primary filter applied to a real slice of the input channels with
its own, smaller padding (Wang et al. 2018, Eq. 3 and Eq. 6). It is the reference the one-conv
layer is tested against and the baseline of ``bench/versatile.py``; it is not used for training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from prunekit.versatile.layer import channel_offsets, explicit_padding, num_crops

__all__ = ["naive_versatile_conv2d"]


def naive_versatile_conv2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: tuple[int, int] = (1, 1),
    padding: str | tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
    spatial: bool = True,
    delta: int = 0,
    g: int = 1,
    padding_mode: str = "zeros",
) -> Tensor:
    """Versatile convolution as ``s·n`` convolutions (same arguments as ``versatile_conv2d``).

    Crop ``i`` (rows/columns ``i … k−1−i`` of the primary filter) is applied with padding
    ``p − i·dilation`` on each side; where that is negative the padded input is cropped instead.
    Channel offset ``j`` reads input channels ``j·g … j·g + ĉ − 1``.

    Returns:
        ``[B, out, H', W']``, output ``q·(s·n) + i·n + j`` for primary ``q``, crop ``i``,
        offset ``j``.

    Example:
        >>> w = torch.randn(4, 6, 3, 3)
        >>> naive_versatile_conv2d(torch.randn(1, 8, 5, 5), w, delta=2, g=1).shape
        torch.Size([1, 24, 3, 3])
    """
    q, c_hat, k, _ = weight.shape
    s, n = num_crops(k, spatial), channel_offsets(delta, g)
    left, right, top, bottom = explicit_padding(padding, k, dilation)
    mode = "constant" if padding_mode == "zeros" else padding_mode
    padded = F.pad(input, (left, right, top, bottom), mode=mode)
    h, w = padded.shape[-2:]
    outs = []
    for i in range(s):
        crop = weight[:, :, i : k - i, i : k - i]
        dh, dw = i * dilation[0], i * dilation[1]
        # The smaller filter sees the padded input shrunk by i·dilation on every side.
        region = padded[:, :, dh : h - dh, dw : w - dw]
        for j in range(n):
            part = region[:, j * g : j * g + c_hat]
            outs.append(F.conv2d(part, crop, None, stride, 0, dilation))
    out = torch.stack(outs, dim=2)  # [B, q, s·n, H', W'], crop-major
    out = out.reshape(out.shape[0], q * s * n, *out.shape[-2:])
    return out if bias is None else out + bias.reshape(1, -1, 1, 1)
