"""Structure masks inside one tensor: which entries each structure covers, int(s·n) counts,
thresholds, Bernoulli scaling, and pruned structures staying pruned."""

from __future__ import annotations

import pytest
import torch

from prunekit.errors import ConfigError
from prunekit.sparse.groups import expand, group_masks, structure_scores


@pytest.fixture
def conv() -> torch.Tensor:
    return torch.randn(8, 16, 3, 3, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("structure", "count", "dims"),
    [("filters", 8, (1, 2, 3)), ("channels", 16, (0, 2, 3)), ("kernels", 128, (2, 3))],
)
def test_whole_structures_and_int_counts(
    conv: torch.Tensor, structure: str, count: int, dims: tuple[int, ...]
) -> None:
    mask = group_masks({"w": conv}, {"w": 0.3}, structure)["w"]
    alive = mask.any(dim=dims)
    assert torch.equal(mask, expand(conv, structure, alive))  # all or nothing per structure
    assert int((~alive).sum()) == int(0.3 * count)  # Distiller's int(s·n)
    scores = structure_scores(conv, structure)
    assert float(scores.flatten()[~alive.flatten()].max()) < float(
        scores.flatten()[alive.flatten()].min()
    )


def test_rows_cols_and_blocks(conv: torch.Tensor) -> None:
    fc = torch.randn(10, 64)
    cols = group_masks({"fc": fc}, {"fc": 0.5}, "cols")["fc"]
    assert int((~cols.any(0)).sum()) == 32 and cols.any(1).all()
    rows = group_masks({"fc": fc}, {"fc": 0.5}, "rows")["fc"]
    assert int((~rows.any(1)).sum()) == 5
    blocks = group_masks({"w": conv}, {"w": 0.5}, "blocks", block_shape=[1, 8, 1, 1])["w"]
    b = blocks.reshape(16, 8, 9)  # 8 consecutive (filter, channel) entries per kernel position
    assert (b == b[:, :1]).all() and int((~b[:, 0]).sum()) == int(0.5 * 16 * 9)
    with pytest.raises(ConfigError, match="rows are structures of 2-D"):
        group_masks({"w": conv}, {"w": 0.5}, "rows")
    with pytest.raises(ConfigError, match="does not tile"):
        group_masks({"w": conv}, {"w": 0.5}, "blocks", block_shape=[1, 5, 1, 1])


def test_thresholds_mean_abs_and_max() -> None:
    w = torch.tensor([[0.1, -0.1], [0.4, 0.0], [0.05, 0.5]])
    mean = group_masks({"w": w}, {"w": 0.15}, "rows", thresholds="mean_abs")["w"]
    assert mean.any(1).tolist() == [False, True, True]  # means 0.1, 0.2, 0.275
    peak = group_masks({"w": w}, {"w": 0.45}, "rows", thresholds="max")["w"]
    assert peak.any(1).tolist() == [False, False, True]


def test_pruned_structures_stay_pruned(conv: torch.Tensor) -> None:
    first = group_masks({"w": conv}, {"w": 0.25}, "filters")["w"]
    grown = conv * 10 * (~first)  # the pruned filters are now the largest
    second = group_masks({"w": grown}, {"w": 0.5}, "filters", current={"w": first})["w"]
    assert not (second & ~first).any() and int((~second.any((1, 2, 3))).sum()) == 4


def test_bernoulli_scales_the_kept_filters(conv: torch.Tensor) -> None:
    gen = torch.Generator().manual_seed(3)
    mask = group_masks({"w": conv}, {"w": 0.5}, "filters", criterion="bernoulli", generator=gen)[
        "w"
    ]
    per_filter = mask.flatten(1)[:, 0]
    kept = int((per_filter > 0).sum())
    assert 0 < kept < 8 and torch.allclose(
        per_filter[per_filter > 0], torch.full((kept,), 8 / kept)
    )
