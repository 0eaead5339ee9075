"""Distiller's semantics, each with the numbers Distiller gives: Rows prune a Linear's input
columns, a repeated one-shot pruner counts among the survivors of each thinning, ranked pruners
rank a weight's own filters with int(s·n) counts, the sensitivity std is taken once and
fine-grained AGP keeps int(s·n) zeros."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torchvision

from prunekit.recipes import Executor, _runtime, load_recipe, resolve
from prunekit.recipes.native import ModelSection, StdThresholdPrunerConfig
from prunekit.zoo import build

Write = Callable[[str], Path]
EXAMPLES = Path(__file__).parents[2] / "examples" / "recipes" / "distiller"


def _prune_only(
    path: str | Path, spec: str, epochs: int | None = None, **kw: object
) -> torch.nn.Module:
    recipe = load_recipe(path)
    recipe.model = ModelSection(spec=spec, input_shape=[1, 3, 32, 32])
    torch.manual_seed(0)
    model = build(spec.split(":")[1])
    return Executor(recipe, model=model, epochs=epochs, device="cpu", **kw).prune_only().model  # type: ignore[arg-type]


def test_rows_zero_a_linear_layers_input_columns(write: Write) -> None:
    path = write(
        """
        pruners:
          fc_rows:
            class: L1RankedStructureParameterPruner_AGP
            initial_sparsity: 0.05
            final_sparsity: 0.50
            group_type: Rows
            weights: [module.fc.weight]
        extensions:
          thin: {class: FilterRemover, thinning_func_str: remove_filters}
        policies:
          - {pruner: {instance_name: fc_rows}, starting_epoch: 0, ending_epoch: 5, frequency: 2}
          - {extension: {instance_name: thin}, epochs: [5]}
        """
    )
    model = _prune_only(path, "zoo:resnet20_cifar")
    w = model.fc.weight
    assert tuple(w.shape) == (10, 64)  # nothing sliced: Distiller never thins a Linear's columns
    dead = ~(w != 0).any(dim=0)
    assert int(dead.sum()) == 32 and int((w != 0).sum()) == 320  # int(0.5·64) whole columns
    assert model.layer3[2].conv2.out_channels == 64  # the columns' producers keep their filters


def test_repeated_one_shot_counts_among_the_survivors_of_each_thinning() -> None:
    """Distiller's VGG-19 filter-rank schedule: 10% twice with thinning between, 512 → 461 → 415
    (int(0.1·512) = 51, then int(0.1·461) = 46); 64 → 58 → 53."""
    model = _prune_only(EXAMPLES / "filter_rank_repeated.yaml", "zoo:vgg19_cifar")
    widths = {i: model.features[i].out_channels for i in (2, 7, 19, 21, 28, 34)}
    assert widths == {2: 53, 7: 105, 19: 415, 21: 415, 28: 415, 34: 512}


def test_one_shot_without_thinning_between_prunes_once(write: Write) -> None:
    path = write(
        """
        pruners:
          p:
            class: L1RankedStructureParameterPruner
            group_type: Filters
            desired_sparsity: 0.1
            weights: [module.features.28.weight]
        extensions:
          thin: {class: FilterRemover, thinning_func_str: remove_filters}
        policies:
          - {pruner: {instance_name: p}, epochs: [0, 2]}
          - {extension: {instance_name: thin}, epochs: [3]}
        """
    )
    assert _prune_only(path, "zoo:vgg19_cifar").features[28].out_channels == 461


def _own_l1(weight: torch.Tensor, keep: int) -> list[int]:
    order = weight.detach().abs().sum(dim=(1, 2, 3)).argsort(descending=True)
    return sorted(order[:keep].tolist())


def test_ranking_is_the_listed_weights_own_filters_by_default(write: Write) -> None:
    text = """
        pruners:
          p:
            class: L1RankedStructureParameterPruner
            group_type: Filters
            desired_sparsity: 0.7
            weights: [{weights}]
{ranking}
        policies:
          - {{pruner: {{instance_name: p}}, epochs: [0]}}
        """
    names = ", ".join(f"module.layer{s}.{b}.conv1.weight" for s in (1, 2, 3) for b in range(9))
    own_path = write(text.format(weights=names, ranking=""), "own.yaml")
    group_path = write(text.format(weights=names, ranking="            ranking: group"), "g.yaml")
    recipe = load_recipe(own_path)
    recipe.model = ModelSection(spec="zoo:resnet56_cifar", input_shape=[1, 3, 32, 32])
    torch.manual_seed(0)
    dense = build("resnet56_cifar")
    masks = Executor(recipe, model=dense, device="cpu").prune_only().masks
    torch.manual_seed(0)
    reference = build("resnet56_cifar")
    differ = 0
    g_recipe = load_recipe(group_path)
    g_recipe.model = recipe.model
    torch.manual_seed(0)
    g_masks = Executor(g_recipe, model=build("resnet56_cifar"), device="cpu").prune_only().masks
    for s in (1, 2, 3):
        for b in range(9):
            name = f"layer{s}.{b}.conv1.weight"
            w = reference.get_submodule(f"layer{s}.{b}.conv1").weight
            keep = w.shape[0] - int(0.7 * w.shape[0])
            kept = sorted(torch.nonzero(masks[name].flatten(1).any(1)).flatten().tolist())
            assert kept == _own_l1(w, keep), name  # Distiller: the weight's own L1 ranking
            g_kept = torch.nonzero(g_masks[name].flatten(1).any(1)).flatten().tolist()
            differ += sorted(g_kept) != kept
    assert differ >= 20  # group ranking (conv1 filters + BN + conv2 channels) is another choice


def test_sensitivity_pruner_takes_std_once(write: Write) -> None:
    recipe = load_recipe(EXAMPLES / "sensitivity.yaml")
    cfg = recipe.pruners["sensitivity"]
    assert isinstance(cfg, StdThresholdPrunerConfig) and cfg.std == "first"
    resolved = resolve(recipe, build("resnet20_cifar"))
    first, second = [e.prune[0] for e in resolved.epochs if e.prune][:2]
    torch.manual_seed(0)
    w = torch.randn(64, 64, 3, 3)
    stats: dict[str, float] = {}
    m1 = _runtime.std_first_event(cfg, first, {"layer3.0.conv2.weight": w}, {}, stats)
    s = 0.45  # the '*' sensitivity
    assert stats["layer3.0.conv2.weight"] == pytest.approx(float(w.std(unbiased=False)))
    shrunk = w * 0.5  # training pulls the weights towards zero...
    m2 = _runtime.std_first_event(cfg, second, {"layer3.0.conv2.weight": shrunk}, m1, stats)
    threshold = s * float(w.std(unbiased=False))  # ...but the threshold stays s·std(W₀)
    expected = (shrunk.abs() > threshold) & m1["layer3.0.conv2.weight"]
    assert torch.equal(m2["layer3.0.conv2.weight"], expected)
    recomputed = (shrunk.abs() > s * float(shrunk.std(unbiased=False))) & m1[
        "layer3.0.conv2.weight"
    ]
    assert int(m2["layer3.0.conv2.weight"].sum()) < 0.6 * int(recomputed.sum())


# Distiller's published non-zeros of its ResNet-18 AGP schedule (examples/agp-pruning/
# resnet18.schedule_agp.yaml): int(s·n) zeros per tensor; round() is one off in 12 of these.
RESNET18_NNZ = {
    "layer1.0.conv1": 8848,
    "layer1.0.conv2": 8848,
    "layer1.1.conv1": 12166,
    "layer1.1.conv2": 12166,
    "layer2.0.conv1": 24331,
    "layer2.0.conv2": 58983,
    "layer2.0.downsample.0": 2704,
    "layer2.1.conv1": 35390,
    "layer2.1.conv2": 35390,
    "layer3.0.conv1": 70779,
    "layer3.0.conv2": 194642,
    "layer3.1.conv1": 235930,
    "layer3.1.conv2": 235930,
    "layer4.0.conv1": 471860,
    "layer4.0.conv2": 943719,
    "layer4.0.downsample.0": 52429,
    "layer4.1.conv1": 943719,
    "layer4.1.conv2": 778568,
}

RESNET18_AGP = """
version: 1
pruners:
  low_pruner:
    class: AutomatedGradualPruner
    initial_sparsity: 0.05
    final_sparsity: 0.60
    weights: [module.layer2.0.conv2.weight, module.layer3.1.conv1.weight,
              module.layer3.1.conv2.weight, module.layer4.0.conv1.weight,
              module.layer4.0.conv2.weight, module.layer4.0.downsample.0.weight,
              module.layer4.1.conv1.weight]
  mid_pruner:
    class: AutomatedGradualPruner
    initial_sparsity: 0.05
    final_sparsity: 0.67
    weights: [module.layer1.1.conv1.weight, module.layer1.1.conv2.weight,
              module.layer2.0.conv1.weight, module.layer2.0.downsample.0.weight,
              module.layer3.0.conv2.weight, module.layer4.1.conv2.weight]
  high_pruner:
    class: AutomatedGradualPruner
    initial_sparsity: 0.05
    final_sparsity: 0.76
    weights: [module.layer1.0.conv1.weight, module.layer1.0.conv2.weight,
              module.layer2.1.conv1.weight, module.layer2.1.conv2.weight,
              module.layer3.0.conv1.weight]
