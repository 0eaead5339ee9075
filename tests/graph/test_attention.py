"""Attention heads (prunekit.graph.attention, prunekit.attention): heads are pruned whole and
consistently across queries, keys, values, the output projection and per-head tensors; the
pruned model computes what the soft mask computes; the replacement modules compute what the
modules they replace compute; and a head-pruned vision transformer fine-tunes on real data."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.swin_transformer import ShiftedWindowAttention, ShiftedWindowAttentionV2

import prunekit
from prunekit.attention import (
    PrunableMultiheadAttention,
    PrunableShiftedWindowAttention,
    PrunableShiftedWindowAttentionV2,
)
from prunekit.graph import trace
from prunekit.importance import score
from prunekit.pipeline import PruneConfig, prune
from prunekit.plan import estimate
from prunekit.report import count_params
from prunekit.verify import max_rel_diff, soft_copy

# --------------------------------------------------------------------------- helpers


def _fill_zero_params(model: nn.Module) -> None:
    """Redraw constant near-zero parameters (zero biases, class token, heads): with them a
    ViT's output is 0 whatever the pruning does, and the equivalence check would be blind."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            first = p.flatten()[0]
            if p.numel() and first.abs() < 1e-3 and bool((p == first).all()):
                p.normal_(0.0, 0.02, generator=g)


def _randomize(model: nn.Module) -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)


def _prune(model: nn.Module, x: object, **cfg: object) -> tuple[nn.Module, prunekit.PruningPlan]:
    """Prune at ratio 0.5 and check pruned == soft mask; returns the dense copy and the plan."""
    dense = copy.deepcopy(model)
    result = prune(model, x, PruneConfig(ratio=0.5, **cfg))  # type: ignore[arg-type]
    assert result.plan.removed_units() > 0
    assert max_rel_diff(soft_copy(dense, result.plan), model, x) <= 1e-4
    assert count_params(model) == estimate(result.graph, result.plan)["params"]
    return dense, result.plan


# --------------------------------------------------------------------------- nn.MultiheadAttention

MHA_CASES: dict[str, tuple[dict[str, object], dict[str, object]]] = {
    "self_seq_first": ({}, {"need_weights": False}),
    "batch_first_weights": ({"batch_first": True}, {}),
    "per_head_weights": ({"batch_first": True}, {"average_attn_weights": False}),
    "kdim_vdim": ({"kdim": 6, "vdim": 5}, {}),
    "bias_kv_zero_attn": ({"add_bias_kv": True, "add_zero_attn": True}, {}),
    "no_bias": ({"bias": False}, {"need_weights": False}),
    "masks": ({"batch_first": True}, {"masks": True}),
    "causal": ({"batch_first": True}, {"causal": True}),
    "unbatched": ({}, {"unbatched": True}),
}


def _mha_call(mha: nn.MultiheadAttention, case: dict[str, object]) -> tuple[Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    kdim, vdim, e = mha.kdim, mha.vdim, mha.embed_dim
    bf = mha.batch_first
    shape = (lambda n, d: (2, n, d)) if bf else (lambda n, d: (n, 2, d))
    if case.get("unbatched"):
        shape = lambda n, d: (n, d)  # noqa: E731
    q = torch.randn(*shape(5, e), generator=g)
    k, v = torch.randn(*shape(7, kdim), generator=g), torch.randn(*shape(7, vdim), generator=g)
    kw: dict[str, object] = {
        k_: case[k_] for k_ in ("need_weights", "average_attn_weights") if k_ in case
    }
    if case.get("masks"):
        kw["attn_mask"] = torch.rand(5, 7, generator=g) > 0.7
        kw["key_padding_mask"] = torch.tensor([[False] * 6 + [True], [True] + [False] * 6])
    if case.get("causal"):
        q = k = v = torch.randn(*shape(5, e), generator=g)
        kw.update(attn_mask=torch.triu(torch.ones(5, 5, dtype=torch.bool), 1), is_causal=True)
        kw["need_weights"] = False
    out, w = mha(q, k, v, **kw)
    return (out,) if w is None else (out, w)


@pytest.mark.parametrize("name", sorted(MHA_CASES))
def test_prunable_mha_computes_what_mha_computes(name: str) -> None:
    init, case = MHA_CASES[name]
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, **init).eval()  # type: ignore[arg-type]
    _randomize(mha)
    twin = copy.deepcopy(mha)
    twin.scale = twin.head_dim**-0.5
    twin.__class__ = PrunableMultiheadAttention
    with torch.no_grad():
        for a, b in zip(_mha_call(mha, case), _mha_call(twin, case)):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


