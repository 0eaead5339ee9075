"""How the dependency graph and surgery see :class:`~prunekit.versatile.VersatileConv2d`.

A versatile layer's unit of pruning is one **primary filter**: removing it removes its ``s·n``
output channels (contiguous, see :mod:`prunekit.versatile.layer`), their bias entries, the
BatchNorm entries after them and the consumers' input channels — all handled by the graph once
the layer's outputs carry the primary filter's label ``s·n`` times.

Input channels:

* spatial variant only (``δ = 0``): input channel ``c`` is column ``c`` of every primary filter,
  so it is pruned like an ordinary conv's input (``weight`` dim 1);
* channel variant (``δ > 0``): a primary filter covers the window ``j·g … j·g+ĉ−1`` of the
  inputs; removing an input channel would shift every window, which no slicing of the stored
  filters reproduces, so those inputs are kept whole (recorded reason).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from prunekit.graph.labels import along
from prunekit.graph.ops import _arg, _bias
from prunekit.graph.tracer import Tracer, register_op
from prunekit.surgery import register_module
from prunekit.versatile.layer import VersatileConv2d, channel_offsets

CHANNEL_INPUTS_KEPT = (
    "channel-variant versatile conv (delta > 0): its primary filters slide over the input "
    "channels with stride g, so removing an input would shift every window (kept whole)"
)


@register_op("versatile_conv2d")
def _versatile_conv(tr: Tracer, func: Any, args: Any, kwargs: Any, out: Any) -> None:
    x, w = args[0], _arg(args, kwargs, 1, "weight")
    b = _arg(args, kwargs, 2, "bias")
    delta, g = int(_arg(args, kwargs, 7, "delta", 0)), int(_arg(args, kwargs, 8, "g", 1))
    wname, cin, cout = tr.name_of(w), x.shape[1], out.shape[1]
    rows = along(tr.labels(x), 1, cin)
    if wname is None:
        tr.freeze(rows, "versatile primary filters computed in forward")
        return
    per = cout // w.shape[0]  # s·n outputs per primary filter, contiguous
    out_ids = np.repeat(tr.slot(wname, 0, w.shape[0]), per)
    if channel_offsets(delta, g) == 1:
        tr.merge_rows(rows, tr.slot(wname, 1, w.shape[1]))
    else:
        tr.freeze(rows, CHANNEL_INPUTS_KEPT)
    _bias(tr, b, out_ids)
    tr.set_labels(out, torch.from_numpy(out_ids.copy()).reshape(1, cout, 1, 1))
    # MACs as executed: each stored weight is used s·n·c/ĉ times per output position.
    tr.macs_per_weight[wname] = out.numel() / out.shape[0] / cout * per * cin / w.shape[1]


@register_module(VersatileConv2d)
def _versatile_sizes(mod: Any, before: dict[str, Any]) -> None:
    q, c_hat = mod.weight.shape[:2]
    mod.out_channels = int(q) * mod.s * mod.n
    mod.in_channels = int(c_hat) + mod.delta
