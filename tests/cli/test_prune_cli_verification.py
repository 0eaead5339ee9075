"""Issue 10's done-when: the CLI's soft-vs-pruned check fails on a deliberately broken plan for a
``weights=None`` torchvision ViT, whose zero-initialised head makes every output 0 — the check
redraws such parameters on its copies, so it can fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from prunekit import pipeline
from prunekit.cli import main
from prunekit.plan import PruningPlan


def _scrambled(plan: PruningPlan) -> PruningPlan:
    """The same plan, except one MLP's second layer keeps the *other* input channels: every shape
    still fits, the numbers are wrong."""
    for name, dims in plan.tensors.items():
        if "mlp" in name and name.endswith("weight") and 1 in dims:
            keep = dims[1]
            rest = sorted(set(range(plan.shapes[name][1])) - set(keep))
            if len(rest) >= len(keep):
                dims[1] = rest[: len(keep)]
                return plan
    raise AssertionError("no MLP input dim to scramble")


def test_cli_refuses_a_broken_plan_on_a_zero_head_vit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = pipeline.make_plan
    monkeypatch.setattr(pipeline, "make_plan", lambda *a, **k: _scrambled(real(*a, **k)))
    out = tmp_path / "vit"
    args = ["prune", "--model", "torchvision:vit_b_32", "--model-kwargs", '{"image_size": 64}',
            "--input-shape", "1,3,64,64", "--ratio", "0.5", "--round-to", "1", "--out", str(out)]  # fmt: skip
    assert main(args) != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "soft" in err.lower()
    assert not out.exists()
