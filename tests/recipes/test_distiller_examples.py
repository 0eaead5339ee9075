"""Every Distiller-format schedule in examples/recipes/distiller resolves on its model, and the
structural results of Distiller's published examples reproduce without training: ResNet-56
filter ranking 851,504 → 570,704 weights, the ResNet-20 hybrid AGP's 120,000 non-zeros, APoZ
trimming to Distiller's widths, and the word-LM AGP schedule on an LSTM language model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prunekit.recipes import Executor, load_recipe, resolve
from prunekit.recipes.native import ModelSection
from prunekit.zoo import build

EXAMPLES = Path(__file__).parents[2] / "examples" / "recipes" / "distiller"

#: schedule kind → (file, model, what it shows)
KINDS: dict[str, tuple[str, str]] = {
    "fine-grained AGP, string weights": ("agp_fine_grained", "resnet20_cifar"),
    "fine-grained AGP, torchvision": ("resnet18_agp_fine", "torchvision:resnet18"),
    "one-shot filter ranking + thinning, Leader": ("filter_rank_thinning", "resnet56_cifar"),
    "reg_regims grammar, repeated with thinning": ("filter_rank_repeated", "vgg19_cifar"),
    "L2 channel AGP + ChannelRemover": ("channel_rank_thinning", "resnet20_cifar"),
    "hybrid: filters (fold_batchnorm) + fine + Rows": ("hybrid_agp", "resnet20_cifar"),
    "APoZ filter AGP (network trimming)": ("apoz_agp", "resnet56_cifar"),
    "activation / gradient (skip_first_minibatch) / random": ("ranked_criteria", "plain20_cifar"),
    "block pruning (kwargs.block_shape)": ("blocks_agp", "resnet20_cifar"),
    "sensitivity pruning ('*')": ("sensitivity", "resnet20_cifar"),
    "magnitude thresholds + levels (args.levels)": ("magnitude_and_levels", "resnet20_cifar"),
    "group thresholding (StructureParameterPruner)": ("structure_threshold", "resnet20_cifar"),
    "dynamic network surgery (SplicingPruner, args)": ("network_surgery", "resnet20_cifar"),
    "DropFilter (BernoulliFilterPruner_AGP, args)": ("drop_filter", "plain20_cifar"),
    "random-level filters": ("random_level", "resnet20_cifar"),
    "SSL group lasso 2D/3D/4D/Channels/Rows+Cols": ("ssl_group_lasso", "resnet20_cifar"),
    "group variance + L1 threshold_criteria": ("group_variance", "resnet20_cifar"),
    "L1-ranked filter AGP + FilterRemover": ("resnet18_l1_filters_agp", "torchvision:resnet18"),
    "network slimming (prunekit extension)": ("resnet18_slimming", "torchvision:resnet18"),
    "word-LM AGP on LSTM + embedding": ("word_lm_agp", "word_lm"),
    "Baidu RNN pruning": ("baidu_rnn", "word_lm"),
    "baseline: MultiStepMultiGammaLR": ("baseline_lr", "preact_resnet20_cifar"),
    "quantizers skipped": ("quantize_and_prune", "preact_resnet20_cifar"),
}


def _model(spec: str) -> torch.nn.Module:
    from prunekit.models import build_model

    torch.manual_seed(0)
    return build_model(spec if ":" in spec else f"zoo:{spec}")


def test_every_example_file_is_in_the_table() -> None:
    assert sorted(f.stem for f in EXAMPLES.glob("*.yaml")) == sorted(f for f, _ in KINDS.values())


@pytest.mark.parametrize("kind", list(KINDS))
def test_example_resolves(kind: str) -> None:
    name, spec = KINDS[kind]
    recipe = load_recipe(EXAMPLES / f"{name}.yaml", skip_quantizers=True)
    assert recipe.source.format == "distiller"
    resolved = resolve(recipe, _model(spec))
    events = [a for e in resolved.epochs for a in e.prune]
    assert events or recipe.regularizers or not recipe.pruners
    noisy = [w for w in resolved.warnings if "quantizers skipped" not in w]
    assert not noisy, noisy


def _weights(model: torch.nn.Module) -> tuple[int, int]:
    """(elements, non-zeros) of the conv and linear weights (what Distiller's tables count)."""
    ws = [p for n, p in model.named_parameters() if p.dim() in (2, 4)]
    return sum(p.numel() for p in ws), sum(int((p != 0).sum()) for p in ws)


def _prune_only(name: str, spec: str, **kw: object) -> torch.nn.Module:
    recipe = load_recipe(EXAMPLES / f"{name}.yaml")
    recipe.model = ModelSection(spec=f"zoo:{spec}", input_shape=[1, 3, 32, 32])
    executor = Executor(recipe, model=_model(spec), device="cpu", **kw)  # type: ignore[arg-type]
    return executor.prune_only().model


def test_resnet56_filter_ranking_gives_distillers_570704() -> None:
    model = _prune_only("filter_rank_thinning", "resnet56_cifar")
    assert _weights(model) == (570_704, 570_704)  # Distiller: 851,504 → 570,704
    widths = [
        model.get_submodule(f"layer{s}.{b}.conv1").out_channels
        for s, b in ((1, 0), (1, 8), (2, 0), (2, 1), (2, 5), (3, 0), (3, 1), (3, 2), (3, 4))
    ]
    assert widths == [5, 5, 32, 13, 32, 64, 52, 39, 64]


def test_resnet20_hybrid_agp_gives_distillers_120000() -> None:
    model = _prune_only("hybrid_agp", "resnet20_cifar")
    assert _weights(model)[1] == 120_000  # Distiller's "NNZ-Params: 120000"
    assert model.layer2[0].conv1.out_channels == 16 and model.layer2[0].conv2.out_channels == 16
    assert model.layer3[0].conv1.in_channels == 16  # the thinned stage feeds a thinner conv
    assert tuple(model.fc.weight.shape) == (10, 64) and int((model.fc.weight != 0).sum()) == 320


def test_apoz_trims_resnet56_to_distillers_widths() -> None:
    torch.manual_seed(0)
    batches = [(torch.randn(16, 3, 32, 32), torch.zeros(16, dtype=torch.long))]
    model = _prune_only("apoz_agp", "resnet56_cifar", train_data=batches)
    assert [model.layer1[b].conv1.out_channels for b in range(9)] == [5] * 9  # 16 - int(11.2)
    assert [model.layer2[b].conv1.out_channels for b in (1, 2, 3, 4, 6, 7)] == [13] * 6
    assert model.layer2[5].conv1.out_channels == 32  # not listed
    assert model.layer3[1].conv1.out_channels == 52  # Distiller's v2 APoZ table: 52 of 64


def test_word_lm_agp_schedule_runs_on_an_lstm_language_model() -> None:
    recipe = load_recipe(EXAMPLES / "word_lm_agp.yaml")
    torch.manual_seed(0)
    model = build("word_lm", ntoken=60, ninp=24, nhid=24, nlayers=2, dropout=0.0)
    gen = torch.Generator().manual_seed(0)
    text = torch.randint(0, 60, (4 * 8 * 13,), generator=gen)  # a token stream
    seqs = text.view(-1, 13)  # 32 sequences of 13 tokens: inputs 12, next-token targets 12
    batches = [(s[:, :-1], s[:, 1:].reshape(-1)) for s in seqs.split(8)]
    result = Executor(
        recipe, model=model, train_data=batches, eval_data=batches[:1], device="cpu", progress=False
    ).run()
    lm = result.model
    for name, s in (
        ("rnn.weight_ih_l0", 0.6),
        ("rnn.weight_hh_l0", 0.6),
        ("rnn.weight_ih_l1", 0.8),
        ("encoder.weight", 0.9),
    ):
        w = lm.get_parameter(name)
        assert int((w == 0).sum()) == int(s * w.numel()), name
    assert int((lm.decoder.weight == 0).sum()) == 0  # not listed
    assert [h["sparsity"] > 0 for h in result.history] == [True] * 5
    assert lm(batches[0][0]).shape == (8 * 12, 60)
