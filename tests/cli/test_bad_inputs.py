"""The bad-input contract: every everyday CLI mistake is one clear line, never a traceback, and
leaves the file system exactly as it was.

Each row is ``(argv, exit code, a substring of the one-line error)``. ``argv`` may name the
workspace's fixtures: ``{M}`` a saved model, ``{RUN}`` a run folder holding a checkpoint,
``{F}`` a regular file, ``{NEW}`` a path that does not exist yet, ``{R}`` a native recipe,
``{ONNX}`` an existing .onnx file, ``{EMPTY}`` an empty folder and the damaged model folders
``{B999}`` ... (see :func:`ws`). After every row the whole workspace (names, sizes, mtimes) must
be unchanged: no half-written folder, no deleted checkpoint, nothing created.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import prunekit
from prunekit.cli import main
from prunekit.pipeline import PruneConfig, prune
from prunekit.zoo import build

DIGITS = ["--data", "digits"]
TRAIN = ["train", "--model", "zoo:digits_cnn", *DIGITS, "--epochs", "1", "--no-progress"]
SLIM = ["slim", "--model", "zoo:digits_cnn", *DIGITS, "--epochs", "1", "--finetune-epochs", "0"]
SENS = ["sensitivity", "--model", "zoo:digits_cnn", *DIGITS, "--levels", "0.5"]
PRUNE = ["prune", "--model", "zoo:digits_cnn", "--input-shape", "1,1,8,8"]
EXPORT = ["export", "{M}", "--input-shape", "1,1,8,8"]
SHAPE = "1,1,8,8"

# fmt: off
# (argv, exit code, substring of the error line)
CASES: list[tuple[list[str], int, str]] = [
    # ---- top level
    ([], 2, "required: COMMAND"),
    (["prunne"], 2, "invalid choice: 'prunne'"),
    # ---- prune: model and kwargs
    (["prune", "--model", "torchvision:resnet18", "--kwargs", '{"num_clases": 10}',
      "--input-shape", "1,3,32,32", "--out", "{NEW}"], 2, "did you mean 'num_classes'"),
    ([*PRUNE, "--kwargs", '{"widht": 3}', "--out", "{NEW}"], 2, "does not take widht"),
    ([*PRUNE, "--kwargs", "[1, 2]", "--out", "{NEW}"], 2, "expected a JSON object"),
    ([*PRUNE, "--kwargs", "{oops", "--out", "{NEW}"], 2, "expected a JSON object"),
    (["prune", "--model", "resnet18", "--input-shape", SHAPE, "--out", "{NEW}"], 2, "no namespace"),
    (["prune", "--model", "torchvision:nope", "--input-shape", SHAPE, "--out", "{NEW}"], 2,
     "unknown torchvision model 'nope'"),
    (["prune", "--model", "zoo:nope", "--input-shape", SHAPE, "--out", "{NEW}"], 2,
     "unknown zoo model 'nope'"),
    (["prune", "--model", "zoo:digits_cnn", "--from", "{M}", "--input-shape", SHAPE, "--out",
      "{NEW}"], 2, "not allowed with argument"),
    (["prune", "--input-shape", SHAPE, "--out", "{NEW}"], 2, "one of the arguments --model"),
    # ---- prune: settings
    ([*PRUNE, "--ratio", "1.5", "--out", "{NEW}"], 2, "must be in [0, 1)"),
    ([*PRUNE, "--ratio", "-0.1", "--out", "{NEW}"], 2, "must be in [0, 1)"),
    ([*PRUNE, "--ratio", "half", "--out", "{NEW}"], 2, "expected a number in [0, 1)"),
    ([*PRUNE, "--criterion", "l7", "--out", "{NEW}"], 2, "unknown criterion 'l7'"),
    ([*PRUNE, "--criterion", "taylor", "--out", "{NEW}"], 2, "pass --data SPEC"),
    ([*PRUNE, "--criterion", "activation", "--out", "{NEW}"], 2, "pass --data SPEC"),
    ([*PRUNE, "--criterion", "taylor", "--data", "{ROOT}/nope", "--out", "{NEW}"], 2,
     "does not exist"),
    ([*PRUNE, "--criterion", "taylor", *DIGITS, "--limit-train", "5", "--out", "{NEW}"], 2,
     "fewer than the 10 classes"),
    ([*PRUNE, "--floor", "0", "--out", "{NEW}"], 2, "--floor: must be >= 1"),
    ([*PRUNE, "--round-to", "0", "--out", "{NEW}"], 2, "--round-to: must be >= 1"),
    ([*PRUNE, "--target-macs", "0.3", "--target-params", "0.3", "--out", "{NEW}"], 2,
     "at most one of --target-macs and --target-params"),
    ([*PRUNE, "--allocator", "nope", "--out", "{NEW}"], 2, "unknown allocator 'nope'"),
    ([*PRUNE, "--unknown-ops", "ignore", "--out", "{NEW}"], 2, "invalid choice: 'ignore'"),
    ([*PRUNE, "--calib-batches", "0", "--out", "{NEW}"], 2, "--calib-batches: must be >= 1"),
    ([*PRUNE, "--delta", "2", "--out", "{NEW}"], 2, "--delta/--g need --versatile"),
    # ---- prune: inputs
    (["prune", "--model", "zoo:digits_cnn", "--out", "{NEW}"], 2, "--input-shape"),
    (["prune", "--model", "zoo:digits_cnn", "--input-shape", "1,1,x", "--out", "{NEW}"], 2,
     "comma-separated ints"),
    (["prune", "--model", "zoo:digits_cnn", "--input-shape", "1,0,8,8", "--out", "{NEW}"], 2,
     "positive ints"),
    (["prune", "--model", "zoo:digits_cnn", "--input-shape", "1,3,8,8", "--out", "{NEW}"], 2,
     "does not run on the example inputs [(1, 3, 8, 8)]"),
    # ---- prune: outputs (checked before any work)
    ([*PRUNE, "--out", "{M}"], 2, "already exists and is not empty; pass --overwrite"),
    ([*PRUNE, "--out", "{F}/sub"], 2, "is a file, not a folder"),
    ([*PRUNE, "--out", "{F}"], 2, "is a file, not a folder"),
    ([*PRUNE, "--out", "/proc/prunekit-test/out"], 2, "cannot write in /proc"),
    (["prune"], 2, "the following arguments are required: --input-shape, --out"),
    # ---- prune --from: damaged saved models
    (["prune", "--from", "{ROOT}/nope", "--input-shape", SHAPE, "--out", "{NEW}"], 2,
     "not a prunekit model folder"),
    (["prune", "--from", "{B999}", "--input-shape", SHAPE, "--out", "{NEW}"], 2,
     "index 999 is out of range"),
    (["prune", "--from", "{BNEG}", "--input-shape", SHAPE, "--out", "{NEW}"], 2,
     "index -5 is out of range"),
    (["prune", "--from", "{BGRP}", "--input-shape", SHAPE, "--out", "{NEW}"], 2,
     "plan group 'stem.0.weight:0': index 999"),
    (["prune", "--from", "{M}", "--kwargs", '{"num_classes": 3}', "--input-shape", SHAPE,
      "--out", "{NEW}"], 2, "--model-kwargs applies to --model"),
    (["prune", "--from", "{M}", "--versatile", "spatial", "--input-shape", SHAPE, "--out",
      "{NEW}"], 2, "--versatile builds --model"),
    # ---- info
    (["info", "{ROOT}/nope"], 2, "not a prunekit model folder"),
    (["info", "{F}"], 2, "not a prunekit model folder"),
    (["info", "{M}", "--input-shape", "1,3,8,8"], 2, "expects 1 input channel(s)"),
    (["info", "{M}", "--input-shape", "1,1,8"], 2, "pass a matching --input-shape"),
    (["info", "{B999}"], 2, "index 999 is out of range for size 32"),
    (["info", "{BNEG}"], 2, "index -5 is out of range"),
    (["info", "{BDIM}"], 2, "has no dim 7"),
    (["info", "{BNAME}"], 2, "tensor 'nope.weight' has no recorded shape"),
    (["info", "{CORRUPT}"], 2, "spec.json is corrupt"),
    (["info", "{NOWEIGHTS}"], 2, "model.safetensors is missing"),
    (["info", "{TAMPER}"], 2, "does not match its checksum"),
    (["info"], 2, "the following arguments are required: DIR"),
    # ---- export
    ([*EXPORT[:3], "1,3,8,8", "--onnx", "{NEW}.onnx"], 2, "expects 1 input channel(s)"),
    ([*EXPORT, "--onnx", "/proc/prunekit-test.onnx"], 2, "cannot write in /proc"),
    ([*EXPORT, "--onnx", "{F}/m.onnx"], 2, "is a file, not a folder"),
    ([*EXPORT, "--onnx", "{ONNX}"], 2, "already exists; pass --overwrite"),
    ([*EXPORT, "--onnx", "{NEW}.txt"], 2, "must end in .onnx"),
    ([*EXPORT, "--onnx", "{EMPTY}"], 2, "must end in .onnx"),
    ([*EXPORT, "--onnx", "{NEW}.onnx", "--int8"], 2, "--int8 needs --calib"),
    # fails after the ONNX file was written and checked: nothing of it may be left
    ([*EXPORT, "--onnx", "{NEW}.onnx", "--int8", "--calib", "{ROOT}/nope"], 2, "does not exist"),
    ([*EXPORT, "--onnx", "{NEW}.onnx", "--opset", "0"], 2, "--opset: must be >= 1"),
    ([*EXPORT, "--onnx", "{NEW}.onnx", "--threads", "0"], 2, "--threads: must be >= 1"),
    ([*EXPORT, "--onnx", "{NEW}.onnx", "--calib-batches", "-1"], 2, "must be >= 1"),
    (["export", "{ROOT}/nope", "--input-shape", SHAPE, "--onnx", "{NEW}.onnx"], 2,
     "not a prunekit model folder"),
    (["export", "{M}", "--onnx", "{NEW}.onnx"], 2, "required: --input-shape"),
    # ---- demo (checked before any training)
    (["demo", "--epochs", "0"], 2, "--epochs: must be >= 1, got 0"),
    (["demo", "--epochs", "-3"], 2, "--epochs: must be >= 1, got -3"),
    (["demo", "--epochs", "two"], 2, "expected an integer"),
    (["demo", "--finetune-epochs", "-1"], 2, "--finetune-epochs: must be >= 0"),
    (["demo", "--ratio", "1"], 2, "must be in [0, 1)"),
    (["demo", "--criterion", "l7"], 2, "unknown criterion 'l7'"),
    (["demo", "--out", "{M}"], 2, "already exists and is not empty"),
    (["demo", "--out", "{F}/demo"], 2, "is a file, not a folder"),
    (["demo", "--limit-train", "5"], 2, "limit_train must be >= 10"),
    (["demo", "--limit-test", "0"], 2, "--limit-test: must be >= 1"),
    # ---- train
    ([*TRAIN, "--out", "{RUN}"], 2, "pass --resume to continue it, --overwrite to start over"),
    ([*TRAIN, "--out", "{RUN}", "--resume", "--overwrite"], 2, "not both"),
    ([*TRAIN, "--out", "{F}/run"], 2, "is a file, not a folder"),
    ([*TRAIN, "--model-kwargs", '{"widht": 3}', "--out", "{NEW}"], 2, "does not take widht"),
    ([*TRAIN[:3], "--data", "{ROOT}/nope", "--out", "{NEW}"], 2, "does not exist"),
    ([*TRAIN, "--epochs", "0", "--out", "{NEW}"], 2, "--epochs: must be >= 1"),
    ([*TRAIN, "--lr", "0", "--out", "{NEW}"], 2, "--lr: must be > 0"),
    ([*TRAIN, "--lr", "-1", "--out", "{NEW}"], 2, "--lr: must be >= 0"),
    ([*TRAIN, "--batch-size", "0", "--out", "{NEW}"], 2, "--batch-size: must be >= 1"),
    ([*TRAIN, "--sparsity=-1e-4", "--out", "{NEW}"], 2, "--sparsity: must be >= 0"),
    ([*TRAIN, "--optimizer", "adam", "--out", "{NEW}"], 2, "invalid choice: 'adam'"),
    ([*TRAIN, "--limit-train", "3", "--out", "{NEW}"], 2, "fewer than the 10 classes"),
    (["train", "--model", "vgg11", *DIGITS, "--out", "{NEW}"], 2, "no namespace"),
    (["train", "--model", "zoo:vgg11", *DIGITS, "--epochs", "1", "--out", "{NEW}"], 2,
     "does not accept --data digits inputs of shape (1, 8, 8)"),
    # ---- finetune
    (["finetune", "{ROOT}/nope", *DIGITS, "--out", "{NEW}"], 2, "not a prunekit model folder"),
    (["finetune", "{M}", *DIGITS, "--out", "{RUN}"], 2, "already exists and is not empty"),
    (["finetune", "{M}", *DIGITS, "--out", "{M}"], 2, "is the model being fine-tuned"),
    (["finetune", "{M}", "--data", "{ROOT}/nope", "--out", "{NEW}"], 2, "does not exist"),
    (["finetune", "{B999}", *DIGITS, "--out", "{NEW}"], 2, "index 999 is out of range"),
    # ---- slim
    ([*SLIM, "--out", "{RUN}"], 2, "pass --resume to continue it"),
    ([*SLIM, "--percent", "1.2", "--out", "{NEW}"], 2, "must be in [0, 1)"),
    ([*SLIM, "--sparsity", "-1", "--out", "{NEW}"], 2, "--sparsity: must be >= 0"),
    ([*SLIM, "--threshold", "otsu", "--out", "{NEW}"], 2, "invalid choice: 'otsu'"),
    ([*SLIM, "--floor", "0", "--out", "{NEW}"], 2, "--floor: must be >= 1"),
    ([*SLIM, "--out", "{F}/slim"], 2, "is a file, not a folder"),
    ([*SLIM, "--model-kwargs", '{"widht": 3}', "--out", "{NEW}"], 2, "does not take widht"),
    # ---- sensitivity
    ([*SENS, "--out", "{M}"], 2, "already exists and is not empty"),
    ([*SENS, "--out", "{F}/sens"], 2, "is a file, not a folder"),
    ([*SENS[:-1], "0.5,1.5", "--out", "{NEW}"], 2, "--levels must be numbers in [0, 1]"),
    ([*SENS, "--max-batches", "0", "--out", "{NEW}"], 2, "--max-batches: must be >= 1"),
    ([*SENS, "--max-drop", "-1", "--out", "{NEW}"], 2, "--max-drop: must be >= 0"),
    ([*SENS, "--split", "val", "--out", "{NEW}"], 2, "invalid choice: 'val'"),
    ([*SENS, "--unstructured", "--criterion", "l2", "--out", "{NEW}"], 2,
     "not an unstructured criterion"),
    # ---- recipe check / run
    (["recipe", "check", "{ROOT}/nope.yaml", "--model", "zoo:digits_cnn"], 2, "not found"),
    (["recipe", "check", "{BADYAML}"], 2, "{BADYAML}"),
    (["recipe", "check", "{R}", "--model-kwargs", "{oops"], 2, "--model-kwargs is not valid JSON"),
    (["recipe", "check", "{R}", "--format", "yaml"], 2, "invalid choice: 'yaml'"),
    (["recipe"], 2, "required: ACTION"),
    (["run", "{ROOT}/nope.yaml", "--out", "{NEW}"], 2, "not found"),
    (["run", "{R}", "--out", "{RUN}"], 2, "pass --resume to continue it"),
    (["run", "{R}", "--resume"], 2, "--resume/--overwrite need --out DIR"),
    (["run", "{R}", "--out", "{F}/run"], 2, "is a file, not a folder"),
    (["run", "{R}", "--lr", "0", "--out", "{NEW}"], 2, "--lr: must be > 0"),
    # ---- sparsity
    (["sparsity", "{ROOT}/nope"], 2, "does not exist"),
    (["sparsity", "{EMPTY}"], 2, "no .safetensors file"),
    (["sparsity", "{F}"], 2, "cannot read"),
]
# fmt: on


def _write_plans(src: Path, dst: Path, edit: object) -> None:
    shutil.copytree(src, dst)
    plans = json.loads((src / "plans.json").read_text())
    edit(plans)  # type: ignore[operator]
    (dst / "plans.json").write_text(json.dumps(plans))


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The fixtures every row may name, built once."""
    root = tmp_path_factory.mktemp("ws")
    torch.manual_seed(0)
    model = build("digits_cnn").eval()
    plan = prune(model, torch.randn(1, 1, 8, 8), PruneConfig(ratio=0.5)).plan
    m = prunekit.save(model, root / "model", "zoo:digits_cnn", [plan])
    t = "block.0.0.weight"
    _write_plans(m, root / "b999", lambda p: p[0]["tensors"][t]["0"].__setitem__(-1, 999))
    _write_plans(m, root / "bneg", lambda p: p[0]["tensors"][t]["0"].__setitem__(0, -5))
    _write_plans(m, root / "bgrp",
                 lambda p: p[0]["groups"]["stem.0.weight:0"]["keep"].__setitem__(-1, 999))  # fmt: skip
    _write_plans(m, root / "bdim", lambda p: p[0]["tensors"][t].__setitem__("7", [0]))
    _write_plans(
        m, root / "bname", lambda p: p[0]["tensors"].__setitem__("nope.weight", {"0": [0]})
    )
    shutil.copytree(m, root / "corrupt")
    (root / "corrupt" / "spec.json").write_text("{not json")
    shutil.copytree(m, root / "noweights")
    (root / "noweights" / "model.safetensors").unlink()
    shutil.copytree(m, root / "tamper")
    with open(root / "tamper" / "model.safetensors", "r+b") as fh:
        fh.seek(-4, os.SEEK_END)
        fh.write(b"\0\0\0\0")
    run = root / "run" / "checkpoint" / "epoch-0001"
    run.mkdir(parents=True)
    (run / "state.safetensors").write_bytes(b"checkpoint bytes")
    (root / "run" / "metrics.jsonl").write_text('{"epoch": 1}\n')
    (root / "file").write_text("a regular file")
    (root / "old.onnx").write_bytes(b"an earlier export")
    (root / "empty").mkdir()
    (root / "bad.yaml").write_text("pruners: [unclosed\n")
    (root / "recipe.yaml").write_text(
        "version: 1\nmodel: {spec: 'zoo:digits_cnn', input_shape: [1, 1, 8, 8]}\n"
        "data: {dataset: digits, batch_size: 64}\ntraining: {epochs: 2, lr: 0.05}\n"
        "pruners:\n  p: {method: magnitude, schedule: agp, initial_sparsity: 0.1, "
        "final_sparsity: 0.5}\npolicies:\n  - {pruner: p, starting_epoch: 0, ending_epoch: 2, "
        "frequency: 1}\n"
    )
    names = {"M": "model", "B999": "b999", "BNEG": "bneg", "BGRP": "bgrp", "BDIM": "bdim",
             "BNAME": "bname", "CORRUPT": "corrupt", "NOWEIGHTS": "noweights", "TAMPER": "tamper",
             "RUN": "run", "F": "file", "ONNX": "old.onnx", "EMPTY": "empty", "R": "recipe.yaml",
             "BADYAML": "bad.yaml", "NEW": "new"}  # fmt: skip
    return {"ROOT": str(root), **{k: str(root / v) for k, v in names.items()}}