class MHABlock(nn.Module):
    """Pre-norm transformer block with ``nn.MultiheadAttention``: x + attn(ln(x)) + mlp."""

    def __init__(self, e: int = 16, heads: int = 4, **mha: object) -> None:
        super().__init__()
        self.embed, self.ln = nn.Linear(6, e), nn.LayerNorm(e)
        self.attn = nn.MultiheadAttention(e, heads, batch_first=True, **mha)  # type: ignore[arg-type]
        self.mlp = nn.Sequential(nn.Linear(e, 2 * e), nn.GELU(), nn.Linear(2 * e, e))
        self.head = nn.Linear(e, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.embed(x)
        h = self.ln(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return self.head(x + self.mlp(x))


def test_mha_heads_and_embed_dim_prune_exactly() -> None:
    model = MHABlock().eval()
    _randomize(model)
    x = torch.randn(2, 5, 6)
    dense, _plan = _prune(model, x)
    attn = model.attn
    assert type(attn) is PrunableMultiheadAttention
    assert (attn.num_heads, attn.head_dim, attn.embed_dim) == (2, 4, 8)
    assert attn.scale == 4**-0.5  # the original constant
    assert max_rel_diff(dense, model, x) > 1e-2  # pruning changed the output: the check can fail


def test_mha_heads_are_units_scored_per_head() -> None:
    model = MHABlock().eval()
    graph = trace(model, torch.randn(2, 5, 6))
    group = next(
        g
        for g in graph.groups
        if any((s.tensor, s.dim) == ("attn.in_proj_weight", 0) for s in g.slots)
    )
    assert group.size == 4  # one unit per head
    rows = next(s for s in group.slots if s.tensor == "attn.in_proj_weight" and s.dim == 0)
    assert sorted(torch.bincount(torch.as_tensor(rows.units)).tolist()) == [12] * 4  # q, k, v
    assert {s.tensor for s in group.slots} == {
        "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight",
    }  # fmt: skip
    assert score(model, graph, "l2")[group.id].shape == (4,)


def test_mha_returning_head_weights_keeps_heads_with_reason() -> None:
    class Weights(MHABlock):
        def forward(self, x: Tensor) -> Tensor:
            h = self.ln(self.embed(x))
            return self.head(self.attn(h, h, h)[0])

    graph = trace(Weights().eval(), torch.randn(2, 5, 6))
    reasons = graph.frozen["attn.in_proj_weight:0"]
    assert any("need_weights=False" in r for r in reasons), reasons


class CrossBlock(nn.Module):
    """Cross-attention with separate key/value widths (``kdim``/``vdim``) and bias_k/bias_v."""

    def __init__(self) -> None:
        super().__init__()
        self.q_in, self.kv_in = nn.Linear(6, 16), nn.Linear(4, 10)
        self.attn = nn.MultiheadAttention(16, 4, kdim=10, vdim=10, add_bias_kv=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:
        m = self.kv_in(memory)
        return self.head(self.attn(self.q_in(x), m, m, need_weights=False)[0])


def test_cross_attention_with_kdim_vdim_prunes_exactly() -> None:
    model = CrossBlock().eval()
    _randomize(model)
    _prune(model, (torch.randn(5, 2, 6), torch.randn(7, 2, 4)))
    attn = model.attn
    assert attn.num_heads == 2 and attn.q_proj_weight.shape == (8, 8)
    assert (attn.kdim, attn.vdim) == (5, 5) and attn.bias_k.shape == (1, 1, 8)


# --------------------------------------------------------------------------- Swin


class SwinBlock(nn.Module):
    def __init__(self, attn: nn.Module, c: int = 16) -> None:
        super().__init__()
        self.embed, self.ln, self.attn, self.head = nn.Linear(3, c), nn.LayerNorm(c), attn, None
        self.head = nn.Linear(c, 2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.embed(x)
        return self.head(x + self.attn(self.ln(x)))


SWIN = {
    "v1_shifted": lambda: ShiftedWindowAttention(16, [3, 3], [1, 1], 4),
    "v1_plain": lambda: ShiftedWindowAttention(16, [4, 4], [0, 0], 4),
    "v2_shifted": lambda: ShiftedWindowAttentionV2(16, [3, 3], [1, 1], 4),
}


@pytest.mark.parametrize("name", sorted(SWIN))
def test_swin_window_attention_heads_prune_exactly(name: str) -> None:
    attn = SWIN[name]()
    twin = copy.deepcopy(attn)
    twin.__class__ = (
        PrunableShiftedWindowAttentionV2 if "v2" in name else PrunableShiftedWindowAttention
    )
    twin.head_dim, twin.scale = 4, 4**-0.5
    x = torch.randn(2, 7, 8, 16)  # padded to whole windows
    _randomize(attn)
    _randomize(twin)
    with torch.no_grad():
        torch.testing.assert_close(attn.eval()(x), twin.eval()(x), atol=1e-5, rtol=1e-5)
    model = SwinBlock(attn).eval()
    _randomize(model)
    _prune(model, torch.randn(2, 7, 8, 3))
    assert isinstance(model.attn, PrunableShiftedWindowAttention | PrunableShiftedWindowAttentionV2)
    assert model.attn.num_heads == 2 and model.attn.head_dim == 4


# --------------------------------------------------------------------------- timm


def _timm_attention(**kw: object) -> nn.Module:
    layers = pytest.importorskip("timm.layers.attention")
    fused = kw.pop("fused", True)
    cls = layers.AttentionRope if kw.pop("rope", False) else layers.Attention
    attn = cls(16, **kw)
    attn.fused_attn = fused
    return attn


class TimmBlock(nn.Module):
    def __init__(self, attn: nn.Module) -> None:
        super().__init__()
        self.embed, self.ln, self.attn, self.head = nn.Linear(3, 16), nn.LayerNorm(16), attn, None
        self.head = nn.Linear(16, 2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.embed(x)
        return self.head(x + self.attn(self.ln(x)))


TIMM: dict[str, tuple[dict[str, object], tuple[int, int]]] = {
    "fused_sdpa": ({"num_heads": 4, "qkv_bias": True}, (2, 2)),
    "explicit_scale": ({"num_heads": 4, "fused": False}, (2, 2)),
    "qk_norm_gate_scale_norm": (
        {
            "num_heads": 4,
            "qk_norm": True,
            "gated": True,
            "scale_norm": True,
            "norm_layer": nn.LayerNorm,
        },
        (2, 2),
    ),
    "gqa_rope_layout": (
        {"num_heads": 4, "num_kv_heads": 2, "qkv_fused": False, "rope": True},
        (2, 1),
    ),
}


@pytest.mark.parametrize("name", sorted(TIMM))
def test_timm_attention_heads_prune_exactly(name: str) -> None:
    kw, (heads, kv_heads) = TIMM[name]
    model = TimmBlock(_timm_attention(**dict(kw))).eval()
    _randomize(model)
    _prune(model, torch.randn(2, 5, 3))
    attn = model.attn
    assert (attn.num_heads, getattr(attn, "num_kv_heads", heads)) == (heads, kv_heads)
    assert attn.attn_dim == heads * attn.head_dim == attn.proj.in_features
    if "gqa" in name:  # kv groups stay whole: 2 query heads per kv head, as before
        assert attn.num_kv_groups == 2 and attn.k_proj.out_features == kv_heads * attn.head_dim


# --------------------------------------------------------------------------- torchvision models


def _torchvision(name: str, **kw: object) -> nn.Module:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torchvision.models.get_model(name, weights=None, **kw).eval()
    _fill_zero_params(model)
    return model


MODELS: dict[str, tuple[Callable[[], nn.Module], int, float]] = {
    "vit_b_16": (lambda: _torchvision("vit_b_16", image_size=64), 64, 0.72),
    "swin_t": (lambda: _torchvision("swin_t"), 64, 0.72),
}  # convnext_tiny: tests/graph/test_norms.py


@pytest.mark.parametrize(
    "name",
    ["vit_b_16", pytest.param("swin_t", marks=pytest.mark.slow)],  # swin_t: ~20 s here
)
def test_torchvision_transformers_prune_exactly_at_half(name: str) -> None:
    make, size, min_cut = MODELS[name]
    model = make()
    x = torch.randn(1, 3, size, size)
    dense, _plan = _prune(model, x)
    assert 1 - count_params(model) / count_params(dense) >= min_cut
    assert model(x).shape == dense(x).shape
    if name == "vit_b_16":
        layer = model.encoder.layers[0].self_attention
        assert type(layer) is PrunableMultiheadAttention and layer.num_heads == 6
        assert model.hidden_dim == model.conv_proj.out_channels == 384


TINY_VIT = {"image_size": 32, "patch_size": 8, "num_layers": 2, "num_heads": 4,
            "hidden_dim": 32, "mlp_dim": 64}  # fmt: skip


@pytest.fixture
def vit_namespace() -> object:
    """``tiny_vit:any`` builds torchvision's VisionTransformer from its kwargs (test only)."""
    from prunekit.models import FACTORIES

    FACTORIES.add("tiny_vit", lambda name, kw: torchvision.models.VisionTransformer(**kw))
    yield
    FACTORIES.remove("tiny_vit")


def test_pruned_vit_saves_and_loads_through_its_plan(tmp_path: Path, vit_namespace: object) -> None:
    model = torchvision.models.VisionTransformer(**TINY_VIT).eval()  # type: ignore[arg-type]
    _fill_zero_params(model)
    x = torch.randn(1, 3, 32, 32)
    plan = prune(model, x, PruneConfig(ratio=0.5)).plan
    prunekit.save(model, tmp_path / "vit", {"model": "tiny_vit:vit", "kwargs": TINY_VIT}, [plan])
    loaded = prunekit.load(tmp_path / "vit").eval()
    assert type(loaded.encoder.layers[0].self_attention) is PrunableMultiheadAttention
    assert loaded.encoder.layers[0].self_attention.num_heads == 2
    assert max_rel_diff(model, loaded, x) == 0.0


# --------------------------------------------------------------------------- real data


def _fit(
    model: nn.Module, loaders: tuple[object, object], epochs: int, seed: int, run: Path
) -> None:
    from prunekit.train import TrainConfig, Trainer

    cfg = TrainConfig(epochs=epochs, lr=0.05, nesterov=True, weight_decay=5e-4, seed=seed,
                      schedule="onecycle", eval_every=epochs, device="cpu", progress=False,
                      tensorboard=False)  # fmt: skip
    Trainer(model, *loaders, cfg).fit(run)  # type: ignore[arg-type]


def test_head_pruned_vit_fine_tunes_on_real_digits(tmp_path: Path) -> None:
    """A small ViT trained on scikit-learn's real 8x8 digits, pruned at ratio 0.5 (half of its
    heads, residual stream and MLP), recovers by fine-tuning: above 85% test accuracy and above
    its accuracy right after pruning."""
    from prunekit.data import TensorLoader, load_dataset
    from prunekit.train import evaluate

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: threads only add sync cost on a shared machine
    try:
        torch.manual_seed(0)
        data = load_dataset("digits", "train")
        test = TensorLoader(load_dataset("digits", "test"), 512)
        model = torchvision.models.VisionTransformer(
            image_size=8, patch_size=2, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64,
            num_classes=10,
        )  # fmt: skip
        model.conv_proj = nn.Conv2d(1, 32, 2, 2)  # digits are grey
        _fit(model, (TensorLoader(data, 64, shuffle=True, seed=0), test), 20, 0, tmp_path / "a")
        dense_acc = float(evaluate(model.eval(), test)["acc"])
        prune(model, torch.randn(1, 1, 8, 8), PruneConfig(ratio=0.5))
        heads = [layer.self_attention.num_heads for layer in model.encoder.layers]
        pruned_acc = float(evaluate(model.eval(), test)["acc"])
        _fit(model, (TensorLoader(data, 64, shuffle=True, seed=1), test), 10, 1, tmp_path / "b")
        tuned_acc = float(evaluate(model.eval(), test)["acc"])
    finally:
        torch.set_num_threads(threads)
    assert heads == [2, 2]
    print(f"digits ViT: dense {dense_acc:.3f}, pruned {pruned_acc:.3f}, tuned {tuned_acc:.3f}")
    assert tuned_acc > 0.85 and tuned_acc > pruned_acc + 0.02
