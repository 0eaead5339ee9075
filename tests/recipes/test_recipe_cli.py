"""``prunekit recipe check`` / ``prunekit run`` in-process."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from prunekit.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "recipes"
DISTILLER = sorted((EXAMPLES / "distiller").glob("resnet18_*.yaml"))  # the others: test_distiller_examples
NATIVE = sorted(EXAMPLES.glob("*.yaml"))
HAVE_ZOO = importlib.util.find_spec("prunekit.zoo") is not None

Write = Callable[[str], Path]


def _check(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["recipe", "check", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("path", DISTILLER, ids=lambda p: p.name)
def test_check_distiller_examples_on_resnet18(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _check(capsys, str(path), "--model", "torchvision:resnet18")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].endswith("(distiller format)")
    rows = [ln for ln in lines if ln[:5].strip().isdigit()]
    n_epochs = int(lines[1].split()[1])
    assert len(rows) == n_epochs > 0
    assert any("%" in ln for ln in rows)  # some epoch prunes
    assert "warnings:" not in out


def test_check_native_resnet18_example(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _check(capsys, str(EXAMPLES / "resnet18_l1_filters_agp.yaml"))
    assert code == 0, err
    assert "recipe: resnet18-l1-filters-agp (native format)" in out
    assert "8 tensors: layer1.0.conv1.weight" in out
    row20 = next(ln for ln in out.splitlines() if ln.strip().startswith("20 "))
    assert "filters 50.0%" in row20


@pytest.mark.skipif(not HAVE_ZOO, reason="prunekit.zoo not available")
@pytest.mark.parametrize(
    ("name", "expect"),
    [
        ("lenet300_agp_mnist.yaml", "3 tensors: fc1.weight, fc2.weight, fc3.weight"),
        ("vgg19_slimming_cifar10.yaml", "bn_l1 λ=0.0001; 16 tensors"),
    ],
)
def test_check_zoo_examples(name: str, expect: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _check(capsys, str(EXAMPLES / name))
    assert code == 0, err
    assert expect in out


@pytest.mark.parametrize("path", NATIVE, ids=lambda p: p.name)
def test_check_native_examples_against_resnet18(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --model overrides the recipe's model: default selections work on any network.
    code, out, err = _check(capsys, str(path), "--model", "torchvision:resnet18", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["num_epochs"] == len(data["epochs"]) > 0
    assert data["recipe"]["model"]["spec"] == "torchvision:resnet18"
    assert any(e["prune"] for e in data["epochs"])


def test_check_epochs_and_format_flags(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(DISTILLER[0])
    code, out, _ = _check(
        capsys, path, "--model", "torchvision:resnet18", "--epochs", "5", "--format", "distiller"
    )
    assert code == 0
    assert "epochs: 5 (override)" in out
    assert "warnings:" in out and "final sparsity is not reached" in out


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--model", "torchvision:resnet18", "--epochs", "0"], "the epoch count must be >= 1"),
        ([], "no model to match the recipe against; pass --model SPEC"),
        (["--model", "torchvision:resnet99"], "unknown torchvision model 'resnet99'"),
        (["--model", "torchvision:resnet18", "--model-kwargs", "{bad"], "not valid JSON"),
        (["--model", "torchvision:resnet18", "--model-kwargs", "[1]"], "must be a JSON object"),
    ],
)
def test_check_bad_input_exits_2_with_one_line(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _check(capsys, str(DISTILLER[0]), *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("prunekit: error: ")
    assert fragment in err


def test_check_bad_recipe_names_file_and_line(
    write: Write, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write("pruners:\n  p:\n    method: magnitude\n    final_sparsity: 1.5\n")
    code, _, err = _check(capsys, str(path), "--model", "torchvision:resnet18")
    assert code == 2
    assert (
        err
        == f"prunekit: error: {path}:4: 'final_sparsity' in pruner 'p' must be in [0, 1), got 1.5\n"
    )


def test_run_without_data_fails_cleanly(write: Write, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        """
        model: torchvision:resnet18
        training: {epochs: 1}
        """
    )
    code = main(["run", str(path), "--no-progress"])
    _, err = capsys.readouterr()
    assert code == 2
    assert "no 'data' section; add one or pass --data SPEC" in err


@pytest.mark.skipif(
    not (HAVE_ZOO and importlib.util.find_spec("prunekit.data")), reason="needs prunekit.data/zoo"
)
def test_run_on_digits(write: Write, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(
        """
        model:
          spec: zoo:lenet_300_100
          kwargs: {input_size: 8, num_classes: 10}
        data: {dataset: digits, batch_size: 64, augment: false, workers: 1}
        training: {epochs: 4, lr: 0.1, device: cpu}
        pruners:
          agp: {method: magnitude, schedule: agp, initial_sparsity: 0.2, final_sparsity: 0.6}
        policies:
          - {pruner: agp, starting_epoch: 0, ending_epoch: 3}
        """
    )
    out_dir = tmp_path / "run"
    code = main(["run", str(path), "--no-progress", "--out", str(out_dir)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.startswith("done: 4 epochs;") and f"saved to {out_dir}" in out
    summary = out.splitlines()[0].split("last epoch: ")[1]
    fields = dict(kv.split("=") for kv in summary.split(", "))
    assert float(fields["sparsity"]) == pytest.approx(0.6, abs=1e-3)
    assert float(fields["accuracy"]) >= 0.85
    history = json.loads((out_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    assert json.loads((out_dir / "resolved.json").read_text())["num_epochs"] == 4
    from prunekit.io import load

    model = load(out_dir / "model")
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros == pytest.approx(0.6 * sum(w.numel() for w in weights), rel=1e-3)
    # --resume on a finished run restores the last checkpoint and trains no further epoch
    code = main(["run", str(path), "--no-progress", "--out", str(out_dir), "--resume"])
    out2, err = capsys.readouterr()
    assert code == 0, err
    assert out2.splitlines()[0] == out.splitlines()[0]
    assert json.loads((out_dir / "history.json").read_text()) == history
    # with another run length the checkpoint is refused in one line
    code = main(["run", str(path), "--no-progress", "--out", str(out_dir), "--resume",
                 "--epochs-override", "5"])  # fmt: skip
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and "different recipe" in err


DISTILLER_RUN = """
version: 1
pruners:
  fine:
    class: AutomatedGradualPruner
    initial_sparsity: 0.1
    final_sparsity: 0.9
    weights: [block.1.weight]