def _fill(text: str, ws: dict[str, str]) -> str:
    """Put the fixtures' paths in place of ``{NAME}`` (not str.format: JSON has braces)."""
    for key, value in ws.items():
        text = text.replace("{" + key + "}", value)
    return text


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size if p.is_file() else -1, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


def _id(case: tuple[list[str], int, str]) -> str:
    argv = case[0]
    return " ".join(argv[:1] + [a for a in argv[1:] if a.startswith("--")][:3]) or "(none)"


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(
    case: tuple[list[str], int, str],
    ws: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    argv, code, expected = case
    if any("/proc/" in a for a in argv) and not Path("/proc/self").exists():
        pytest.skip("needs /proc to have an unwritable folder")
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))  # outside the workspace
    monkeypatch.delenv("PRUNEKIT_TRACEBACK", raising=False)
    root = Path(ws["ROOT"])
    before = _snapshot(root)
    assert main([_fill(a, ws) for a in argv]) == code
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out
    line = err.strip()
    assert line.count("\n") == 0, err
    assert line.startswith("prunekit") and ": error: " in line, line
    assert _fill(expected, ws) in line
    assert _snapshot(root) == before, "the file system changed"


def test_the_table_covers_every_subcommand() -> None:
    from prunekit.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    commands = set(sub.choices)  # type: ignore[arg-type]
    covered = {argv[0] for argv, _, _ in CASES if argv}
    assert commands <= covered, commands - covered
    assert len(CASES) >= 60


# fmt: off
CONSOLE_CASES = [
    (["demo", "--epochs", "0"], "must be >= 1"),
    (["info", "{M}", "--input-shape", "1,3,8,8"], "expects 1 input channel(s)"),
    (["prune", "--model", "torchvision:resnet18", "--kwargs", '{"num_clases": 10}',
      "--input-shape", "1,3,32,32", "--out", "{NEW}"], "did you mean 'num_classes'"),
]
# fmt: on


@pytest.mark.parametrize("argv,expected", CONSOLE_CASES)
def test_the_console_script_prints_one_line(
    argv: list[str], expected: str, ws: dict[str, str]
) -> None:
    """The same through a real process: exit status, stderr, and no traceback."""
    env = {**os.environ, "PRUNEKIT_TRACEBACK": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "prunekit", *[_fill(a, ws) for a in argv]],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert expected in proc.stderr
