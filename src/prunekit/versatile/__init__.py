"""Versatile Filters (Wang et al., NeurIPS 2018): compact CNNs whose secondary filters are crops
and channel shifts of stored primary filters.

* :class:`VersatileConv2d` — the layer (one convolution with the unfolded weight);
* :func:`versatilize` / :func:`to_dense` — convert a model's convolutions there and back
  (recorded as :class:`~prunekit.record.Conversion` steps for ``prunekit.save``/``load``);
* :func:`versatile_costs` — stored parameters, memory and MACs (executed and paper-counted);
* :func:`naive_versatile_conv2d` — the same computation as ``s·n`` separate convolutions.

Importing this package also teaches the dependency graph and surgery the versatile layer.

Example:
    >>> model = prunekit.models.build_model("zoo:vgg16", num_classes=10)
    >>> report = versatilize(model, VersatileConfig(mode="spatial"))
    >>> versatile_costs(model, torch.randn(1, 3, 32, 32)).conv_fraction
"""

from prunekit.versatile import graph as _graph  # noqa: F401  (graph + surgery handlers)
from prunekit.versatile.convert import (
    LayerSetting,
    VersatileConfig,
    VersatileReport,
    to_dense,
    versatile_record,
    versatilize,
)
from prunekit.versatile.costs import (
    LayerCost,
    VersatileCosts,
    summary_line,
    versatile_costs,
    versatile_summary,
)
from prunekit.versatile.layer import VersatileConv2d, unfold_weight, versatile_conv2d
from prunekit.versatile.naive import naive_versatile_conv2d

__all__ = [
    "LayerCost",
    "LayerSetting",
    "VersatileConfig",
    "VersatileConv2d",
    "VersatileCosts",
    "VersatileReport",
    "naive_versatile_conv2d",
    "summary_line",
    "to_dense",
    "unfold_weight",
    "versatile_conv2d",
    "versatile_costs",
    "versatile_record",
    "versatile_summary",
    "versatilize",
]