lr_schedulers:
  decay: {class: ExponentialLR, gamma: 0.5}
policies:
  - pruner: {instance_name: fine}
    starting_epoch: 0
    ending_epoch: 8
    frequency: 1
  - lr_scheduler: {instance_name: decay}
    starting_epoch: 1
    ending_epoch: 3
    frequency: 1
"""


def test_run_distiller_file_with_compress_classifier_knobs(
    write: Write, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--lr/--wd/--batch-size override the recipe, the trace shape comes from the data (the
    8×8 digits model cannot run at 224×224), Distiller's absolute-epoch LR, warnings printed."""
    path = write(DISTILLER_RUN)
    out = tmp_path / "run"
    argv = ["run", str(path), "--model", "zoo:digits_cnn", "--data", "digits", "--lr", "0.05",
            "--wd", "5e-4", "--batch-size", "32", "--epochs-override", "3", "--out", str(out),
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "final sparsity is not reached" in err  # 3 of 8 AGP epochs
    lrs = [row["lr"] for row in json.loads((out / "history.json").read_text())]
    assert lrs == pytest.approx([0.05, 0.05, 0.05 * 0.5**2])  # step(epoch=e+1): 0.5^2 at once
    resolved = json.loads((out / "resolved.json").read_text())
    assert resolved["recipe"]["training"]["weight_decay"] == 5e-4
    assert resolved["recipe"]["data"]["batch_size"] == 32
    bad = ["run", str(path), "--model", "zoo:digits_cnn", "--batch-size", "32"]
    assert main(bad) == 2
    assert "--batch-size needs a dataset" in capsys.readouterr().err
