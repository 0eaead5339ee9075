"""Shared constants of the prunekit.methods tests."""

from __future__ import annotations

# A tiny CIFAR-style VGG for 8×8 digits: 8→4→2 after two pools, then the 2×2 average pool.
TINY_VGG = {"cfg": [8, "M", 16, "M", 32, 64]}
