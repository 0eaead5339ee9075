"""Pickle-free checkpoints: exact round trip, atomic layout, corruption detected."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from prunekit.errors import CheckpointError
from prunekit.train import latest_checkpoint, load_checkpoint, save_checkpoint
from prunekit.train.checkpoint import decode, encode


def _optimizer_state() -> dict:
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=0.01)
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    return opt.state_dict()


def test_encode_decode_round_trip_exact() -> None:
    obj = {
        "int_keys": {0: torch.arange(3), 7: {"step": torch.tensor(2.0)}},
        "tuple": (1, (2.5, "x"), None),
        "np": np.arange(6, dtype=np.uint32).reshape(2, 3),
        "list": [True, float("inf"), torch.zeros(0)],
        "__weird": 1,
    }
    tensors: dict[str, torch.Tensor] = {}
    data = json.loads(json.dumps(encode(obj, tensors)))
    back = decode(data, tensors)
    assert torch.equal(back["int_keys"][0], torch.arange(3)) and 7 in back["int_keys"]
    assert back["tuple"] == (1, (2.5, "x"), None)
    assert back["np"].dtype == np.uint32 and back["np"].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert back["list"][:2] == [True, float("inf")] and back["list"][2].numel() == 0
    assert back["__weird"] == 1
    with pytest.raises(CheckpointError, match="cannot store"):
        encode({"f": lambda: 0}, {})


def test_save_load_keeps_only_the_latest(tmp_path: Path) -> None:
    w = torch.randn(4, 4)
    state = {"model": {"w": w, "tied": w}, "optimizer": _optimizer_state(), "epoch": 1}
    save_checkpoint(tmp_path, 1, state)
    save_checkpoint(tmp_path, 2, {**state, "epoch": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["epoch-0002"]
    assert sorted(p.name for p in (tmp_path / "epoch-0002").iterdir()) == [
        "state.json",
        "tensors.safetensors",
    ]
    back = load_checkpoint(tmp_path)
    assert back["epoch"] == 2 and torch.equal(back["model"]["tied"], w)
    opt = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=0.01)
    opt.load_state_dict(back["optimizer"])  # a real optimizer accepts the decoded state
    assert opt.state_dict()["param_groups"][0]["betas"] == (0.9, 0.999)


def test_interrupted_write_is_ignored(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 1, {"epoch": 1})
    partial = tmp_path / ".tmp-epoch-0002-abc"  # what a kill mid-save leaves behind
    partial.mkdir()
    (partial / "tensors.safetensors").write_bytes(b"\x00" * 10)
    assert latest_checkpoint(tmp_path) == tmp_path / "epoch-0001"
    assert load_checkpoint(tmp_path)["epoch"] == 1
    save_checkpoint(tmp_path, 2, {"epoch": 2})
    assert not partial.exists()


def _corrupt_tensors(folder: Path) -> None:
    f = folder / "tensors.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))


def _truncate_json(folder: Path) -> None:
    f = folder / "state.json"
    f.write_text(f.read_text()[:20])


def _other_format(folder: Path) -> None:
    f = folder / "state.json"
    doc = json.loads(f.read_text())
    doc["meta"]["format"] = "something-else"
    f.write_text(json.dumps(doc))


@pytest.mark.parametrize("damage", [_corrupt_tensors, _truncate_json, _other_format])
def test_damage_is_a_checkpoint_error_naming_path_and_fix(tmp_path: Path, damage) -> None:
    folder = save_checkpoint(tmp_path, 3, {"w": torch.randn(8)})
    damage(folder)
    with pytest.raises(CheckpointError, match="epoch-0003") as err:
        load_checkpoint(tmp_path)
    assert "delete" in str(err.value)


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        load_checkpoint(tmp_path / "nothing")
