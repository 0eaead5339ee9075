"""Every example in docs/extending.md runs (in order, one namespace) and registers its names
only for the duration of the test."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from prunekit.allocators import ALLOCATORS
from prunekit.importance import CRITERIA
from prunekit.record import CONVERSIONS
from prunekit.surgery import MODULE_FIXES
from prunekit.train.lr_schedule import BASE_SCHEDULES

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
REGISTRIES = (CRITERIA, ALLOCATORS, CONVERSIONS, BASE_SCHEDULES)


def test_every_example_in_extending_md_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 6  # a criterion, an allocator, a layer kind, a method, a recipe field
    before = [set(r.names()) for r in REGISTRIES]
    fixes = set(MODULE_FIXES)
    namespace: dict = {}
    try:
        for i, code in enumerate(blocks):
            exec(compile(code, f"{DOC.name} example {i + 1}", "exec"), namespace)
    finally:
        for reg, names in zip(REGISTRIES, before):
            for name in set(reg.names()) - names:
                reg.remove(name)
        for cls in set(MODULE_FIXES) - fixes:
            del MODULE_FIXES[cls]
