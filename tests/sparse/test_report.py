"""Sparsity report numbers, table and JSON, from models and from state dicts."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.sparse import apply_masks, sparsity_report


def _model() -> nn.Sequential:
    model = nn.Sequential(nn.Linear(10, 8), nn.BatchNorm1d(8), nn.Linear(8, 2, bias=False))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
        model[0].weight[:, :5] = 0  # 40 of 80 zero
    return model


def test_counts_and_totals() -> None:
    model = _model()
    apply_masks(model, {"2.weight": torch.tensor([[True] * 4 + [False] * 4] * 2)})
    rep = sparsity_report(model)
    rows = {r.name: r for r in rep.rows}
    assert list(rows) == ["0.weight", "0.bias", "1.weight", "1.bias", "2.weight"]
    assert (rows["0.weight"].numel, rows["0.weight"].nonzero) == (80, 40)
    assert rows["0.weight"].pruned_pct == 50.0 and rows["0.weight"].compression == 2.0
    assert rows["0.weight"].shape == (8, 10)
    assert (rows["2.weight"].numel, rows["2.weight"].nonzero) == (16, 8)
    assert rep.numel == 80 + 8 + 8 + 8 + 16
    assert rep.nonzero == 40 + 8 + 8 + 8 + 8
    assert rep.compression == pytest.approx(120 / 72)
    assert rep.sparsity == pytest.approx(48 / 120)


def test_table_and_json() -> None:
    rep = sparsity_report(_model(), params=["*.weight"])
    table = rep.to_table().splitlines()
    assert table[0].split() == ["name", "shape", "numel", "nonzero", "pruned", "%", "compression"]
    assert len(table) == 2 + 3 + 2  # header, rule, 3 rows, rule, total
    assert len({len(line) for line in table}) == 1  # aligned columns
    assert table[2].split() == ["0.weight", "8x10", "80", "40", "50.00", "2.00x"]
    assert table[-1].split()[0] == "total"
    data = json.loads(rep.to_json())
    assert data["total"] == {
        "numel": 104,
        "nonzero": 64,
        "pruned_pct": pytest.approx(100 * 40 / 104, abs=1e-4),
        "compression": pytest.approx(104 / 64, abs=1e-4),
    }
    assert data["rows"][0]["shape"] == [8, 10]


def test_all_zero_tensor_has_infinite_compression() -> None:
    model = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    rep = sparsity_report(model)
    assert math.isinf(rep.compression)
    assert json.loads(rep.to_json())["rows"][0]["compression"] is None
    assert "inf" in rep.to_table()


def test_state_dict_source_matches_model_and_skips_buffers() -> None:
    model = _model()
    apply_masks(model, {"0.weight": torch.rand(8, 10) > 0.7})
    from_model = sparsity_report(model)
    from_state = sparsity_report(model.state_dict())
    assert {r.name for r in from_state.rows} == {r.name for r in from_model.rows}
    assert (from_state.numel, from_state.nonzero) == (from_model.numel, from_model.nonzero)
    with pytest.raises(ConfigError, match="match no tensor"):
        sparsity_report(model, params=["conv*"])