lr_schedulers:
  pruning_lr: {class: ExponentialLR, gamma: 0.9}
policies:
  - {pruner: {instance_name: low_pruner}, starting_epoch: 0, ending_epoch: 16, frequency: 2}
  - {pruner: {instance_name: mid_pruner}, starting_epoch: 4, ending_epoch: 16, frequency: 2}
  - {pruner: {instance_name: high_pruner}, starting_epoch: 4, ending_epoch: 16, frequency: 2}
  - {lr_scheduler: {instance_name: pruning_lr}, starting_epoch: 13, ending_epoch: 100, frequency: 1}
"""


def test_resnet18_agp_non_zeros_equal_distillers_table(write: Write) -> None:
    recipe = load_recipe(write(RESNET18_AGP))
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    with torch.no_grad():  # no exact zeros to start with (ties would count twice)
        for p in model.parameters():
            p[p == 0] = 1e-4
    pruned = Executor(recipe, model=model, epochs=16, device="cpu").prune_only().model
    nnz = {k: int((pruned.get_submodule(k).weight != 0).sum()) for k in RESNET18_NNZ}
    assert nnz == RESNET18_NNZ
    total = sum(int((p != 0).sum()) for n, p in pruned.named_parameters() if p.dim() == 4)
    assert total + 512_000 == 4_680_578  # Distiller's "Total sparsity" row (fc not pruned)
