"""A pruner policy's ``masking`` (Distiller's PruningPolicy args) during real training steps:
forward-only masks with two weight copies, masked gradients, masks discarded after a step, kept
at the policy's end, and recomputed every N steps (on the digits CNN and real 8×8 digits)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from recipe_test_models import TinyCNN
from torch import nn

from prunekit.recipes import Executor, Recipe, RunResult, _runtime
from prunekit.recipes.native import SplicingPrunerConfig
from prunekit.recipes.resolve import PruneAction

Batches = list[tuple[torch.Tensor, torch.Tensor]]


@pytest.fixture(scope="module")
def digits() -> Batches:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images[:256], dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target[:256], dtype=torch.long)
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]  # 8 steps per epoch


def _recipe(masking: dict[str, Any] | None, epochs: int = 2, **pruner: Any) -> Recipe:
    body = {"method": "magnitude", "final_sparsity": 0.5, "params": ["conv2.weight"], **pruner}
    policy: dict[str, Any] = {"pruner": "p", "starting_epoch": 0, "ending_epoch": epochs}
    if masking is not None:
        policy["masking"] = masking
    return Recipe.model_validate(
        {
            "training": {"epochs": epochs, "lr": 0.05, "momentum": 0.0, "weight_decay": 0.0},
            "pruners": {"p": body},
            "policies": [policy],
        }
    )


def _run(recipe: Recipe, digits: Batches, model: nn.Module | None = None) -> RunResult:
    torch.manual_seed(0)
    return Executor(
        recipe, model=model or TinyCNN(), train_data=digits, device="cpu", progress=False
    ).run()


class _Spy:
    """Records conv2's weight as every forward pass sees it."""

    def __init__(self, model: nn.Module) -> None:
        self.seen: list[torch.Tensor] = []
        model.conv2.register_forward_pre_hook(
            lambda m, a: self.seen.append(m.weight.detach().clone())
        )


def test_forward_only_double_copies_keep_training_pruned_weights(digits: Batches) -> None:
    torch.manual_seed(0)
    model = TinyCNN()
    spy = _Spy(model)
    result = _run(_recipe({"forward_only": True, "double_copies": True}, epochs=1), digits, model)
    w = model.conv2.weight.detach()
    assert int((w == 0).sum()) == 0  # the stored weights stay dense: the mask is for forward only
    zeros = [int((s == 0).sum()) for s in spy.seen[:8]]
    assert zeros == [int(0.5 * w.numel())] * 8  # every training forward saw 50% zeros
    assert not result.masks  # nothing is kept once the policy is over (no keep)


def test_mask_gradients_freeze_the_pruned_copies(digits: Batches) -> None:
    torch.manual_seed(0)
    before = TinyCNN().conv2.weight.detach().clone()
    torch.manual_seed(0)
    model = TinyCNN()
    spy = _Spy(model)
    masking = {"forward_only": True, "double_copies": True, "mask_gradients": True}
    _run(_recipe(masking, epochs=1), digits, model)
    pruned = spy.seen[0] == 0
    after = model.conv2.weight.detach()
    assert torch.equal(after[pruned], before[pruned])  # no gradient, no momentum, no decay
    assert not torch.equal(after[~pruned], before[~pruned])  # the kept weights did train


def test_single_copy_forward_only_zeroes_then_updates(digits: Batches) -> None:
    torch.manual_seed(0)
    model = TinyCNN()
    spy = _Spy(model)
    _run(_recipe({"forward_only": True}, epochs=1), digits, model)
    first = spy.seen[0] == 0
    # Distiller zeroes the weights in place before the forward pass; the step then moves them
    # (gradients of zeroed weights are not zero), and the next forward zeroes them again.
    assert bool((model.conv2.weight.detach()[first] != 0).any())
    assert all(int((s == 0).sum()) >= int(first.sum()) for s in spy.seen[:8])


def test_discard_masks_after_each_step_until_recomputed(digits: Batches) -> None:
    torch.manual_seed(0)
    model = TinyCNN()
    spy = _Spy(model)
    masking = {"forward_only": True, "double_copies": True, "discard": True, "every_steps": 4}
    _run(_recipe(masking, epochs=1), digits, model)
    half = int(0.5 * model.conv2.weight.numel())
    zeros = [int((s == 0).sum()) for s in spy.seen[:8]]
    # masked at the epoch's first step and at global step 4 (mini_batch_pruning_frequency),
    # dense in between (the mask was discarded at the end of its step)
    assert zeros == [half, 0, 0, 0, half, 0, 0, 0]


