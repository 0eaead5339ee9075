"""Network Slimming channel selection of the recipe executor: the global allocator's ranking
(one global order of |γ|), a per-layer floor and ``round_to``."""

from __future__ import annotations

import torch

from prunekit.recipes.executor import slim_masks

G1 = torch.tensor([0.01, 0.02, 0.03, 0.04])  # all small: a global threshold would empty it
G2 = torch.tensor([1.0, 0.5, 0.9, 0.015])


def test_global_threshold_with_floor() -> None:
    keep = slim_masks({"g1": G1, "g2": G2}, percent=0.5, floor=1)
    assert keep["g2"].tolist() == [True, True, True, False]
    assert keep["g1"].tolist() == [False, False, False, True]  # the floor keeps its largest
    keep2 = slim_masks({"g1": G1, "g2": G2}, percent=0.5, floor=2)
    assert keep2["g1"].tolist() == [False, False, True, True]


def test_round_to_gives_back_the_largest_channels_up_to_a_multiple() -> None:
    keep = slim_masks({"g1": G1, "g2": G2}, percent=0.5, round_to=2)
    assert keep["g2"].tolist() == [True, True, True, True]  # 3 kept -> 4 (capped at 4)
    assert keep["g1"].tolist() == [False, False, True, True]  # floor 1 -> 2


def test_pruned_channels_stay_pruned() -> None:
    current = {"g2": torch.tensor([False, True, True, True])}  # γ[0] pruned before
    keep = slim_masks({"g1": G1, "g2": G2}, percent=0.25, current=current)
    assert not bool(keep["g2"][0])


def test_floor_moves_the_cut_instead_of_removing_less() -> None:
    # The global allocator's rule: exactly percent of the channels go; a layer held by its
    # floor passes the rest of the budget on to the next-lowest channels elsewhere.
    keep = slim_masks({"g1": G1, "g2": G2}, percent=0.5, floor=2)
    assert sum(int((~m).sum()) for m in keep.values()) == 4
    assert keep["g2"].tolist() == [True, False, True, False]
