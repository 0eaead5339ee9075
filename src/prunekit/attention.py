"""Transformer blocks: what prunekit knows about the modules of common vision transformers.

Registered here (imported by ``prunekit``, so every trace and surgery sees it):

* size attributes (:func:`prunekit.graph.module_ops.track_sizes`): torchvision's
  ``VisionTransformer.hidden_dim`` and timm's MetaFormer ``Scale.shape`` follow the pruned
  residual stream.
"""

from __future__ import annotations

from torchvision.models.vision_transformer import VisionTransformer

from prunekit.graph.module_ops import SizeAttr, track_sizes

track_sizes(VisionTransformer, SizeAttr("hidden_dim", "conv_proj.weight", 0))
track_sizes("timm.models.metaformer.Scale", SizeAttr("shape", "scale", 0, index=0))