def test_keep_makes_forward_only_masks_permanent(digits: Batches) -> None:
    result = _run(_recipe({"forward_only": True, "double_copies": True, "keep": True}), digits)
    w = result.model.conv2.weight.detach()
    assert int((w == 0).sum()) == int(0.5 * w.numel())
    assert int((~result.masks["conv2.weight"]).sum()) == int(0.5 * w.numel())


def test_every_steps_reprunes_within_the_epoch(digits: Batches) -> None:
    calls: list[int] = []
    original = _runtime.group_event

    def counting(*args: Any) -> Any:
        calls.append(1)
        return original(*args)

    recipe = _recipe(
        {"every_steps": 3},
        epochs=2,
        method="group",
        group="filters",
        final_sparsity=0.25,
        initial_sparsity=0.0,
    )
    _runtime.group_event = counting  # type: ignore[assignment]
    try:
        _run(recipe, digits)
    finally:
        _runtime.group_event = original  # type: ignore[assignment]
    # epoch starts (2) + global steps 3, 6 (epoch 0) and 9, 12, 15 (epoch 1) that are not an
    # epoch's first step
    assert len(calls) == 2 + 5


def test_splicing_cuts_below_a_keeps_between_and_splices_above_b() -> None:
    cfg = SplicingPrunerConfig(method="splicing", sensitivity=0.5, low=1.0, high=2.0)
    action = PruneAction("s", "splicing", None, {"w": 0.5}, "sensitivity", 1, 1)
    stats = {"w": [0.75, 0.5]}  # mean|W| + s·std|W| = 1 → a = 1, b = 2
    w = torch.tensor([0.5, 1.5, 1.5, 2.5, 2.5])
    before = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0])
    out = _runtime.splice_event(cfg, action, {"w": w}, {"w": before}, stats)["w"]
    assert out.tolist() == [False, True, False, True, True]


_STATEFUL = {
    "training": {"epochs": 4, "lr": 0.05},
    "pruners": {
        "surgery": {"method": "splicing", "sensitivity": 0.3, "low": 0.9, "high": 1.1,
                    "growth": 0.1, "params": ["fc.weight"]},
        "once": {"method": "std_threshold", "schedule": "iterative", "std": "first",
                 "sensitivity": 0.4, "params": ["conv2.weight"]},
        "filters": {"method": "structured", "ranking": "own", "final_sparsity": 0.25,
                    "params": ["conv1.weight"]},
    },
    "policies": [
        {"pruner": "surgery", "starting_epoch": 0, "ending_epoch": 3,
         "masking": {"forward_only": True, "double_copies": True, "every_steps": 3, "keep": True}},
        {"pruner": "once", "starting_epoch": 0, "ending_epoch": 4},
        {"pruner": "filters", "epochs": [0, 2]},
    ],
    "thinning_epochs": [0, 2],
    "model": {"spec": "recipetest:tiny_cnn", "input_shape": [1, 1, 8, 8]},
}  # fmt: skip


def test_resume_keeps_forward_masks_first_stds_and_thinning_counts(
    digits: Batches, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prunekit.train import Trainer

    def executor(out: Any) -> Executor:
        torch.manual_seed(0)
        return Executor(Recipe.model_validate(_STATEFUL), model=TinyCNN(), train_data=digits,
                        out_dir=out, device="cpu", progress=False)  # fmt: skip

    whole = executor(tmp_path / "whole").run()
    calls = {"n": 0}
    real = Trainer._run_epoch

    def dies(self: Trainer, *args: object) -> dict:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # after 2 epochs: mid-policy, masks and stats in flight
        return real(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Trainer, "_run_epoch", dies)
    with pytest.raises(KeyboardInterrupt):
        executor(tmp_path / "killed").run()
    monkeypatch.setattr(Trainer, "_run_epoch", real)
    resumed = executor(tmp_path / "killed").run(resume=True)
    assert resumed.history == whole.history
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.model.conv1.out_channels == 8 - 2 - 1  # int(.25·8), then int(.25·6) of 6
