"""`prunekit demo` — the README's first command — on the real sklearn digits."""

from __future__ import annotations

from pathlib import Path

import torch

import prunekit
from prunekit.cli import main
from prunekit.demo import run_demo


def test_demo_prunes_half_the_channels_and_keeps_accuracy(tmp_path: Path) -> None:
    r = run_demo(out=tmp_path / "out", log=lambda _msg: None)
    assert r.acc_dense >= 0.95 and r.acc_finetuned >= 0.95, r
    assert r.acc_finetuned >= r.acc_dense - 0.02  # fine-tuning recovers the dense accuracy
    assert r.params[0] >= 3 * r.params[1] and r.macs[0] >= 3 * r.macs[1]  # 50% of channels
    assert r.max_rel_diff <= 1e-4  # pruned == soft-masked before fine-tuning
    model = prunekit.load(tmp_path / "out")
    assert sum(p.numel() for p in model.parameters()) == r.params[1]
    assert (tmp_path / "out" / "report.png").stat().st_size > 0


def test_demo_cli_prints_the_table(capsys) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    assert main(["demo", "--epochs", "2", "--finetune-epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "dense   accuracy" in out and "fine-tuned accuracy" in out and "params" in out
