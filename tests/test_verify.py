"""The library's one soft-vs-pruned check, on every API path that performs surgery, and the
loud result of a plan that removes much less than asked."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import Tensor, nn

from prunekit.errors import ConfigError, PruneWarning, VerificationError
from prunekit.graph import trace
from prunekit.importance import score
from prunekit.methods.stages import prune_model
from prunekit.pipeline import PruneConfig, prune
from prunekit.plan import PruningPlan, make_plan
from prunekit.structured import StructuredPruner
from prunekit.verify import check_plan, redraw_degenerate

X = torch.randn(2, 3, 8, 8)


class Net(nn.Module):
    def __init__(self, zero_head: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 4, 1)
        if zero_head:  # a zero-initialised head: every output is 0 whatever the pruning
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.relu(self.conv2(torch.relu(self.conv1(x)))))


def _plan(model: nn.Module) -> PruningPlan:
    graph = trace(model, X)
    return make_plan(graph, score(model, graph, "l2"), ratio=0.5)


def _wrong(plan: PruningPlan) -> PruningPlan:
    """Same counts, other channels in the consumer: runs, but computes something else."""
    bad = copy.deepcopy(plan)
    kept = bad.tensors["conv2.weight"][1]
    bad.tensors["conv2.weight"][1] = sorted(set(range(8)) - set(kept))[: len(kept)]
    return bad


def _broken(plan: PruningPlan) -> PruningPlan:
    """The consumer keeps all its inputs: the pruned model does not run."""
    bad = copy.deepcopy(plan)
    del bad.tensors["conv2.weight"][1]
    return bad


def test_check_plan_passes_an_exact_plan() -> None:
    model = Net().eval()
    assert check_plan(model, _plan(model), X) <= 1e-5


@pytest.mark.parametrize("zero_head", [False, True])
def test_check_plan_catches_a_wrong_plan_even_behind_a_zero_head(zero_head: bool) -> None:
    model = Net(zero_head).eval()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(VerificationError, match="differs from its soft mask"):
        check_plan(model, _wrong(_plan(model)), X)
    with pytest.raises(VerificationError, match=r"does not run \(in module 'conv2'"):
        check_plan(model, _broken(_plan(model)), X)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the model was not touched


def test_redraw_touches_only_constant_parameters_and_not_the_global_rng() -> None:
    model = Net(zero_head=True)
    conv1 = model.conv1.weight.detach().clone()
    state = torch.get_rng_state()
    assert redraw_degenerate(model) == 2  # the head's weight and bias
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(model.conv1.weight, conv1)
    assert model.head.weight.abs().min() > 0


def test_prune_verifies_by_default_and_leaves_the_model_unpruned(monkeypatch) -> None:
    import prunekit.pipeline as pipeline

    real = pipeline.make_plan
    monkeypatch.setattr(pipeline, "make_plan", lambda *a, **k: _wrong(real(*a, **k)))
    model = Net().eval()
    with pytest.raises(VerificationError):
        prune(model, X, PruneConfig(ratio=0.5))
    assert model.conv1.out_channels == 8
    result = prune(model, X, PruneConfig(ratio=0.5), verify=False)  # the explicit opt-out
    assert result.max_rel_diff is None and model.conv1.out_channels == 4


def test_prune_reports_the_check() -> None:
    result = prune(Net().eval(), X, PruneConfig(ratio=0.5))
    assert result.max_rel_diff is not None and result.max_rel_diff <= 1e-5


def test_prune_model_verifies() -> None:
    model = Net().eval()
    with pytest.raises(VerificationError):
        prune_model(model, X, lambda m, g: (_wrong(_plan(m)), {}))
    assert model.conv1.out_channels == 8
    assert prune_model(model, X, lambda m, g: (_plan(m), {})).max_rel_diff <= 1e-5


def test_structured_finalize_verifies() -> None:
    model = Net().eval()
    pruner = StructuredPruner(model, X, None, criterion="l2")
    plan = pruner.prune_to(0.5)
    pruner.plan = _broken(plan)
    with pytest.raises(VerificationError, match="does not run"):
        pruner.finalize()
    assert model.conv1.out_channels == 8  # still soft
    pruner.plan = plan
    assert pruner.finalize().conv1.out_channels == 4
    no_inputs = StructuredPruner(Net(), None, None, graph=pruner.graph)
    no_inputs.prune_to(0.5)
    with pytest.raises(ConfigError, match="verify=False"):
        no_inputs.finalize()


class Frozen(nn.Module):
    """Convolutions with literally sliced biases: nothing can be pruned."""

    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(8, 3, 3, 3))
        self.w2 = nn.Parameter(torch.randn(4, 8, 3, 3))
        self.bias = nn.Parameter(torch.randn(12))

    def forward(self, x: Tensor) -> Tensor:
        y = torch.relu(nn.functional.conv2d(x, self.w1, self.bias[:8], padding=1))
        return nn.functional.conv2d(y, self.w2, self.bias[8:], padding=1)


def test_a_plan_removing_nothing_warns_with_the_reasons() -> None:
    with pytest.warns(PruneWarning, match=r"(?s)no prunable channel group.*literal positions"):
        result = prune(Frozen(), X, PruneConfig(ratio=0.5))
    assert result.plan.removed_units() == 0
    assert "literal positions (kept: the first 8) (at <model>): bias:0" in result.warnings[0]


def test_a_good_plan_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", PruneWarning)
        assert not prune(Net().eval(), X, PruneConfig(ratio=0.5)).warnings
