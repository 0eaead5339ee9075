"""Output folders: checked before the work, written aside and renamed, nothing lost on error."""

from __future__ import annotations

from pathlib import Path

import pytest

from prunekit._fileio import atomic_dir, atomic_files, check_output_dir, check_output_file, run_dir
from prunekit.errors import ConfigError


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_check_output_dir_refuses_files_in_the_way_and_existing_results(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_output_dir(tmp_path / "file" / "sub", what="--out")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_output_dir(tmp_path / "file", what="--out")
    (tmp_path / "run").mkdir()
    assert check_output_dir(tmp_path / "run") is False  # empty: fine
    (tmp_path / "run" / "a").write_text("x")
    with pytest.raises(ConfigError, match="already exists and is not empty; pass --overwrite"):
        check_output_dir(tmp_path / "run", what="--out")
    assert check_output_dir(tmp_path / "run", reuse=True) is True
    assert _tree(tmp_path) == ["file", "run", "run/a"]  # the checks wrote nothing


def test_check_output_file(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_text("x")
    with pytest.raises(ConfigError, match="already exists; pass --overwrite"):
        check_output_file(tmp_path / "m.onnx")
    check_output_file(tmp_path / "m.onnx", replace=True)
    with pytest.raises(ConfigError, match="is a folder"):
        check_output_file(tmp_path)


def test_atomic_dir_renames_on_success_and_leaves_nothing_on_error(tmp_path: Path) -> None:
    out = tmp_path / "model"
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "weights").write_text("half")
        raise RuntimeError("boom")
    assert _tree(tmp_path) == []
    with atomic_dir(out) as tmp:
        (tmp / "weights").write_text("v1")
        assert not out.exists()  # invisible until complete
    assert (out / "weights").read_text() == "v1"
    with pytest.raises(ConfigError, match="appeared while it was being written"), atomic_dir(out):
        pass
    with atomic_dir(out, replace=True) as tmp:
        (tmp / "weights").write_text("v2")
    assert (out / "weights").read_text() == "v2" and _tree(tmp_path) == ["model", "model/weights"]
    assert oct(out.stat().st_mode & 0o777) != oct(0o700)  # not mkdtemp's private mode


def test_atomic_files_moves_all_or_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_files(tmp_path) as tmp:
        (tmp / "a.onnx").write_text("x")
        raise RuntimeError("verification failed")
    assert _tree(tmp_path) == []
    with atomic_files(tmp_path) as tmp:
        (tmp / "a.onnx").write_text("x")
        (tmp / "a.export.json").write_text("{}")
    assert _tree(tmp_path) == ["a.export.json", "a.onnx"]


def test_run_dir_removes_a_failed_start_and_keeps_resumable_state(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(RuntimeError), run_dir(run):
        run.mkdir()
        (run / "metrics.jsonl").write_text("")
        raise RuntimeError("bad batch")
    assert not run.exists()  # nothing worth resuming: the failed start leaves no folder
    with pytest.raises(RuntimeError), run_dir(run):
        (run / "checkpoint").mkdir(parents=True)
        (run / "checkpoint" / "state.safetensors").write_text("x")
        raise RuntimeError("killed in epoch 2")
    assert (run / "checkpoint" / "state.safetensors").exists()  # resumable: kept


def test_run_dir_overwrite_restores_the_old_run_when_the_new_one_fails_early(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "old.safetensors").write_text("old")
    with pytest.raises(RuntimeError), run_dir(run, replace=True):
        assert not run.exists()
        raise RuntimeError("bad setting")
    assert _tree(tmp_path) == ["run", "run/old.safetensors"]
    with run_dir(run, replace=True):
        run.mkdir()
        (run / "new.safetensors").write_text("new")
    assert _tree(tmp_path) == ["run", "run/new.safetensors"]
