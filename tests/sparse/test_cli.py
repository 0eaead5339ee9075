"""``prunekit sparsity``: table and JSON from a safetensors file or folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from safetensors.torch import save_file
from torch import nn

from prunekit.cli import sparse as cli_sparse
from prunekit.errors import CheckpointError
from prunekit.sparse import export_state_dict, prune_magnitude


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    cli_sparse.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    model = nn.Sequential(nn.Linear(20, 10), nn.ReLU(), nn.Linear(10, 5))
    prune_magnitude(model, 0.75)
    save_file(
        {k: v.contiguous() for k, v in export_state_dict(model).items()}, tmp_path / "m.safetensors"
    )
    return tmp_path


def test_table_from_folder(saved: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["sparsity", str(saved)]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in out[2:-2]}
    assert rows["0.weight"][2:5] == ["200", "50", "75.00"]
    assert rows["2.weight"][2:5] == ["50", "12", "76.00"]  # round(37.5) = 38 pruned
    assert out[-1].split()[1:3] == ["265", "77"]


def test_json_from_file(saved: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["sparsity", str(saved / "m.safetensors"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total"]["nonzero"] == 77


def test_missing_and_corrupt_inputs(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        _run(["sparsity", str(tmp_path / "nope.safetensors")])
    with pytest.raises(CheckpointError, match=r"no \.safetensors"):
        _run(["sparsity", str(tmp_path)])
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read"):
        _run(["sparsity", str(bad)])


def test_registered_in_main_cli(saved: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from prunekit.cli import main

    assert main(["sparsity", str(saved / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
