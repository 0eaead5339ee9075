"""Run a recipe: train epoch by epoch, pruning and regularizing as its policies say.

The executor follows a :class:`~prunekit.recipes.resolve.ResolvedRecipe` and is built from the
library's parts, so a recipe trains exactly as the rest of prunekit does:

* :class:`prunekit.train.Trainer` runs the epochs (optimizer, bf16/channels-last on CUDA,
  evaluation, atomic per-epoch checkpoints and bit-exact resume) with the recipe's
  learning rate (:func:`~prunekit.recipes.lr.resolved_lr`: the library's one
  :class:`~prunekit.train.LRSchedule` with the recipe's LR policies, as printed in the plan);
* pruning events run at the start of their epochs; their masks are re-applied after every
  optimizer step, as Distiller does. Unstructured masks come from
  :func:`prunekit.sparse.masks_for`, structured ones from a
  :class:`prunekit.structured.StructuredPruner` per pruner (the core engine's ``score`` →
  ``make_plan`` → soft ``apply_plan``, each level's plan inside the previous one's);
* regularizers are :mod:`prunekit.train.regularizers`, active in the epochs their policies
  name; distillation is :class:`prunekit.train.DistillationLoss`;
* at the end, pruners with ``surgery: true`` physically slice the model (one core-engine plan).

Example:
    >>> result = Executor(load_recipe("examples/recipes/lenet300_agp_mnist.yaml"),
    ...                   out_dir="runs/lenet").run()
    >>> result.history[-1]["accuracy"]
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from prunekit._fileio import atomic_write_text
from prunekit.allocators import global_keep
from prunekit.device import resolve_device
from prunekit.errors import CheckpointError, ConfigError
from prunekit.graph import DependencyGraph, trace
from prunekit.plan import PruningPlan, plan_from_keep
from prunekit.recipes import _runtime
from prunekit.recipes.lr import resolved_lr
from prunekit.recipes.native import (
    DataSection,
    GroupLassoRegularizerConfig,
    GroupPrunerConfig,
    GroupVarianceRegularizerConfig,
    MagnitudePrunerConfig,
    PrunerConfig,
    RampThresholdPrunerConfig,
    Recipe,
    SlimPrunerConfig,
    SplicingPrunerConfig,
    StdThresholdPrunerConfig,
    StructuredPrunerConfig,
)
from prunekit.recipes.resolve import PruneAction, ResolvedRecipe, resolve
from prunekit.sparse import masks_for
from prunekit.sparse.groups import group_masks
from prunekit.sparse.masks import zero_pruned
from prunekit.structured import StructuredPruner
from prunekit.surgery import apply_plan
from prunekit.train import TrainConfig, Trainer
from prunekit.train.distill import DistillationLoss
from prunekit.train.regularizers import (
    GroupLassoRegularizer,
    GroupVarianceRegularizer,
    L1Regularizer,
    Regularizer,
)
from prunekit.verify import check_plan

Batches = Iterable[tuple[Tensor, Tensor]]
#: sub-folder of ``out_dir`` holding the per-epoch checkpoint (the trainer's)
CHECKPOINT_DIR = "checkpoint"


@dataclass
class RunResult:
    """What :meth:`Executor.run` returns.

    Attributes:
        model: the trained (and, if asked, sliced) model.
        resolved: the plan that was followed.
        history: one dict per epoch (``epoch``, ``lr``, ``loss``, ``sparsity``, ``accuracy``).
        masks: final keep masks of pruned parameters (before surgery).
        out_dir: where results were written (None: nothing written).
    """

    model: nn.Module
    resolved: ResolvedRecipe
    history: list[dict[str, float]]
    masks: dict[str, Tensor]
    out_dir: Path | None = None


@dataclass
class _State:
    masks: dict[str, Tensor] = field(default_factory=dict)
    # Tensors masked by structured / slim pruners with ``surgery: true``: only their masks
    # decide which units the end-of-run surgery removes.
    surgery_tensors: set[str] = field(default_factory=set)

    @torch.no_grad()
    def apply(self, params: dict[str, nn.Parameter]) -> None:
        """Re-zero pruned weights (after each optimizer step, so they stay pruned)."""
        zero_pruned(params, self.masks)

    def merge(self, new: dict[str, Tensor]) -> None:
        """AND new keep-masks into the current ones (pruned entries never come back)."""
        for name, mask in new.items():
            old = self.masks.get(name)
            self.masks[name] = mask if old is None else (mask & old.to(mask.device))

    def sparsity(self) -> float:
        """Fraction of zeros over the masked parameters (0 when nothing is pruned yet)."""
        if not self.masks:
            return 0.0
        pruned = sum(int((~m).sum()) for m in self.masks.values())
        return pruned / sum(m.numel() for m in self.masks.values())


class _RecipeHooks:
    """Trainer callback that carries out the resolved recipe's epochs.

    At each epoch start it runs that epoch's pruning events; after every optimizer step it
    re-zeroes the pruned weights; at each epoch end it records the sparsity. Its state (masks,
    the structured pruners' plans, the dense teacher, the recipe's fingerprint) goes into every
    trainer checkpoint.
    """

    def __init__(
        self,
        executor: Executor,
        model: nn.Module,
        resolved: ResolvedRecipe,
        loaders: tuple[Batches, Batches | None],
        teacher: nn.Module | None,
    ) -> None:
        self.executor = executor
        self.resolved = resolved
        self.loaders = loaders
        self.teacher = teacher
        self.state = _State()
        self.epoch = 0
        self._params: dict[str, nn.Parameter] = {}
        self._model = model
        self._graph: DependencyGraph | None = None
        self._norms: dict[str, str] | None = None
        self._global_step = 0
        self.runtime = _runtime.PolicyMasks(executor.recipe, resolved)
        self.regularizers: _PolicyRegularizers | None = None
        # Per pruner and tensor: the std (or mean and std of |W|) taken at its first event.
        self.stats: dict[str, dict[str, Any]] = {}
        # Group id → units alive after the last thinning (Distiller counts later events from
        # these), and the kept units of that thinning (what the end-of-run surgery slices).
        self.physical: dict[str, int] = {}
        self.thinned: dict[str, list[int]] | None = None
        self.deferred: list[PruneAction] = []  # skip_first_step events, run after step 1
        self.leaders: dict[str, dict[str, str]] = {}  # structured pruner → group → its weight
        # One core-engine StructuredPruner per structured pruner of the recipe: it keeps later
        # levels' plans inside earlier ones (units removed once stay removed, whatever the
        # criterion) and its progress is checkpointed.
        recipe = executor.recipe
        self.structured = {
            name: self._structured_pruner(cfg, resolved.targets[name])
            for name, cfg in recipe.pruners.items()
            if isinstance(cfg, StructuredPrunerConfig)
        }

    @property
    def graph(self) -> DependencyGraph:
        """The dense model's dependency graph, traced once per run: soft pruning never changes
        a shape, so it serves every structured pruner and the end-of-run surgery."""
        if self._graph is None:
            self._graph = trace(self._model, self.executor._example_input())
        return self._graph

    @property
    def norms(self) -> dict[str, str]:
        """Conv/linear weight → the BatchNorm right after it (for ``fold_bn``), found once."""
        if self._norms is None:
            from prunekit.importance import following_norms

            self._norms = following_norms(self._model, self.executor._example_input())
        return self._norms

    def _structured_pruner(
        self, cfg: StructuredPrunerConfig, names: list[str]
    ) -> StructuredPruner:
        dim = 0 if cfg.target == "filters" else 1
        leaders = _leaders(self.graph, names, dim)
        lost = [n for n in names if n not in leaders.values()]
        name = next(k for k, v in self.executor.recipe.pruners.items() if v is cfg)
        if cfg.ranking == "own" and lost and len(lost) == len(names):
            raise ConfigError(
                f"pruner {name!r}: no {cfg.target} of {', '.join(lost)} can be removed (they "
                "feed the model's output or a layer kept whole); select other weights"
            )
        self.leaders[name] = leaders
        score_kwargs: dict[str, Any] = {"batches": self.loaders[0]}
        if cfg.ranking == "own":  # each group ranked by its weight's own filters/channels
            score_kwargs["slots"] = {gid: (w, dim) for gid, w in leaders.items()}
        return StructuredPruner(
            self._model,
            None,
            None,  # levels come from the resolved recipe's events (prune_to)
            criterion=cfg.criterion,
            global_ranking=cfg.global_ranking,
            round_to=cfg.round_to,
            floor=cfg.floor,
            allocator=cfg.allocator,
            groups=set(leaders) if cfg.ranking == "own" else _groups_for(self.graph, names, dim),
            score_kwargs=score_kwargs,
            graph=self.graph,
        )

    # -- pruning --------------------------------------------------------------------------------

    def prune(self, model: nn.Module, action: PruneAction) -> None:
        """Apply one pruning event, updating the masks (and zeroing what it pruned)."""
        cfg = self.executor.recipe.pruners[action.pruner]
        params = dict(model.named_parameters())
        if self.runtime.transient(action):  # forward-only / discarded masks: weights untouched
            self.runtime.set(action, self._new_masks(cfg, action, params))
            return
        # Rank the currently masked weights; entries pruned earlier stay pruned.
        self.state.apply(params)
        new = self._new_masks(cfg, action, params)
        self.state.merge(new)
        if getattr(cfg, "surgery", False):  # structured and slim kinds may end in surgery
            self.state.surgery_tensors.update(new)
        self.state.apply(params)

    def _new_masks(
        self,
        cfg: PrunerConfig,
        action: PruneAction,
        params: dict[str, nn.Parameter],
    ) -> dict[str, Tensor]:
        """Keep-masks of one event's pruner, by the rule its kind registers in
        :data:`_MASK_RULES` (structured: of every tensor its plan slices)."""
        names = self.resolved.targets[action.pruner]
        event = _Event(
            self,
            cfg,
            action,
            params,
            {n: params[n] for n in names},
            {n: self.state.masks[n] for n in names if n in self.state.masks},
        )
        rule = next(_MASK_RULES[c] for c in type(cfg).__mro__ if c in _MASK_RULES)
        return rule(event)

    def _structured_event(self, cfg: StructuredPrunerConfig, action: PruneAction) -> Any:
        """One structured event: with ``own`` ranking (or after a thinning) every group's count
        is exact — ``int(s·n)`` of the units alive after the last thinning, s the level of the
        weight that ranks the group (Distiller)."""
        pruner = self.structured[action.pruner]
        level = float(action.sparsity or 0.0)
        overrides: dict[str, float] = {}
        if cfg.ranking == "own" or self.physical:
            for gid, weight in self.leaders[action.pruner].items():
                size = self.graph.group(gid).size
                alive = self.physical.get(gid, size)
                s = float(action.per_param.get(weight, level))
                overrides[gid] = min((size - alive + int(s * alive)) / size, 1 - 1 / size)
        extra: dict[str, Any] = {}
        if cfg.fold_bn:
            weights = list(self.leaders[action.pruner].values())
            extra["tensors"] = _runtime.fold_tensors(self._model, weights, self.norms)
        return pruner.prune_to(level, step=self.epoch, overrides=overrides, score_kwargs=extra)

    @property
    def step(self) -> int:
        """Steps done in the current epoch (0 without training data)."""
        if self.loaders[0] is None:
            return 0
        return self._global_step - self.epoch * len(self.loaders[0])  # type: ignore[arg-type]

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        self.epoch = epoch
        self._global_step = trainer.step
        self.runtime.enabled = False  # pruning's own forward passes see the true weights
        self.runtime.install(trainer.model, trainer.optimizer)
        for loader in self.loaders:  # the epoch's order also for calibration batches
            set_epoch = getattr(loader, "set_epoch", None)
            if set_epoch is not None:
                set_epoch(epoch)
        for action in self.resolved.epochs[epoch].prune:
            if self.runtime.of(action).skip_first_step and action.step == 1:
                self.deferred.append(action)  # waits for the first gradient
            else:
                self.prune(trainer.model, action)
        if self.resolved.epochs[epoch].thinning:
            self._thin()
        self._params = dict(trainer.model.named_parameters())
        self.state.apply(self._params)
        self.runtime.epoch = epoch
        self.runtime.enabled = True

    def _thin(self) -> None:
        """Distiller-style thinning now: record the units that survive it."""
        if not self.state.surgery_tensors:
            return
        self.thinned = surgery_keep_sets(self.graph, self.state.masks, self.state.surgery_tensors)
        self.physical = {
            g.id: len(self.thinned.get(g.id, range(g.size))) for g in self.graph.groups
        }

    def on_step_end(self, trainer: Trainer, step: int) -> None:
        self.state.apply(self._params)
        self._global_step = step
        self.runtime.after_step()
        if self.regularizers is not None:
            self.regularizers.threshold(trainer.model, self.epoch, self.state)
        spe = len(self.loaders[0])  # type: ignore[arg-type]
        local = step - self.epoch * spe  # the next mini-batch's index in this epoch
        if not 0 < local < spe:
            return
        due = [a for a in self.deferred if local == 1]
        self.deferred = [a for a in self.deferred if a not in due]
        for action in self.resolved.epochs[self.epoch].prune:
            every = self.runtime.of(action).every_steps
            if (every and step % every == 0 and action not in due) or action in due:
                self.runtime.enabled = False
                self.prune(trainer.model, action)
                self.runtime.enabled = True
        self.state.apply(self._params)

    def on_epoch_end(self, trainer: Trainer, epoch: int, row: dict[str, Any]) -> None:
        self.runtime.restore()  # checkpoints hold the unmasked values of double-copy policies
        kept = self.runtime.keep_ending(epoch)
        if self.regularizers is not None:
            kept.update(self.regularizers.keep_ending(epoch))
        if kept:
            self.state.merge(kept)
            self.state.apply(self._params)
        row["sparsity"] = self.state.sparsity()

    def on_train_end(self, trainer: Trainer, result: Any) -> None:
        self.runtime.remove()

    def state_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "recipe_sha256": _fingerprint(self.resolved),
            "masks": dict(self.state.masks),
            "surgery_tensors": sorted(self.state.surgery_tensors),
            "structured": {name: p.state_dict() for name, p in self.structured.items()},
            "policy_masks": self.runtime.state_dict(),
            "stats": json.dumps(self.stats),
            "physical": json.dumps(self.physical),
            "thinned": json.dumps(self.thinned),
        }
        if self.teacher is not None and self.executor._dense_teacher():
            out["teacher"] = self.teacher.state_dict()
        return out

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        if saved.get("recipe_sha256") != _fingerprint(self.resolved):
            raise CheckpointError(
                f"{self.executor.out_dir} holds a checkpoint written by a different recipe or run "
                "length; delete it (or run without --resume) to start over"
            )
        device = self.executor.device
        self.state.masks = {k: v.to(device) for k, v in saved["masks"].items()}
        self.state.surgery_tensors = set(saved["surgery_tensors"])
        for name, pruner in self.structured.items():
            pruner.load_state_dict(saved["structured"][name])
        self.runtime.load_state_dict(saved["policy_masks"], device)
        self.stats = json.loads(saved["stats"])
        self.physical = json.loads(saved["physical"])
        self.thinned = json.loads(saved["thinned"])
        if self.teacher is not None and "teacher" in saved:
            self.teacher.load_state_dict(saved["teacher"])


#: native group-lasso group → the dims that index its groups (see GroupLassoRegularizer)
LASSO_DIMS: dict[str, tuple[int, ...]] = {
    "filters": (0,),
    "rows": (0,),
    "channels": (1,),
    "cols": (1,),
    "kernels": (0, 1),
    "layer": (),
}


class _PolicyRegularizers:
    """The recipe's regularizers (:mod:`prunekit.train.regularizers`), each applied only in the
    epochs its policy makes active; those with a ``threshold`` also zero, after every step,
    what falls below λ (Distiller's threshold_criteria), kept for good with ``masking.keep``."""

    def __init__(self, recipe: Recipe, resolved: ResolvedRecipe, hooks: _RecipeHooks) -> None:
        self.hooks = hooks
        self.recipe = recipe
        self.resolved = resolved
        self.by_name: dict[str, list[Regularizer]] = {}
        for name, cfg in recipe.regularizers.items():
            strengths = resolved.strengths.get(name)
            if strengths:
                self.by_name[name] = _regularizers_of(cfg, strengths)
        self.last: dict[str, int] = {}  # regularizer policy with keep → its last active epoch
        for policy in recipe.policies:
            if policy.kind == "regularizer" and policy.masking is not None and policy.masking.keep:
                active = [e.epoch for e in resolved.epochs if policy.target in e.regularize]
                if active:
                    self.last[policy.target] = active[-1]
        self.masks: dict[str, Tensor] = {}  # the threshold masks of the last step

    def after_backward(self, model: nn.Module) -> None:
        for name in self.resolved.epochs[self.hooks.epoch].regularize:
            for reg in self.by_name.get(name, ()):
                reg.after_backward(model)

    @torch.no_grad()
    def threshold(self, model: nn.Module, epoch: int, state: _State) -> None:
        """After a step: zero the entries / groups at or below λ of thresholding regularizers."""
        params = dict(model.named_parameters())
        for name in self.resolved.epochs[epoch].regularize:
            cfg = self.recipe.regularizers[name]
            norm = getattr(cfg, "threshold", None)
            if norm is None:
                continue
            strengths = self.resolved.strengths[name]
            tensors = {n: params[n] for n in strengths}
            if isinstance(cfg, GroupLassoRegularizerConfig):
                masks = {}
                for n in tensors:
                    group = _lasso_groups(cfg, n)[0]
                    masks.update(
                        group_masks({n: tensors[n]}, {n: strengths[n]}, group, thresholds=norm)
                    )
            else:
                masks = masks_for(tensors, strengths, criterion="threshold")
            zero_pruned(params, masks)
            for n, m in masks.items():
                self.masks[f"{name}\0{n}"] = m

    def keep_ending(self, epoch: int) -> dict[str, Tensor]:
        """The threshold masks of ``keep`` policies ending with ``epoch`` (made permanent)."""
        out: dict[str, Tensor] = {}
        for key, mask in list(self.masks.items()):
            name, param = key.split("\0")
            if self.last.get(name) == epoch:
                out[param] = mask if param not in out else out[param] & mask
                del self.masks[key]
        return out


def _lasso_groups(cfg: GroupLassoRegularizerConfig, param: str) -> list[str]:
    """The group kinds of one parameter (a ``groups`` entry, else the regularizer's ``group``)."""
    value = lookup_group(cfg.groups or {}, param) or cfg.group
    return [value] if isinstance(value, str) else list(value)


def lookup_group(table: Mapping[str, Any], name: str) -> Any:
    from prunekit.recipes._targets import match, strip_data_parallel

    for key, value in table.items():
        if name in (key, strip_data_parallel(key)) or match(key, [name]):
            return value
    return None


def _regularizers_of(cfg: Any, strengths: dict[str, float]) -> list[Regularizer]:
    if isinstance(cfg, GroupVarianceRegularizerConfig):
        return [GroupVarianceRegularizer(strengths)]
    if not isinstance(cfg, GroupLassoRegularizerConfig):  # l1 and bn_l1: Σλ|w|
        return [L1Regularizer(strengths)]
    by_dims: dict[tuple[int, ...], dict[str, float]] = {}
    for param, lam in strengths.items():
        for group in _lasso_groups(cfg, param):
            by_dims.setdefault(LASSO_DIMS[group], {})[param] = lam
    return [GroupLassoRegularizer(s, group_dims=dims) for dims, s in by_dims.items()]


class Executor:
    """Runs a recipe end to end.

    Args:
        recipe: the recipe (native or converted from Distiller).
        model: the network; None builds ``recipe.model`` with ``prunekit.models.build_model``.
        train_data: re-iterable batches ``(inputs, targets)`` with ``len()``; None loads
            ``recipe.data``.
        eval_data: held-out batches for accuracy after each epoch; None: from ``recipe.data``
            when train_data is None as well, else no evaluation.
        epochs: overrides the epoch count.
        data_spec: overrides ``recipe.data.dataset``.
        out_dir: folder for the model (``prunekit.io.save``), ``history.json``,
            ``resolved.json``, the trainer's ``metrics.jsonl`` and ``checkpoint/``; None writes
            nothing.
        device: ``cpu``/``cuda``/…; None: ``recipe.training.device`` or cuda when available.
        progress: show progress bars (None: only on a TTY).
    """

    def __init__(
        self,
        recipe: Recipe,
        *,
        model: nn.Module | None = None,
        train_data: Batches | None = None,
        eval_data: Batches | None = None,
        epochs: int | None = None,
        data_spec: str | None = None,
        out_dir: str | Path | None = None,
        device: str | None = None,
        progress: bool | None = None,
    ) -> None:
        self.recipe = recipe
        self.model = model
        self.train_data = train_data
        self.eval_data = eval_data
        self.epochs = epochs
        self.data_spec = data_spec
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.device = resolve_device(device or recipe.training.device)
        self.progress = sys.stderr.isatty() if progress is None else progress
        self._sample_shape: tuple[int, ...] | None = None

    # -- public ---------------------------------------------------------------------------------

    def run(self, resume: bool = False) -> RunResult:
        """Train and prune per the recipe.

        Args:
            resume: continue from the newest epoch checkpoint in ``out_dir/checkpoint``
                (written after every epoch when ``out_dir`` is set); the result is the same as
                an uninterrupted run's. Without a checkpoint there, the run starts fresh.

        Returns:
            The :class:`RunResult` (also written to ``out_dir`` when given).

        Raises:
            ConfigError: ``resume`` without ``out_dir``.
            CheckpointError: the checkpoint is damaged or was written for another recipe.
        """
        if resume and self.out_dir is None:
            raise ConfigError("resume needs an output folder (--out DIR) holding the checkpoint")
        torch.manual_seed(self.recipe.training.seed)
        model = self._build_model()
        resolved = resolve(self.recipe, model, self.epochs)
        train, test = self._data()
        if not isinstance(train, Sized) or len(train) == 0:
            raise ConfigError("the training data must be a non-empty re-iterable with len()")
        self._remember_sample_shape(train)
        model.to(self.device)
        teacher = self._teacher(model)
        hooks = _RecipeHooks(self, model, resolved, (train, test), teacher)
        hooks.regularizers = _PolicyRegularizers(self.recipe, resolved, hooks)
        lr = resolved_lr(resolved, steps_per_epoch=len(train))
        trainer = Trainer(
            model,
            train,
            test,
            self._train_config(resolved),
            regularizers=[hooks.regularizers],
            distillation=self._distillation(teacher),
            callbacks=[hooks],
            lr_schedule=lr,
        )
        with _run_folder(self.out_dir) as folder:
            trained = trainer.fit(folder, resume=resume)
        history = [
            _history_row(plan.epoch, lr.lr(plan.epoch * len(train)), row)
            for plan, row in zip(resolved.epochs, trained.history)
        ]
        model = trained.model
        plan = self._finalize(model, hooks)
        self._save(model, plan, resolved, history)
        return RunResult(model, resolved, history, hooks.state.masks, self.out_dir)

    def prune_only(self) -> RunResult:
        """Carry out the recipe's pruning events epoch by epoch with no training in between.

        Every event, mask lifetime (``keep``) and thinning happens as in :meth:`run`, then the
        end-of-run surgery; there is no optimizer, LR, regularizer or distillation. What comes
        out is the structure the schedule gives this model's current weights: the widths after
        each thinning and the non-zeros per tensor (Distiller's published tables are of this
        kind). Criteria that need data (``activation``, ``apoz``, ``taylor``) score on
        ``train_data``.

        Returns:
            A :class:`RunResult` with an empty history; nothing is written.

        Example:
            >>> result = Executor(recipe, model=build_model("zoo:resnet56_cifar")).prune_only()
        """
        model = self._build_model()
        resolved = resolve(self.recipe, model, self.epochs)
        model.to(self.device)
        loaders = (self.train_data, self.eval_data)
        if self.train_data is not None:
            self._remember_sample_shape(self.train_data)
        hooks = _RecipeHooks(self, model, resolved, loaders, None)  # type: ignore[arg-type]
        stub = _NoTrainer(model)
        with torch.no_grad():
            for epoch in range(resolved.num_epochs):
                hooks.on_epoch_start(stub, epoch)  # type: ignore[arg-type]
                hooks.on_epoch_end(stub, epoch, {})  # type: ignore[arg-type]
        self._finalize(model, hooks)
        return RunResult(model, resolved, [], hooks.state.masks, None)

    def _train_config(self, resolved: ResolvedRecipe) -> TrainConfig:
        # The recipe's training section is the trainer's config; the run's length, device and
        # display are decided here, and the LR comes from the recipe's table (lr_schedule=).
        update = {"epochs": resolved.num_epochs, "device": str(self.device), "eval_every": 1}
        return self.recipe.training.model_copy(update={**update, "progress": self.progress})

    def _dense_teacher(self) -> bool:
        kd = self.recipe.distillation
        return kd is not None and kd.teacher == "dense"

    def _distillation(self, teacher: nn.Module | None) -> DistillationLoss | None:
        kd = self.recipe.distillation
        if teacher is None or kd is None:
            return None
        hard = nn.CrossEntropyLoss(label_smoothing=self.recipe.training.label_smoothing)
        return DistillationLoss(teacher, kd.temperature, kd.alpha, hard_loss=hard)

    # -- setup ----------------------------------------------------------------------------------

    def _build_model(self) -> nn.Module:
        if self.model is not None:
            return self.model
        section = self.recipe.model
        if section is None:
            raise ConfigError("the recipe has no 'model' section; add one or pass --model")
        if section.checkpoint is not None:
            from prunekit import io  # core engine (lead)

            return io.load(section.checkpoint)
        return section.record().build()

    def _data(self) -> tuple[Batches, Batches | None]:
        if self.train_data is not None:
            return self.train_data, self.eval_data
        section = self.recipe.data
        if section is None and self.data_spec is None:
            raise ConfigError("the recipe has no 'data' section; add one or pass --data SPEC")
        if section is None:
            section = DataSection(dataset=str(self.data_spec))
        elif self.data_spec is not None:
            section = section.model_copy(update={"dataset": self.data_spec})
        return load_data(section, self.device, self.recipe.training.seed)

    def _teacher(self, model: nn.Module) -> nn.Module | None:
        cfg = self.recipe.distillation
        if cfg is None:
            return None
        if cfg.teacher == "dense":
            teacher = copy.deepcopy(model)
        else:
            from prunekit import io  # core engine (lead)

            teacher = io.load(cfg.teacher).to(self.device)
        for p in teacher.parameters():
            p.requires_grad_(False)
        return teacher.eval()

    def _example_input(self) -> Tensor:
        """A zero batch for tracing: the recipe's ``model.input_shape``, else one sample of the
        training data (a 32×32 CIFAR model is traced at 32×32), else 1×3×224×224."""
        section = self.recipe.model
        if section and section.input_shape:
            shape = list(section.input_shape)
        else:
            shape = [1, *self._sample_shape] if self._sample_shape else [1, 3, 224, 224]
        return torch.zeros(*shape, device=self.device)

    def _remember_sample_shape(self, batches: Batches) -> None:
        images = getattr(batches, "images", None)  # a TensorLoader's (N, C, H, W) images
        shape = tuple(images.shape[1:]) if isinstance(images, Tensor) else None
        if shape is None:
            first = next(iter(batches), None)
            shape = tuple(first[0].shape[1:]) if first is not None else None
        self._sample_shape = tuple(shape) if shape is not None else None

    # -- end of run -----------------------------------------------------------------------------

    def _finalize(self, model: nn.Module, hooks: _RecipeHooks) -> PruningPlan | None:
        """Physically remove the units that ``surgery: true`` pruners zeroed (one plan, returned
        so the saved model records it)."""
        state = hooks.state
        if not state.surgery_tensors:
            return None
        if self.recipe.thinning_epochs:  # Distiller: only what its last thinning removed
            keep = hooks.thinned or {}
        else:
            keep = surgery_keep_sets(hooks.graph, state.masks, state.surgery_tensors)
        if not keep:
            return None
        plan = plan_from_keep(hooks.graph, keep, {"source": "recipe"})
        check_plan(model, plan, self._example_input())
        apply_plan(model, plan)
        return plan

    def _save(
        self,
        model: nn.Module,
        plan: PruningPlan | None,
        resolved: ResolvedRecipe,
        history: list[dict[str, float]],
    ) -> None:
        """Write ``model/`` (``prunekit.io``), ``history.json`` and ``resolved.json``."""
        if self.out_dir is None:
            return
        from prunekit import io

        section = self.recipe.model
        if section is None:
            raise ConfigError("saving needs the recipe's 'model' section (the base model spec)")
        if section.checkpoint is not None:
            record = io.load_record(section.checkpoint)
        else:
            record = section.record()
        io.save(model, self.out_dir / "model", record.then(*([] if plan is None else [plan])))
        atomic_write_text(self.out_dir / "history.json", json.dumps(history, indent=2))
        resolved.save_json(self.out_dir / "resolved.json")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


@dataclass
class _NoTrainer:
    """What the recipe hooks read from a trainer, for :meth:`Executor.prune_only`."""

    model: nn.Module
    optimizer: Any = None
    step: int = 0


def _fingerprint(resolved: ResolvedRecipe) -> str:
    """Identity of a run's plan: a checkpoint only resumes the run it was written by."""
    return hashlib.sha256(resolved.to_json().encode()).hexdigest()


def _history_row(epoch: int, lr: float, row: dict[str, Any]) -> dict[str, float]:
    """The executor's compact, deterministic epoch row from the trainer's (no timings)."""
    out = {"epoch": epoch, "lr": lr, "loss": row["train_loss"], "sparsity": row["sparsity"]}
    if row.get("val_acc") is not None:
        out["accuracy"] = row["val_acc"]
    return out


@contextlib.contextmanager
def _run_folder(out_dir: Path | None) -> Iterator[Path]:
    """The trainer's run folder: ``out_dir``, or a throw-away one when nothing is kept."""
    if out_dir is not None:
        yield out_dir
        return
    with tempfile.TemporaryDirectory(prefix="prunekit-recipe-") as tmp:
        yield Path(tmp)


@dataclass
class _Event:
    """One pruning event as a mask rule sees it."""

    run: _RecipeHooks
    cfg: Any
    action: PruneAction
    params: dict[str, nn.Parameter]
    tensors: dict[str, Tensor]  # the pruner's target weights
    current: dict[str, Tensor]  # their keep-masks in force

    @property
    def stats(self) -> dict[str, Any]:
        """Per-pruner state kept across events (first stds, splicing statistics)."""
        return self.run.stats.setdefault(self.action.pruner, {})


def _structured_rule(e: _Event) -> dict[str, Tensor]:
    return e.run._structured_event(e.cfg, e.action).keep_masks(e.params)


def _slim_rule(e: _Event) -> dict[str, Tensor]:
    cfg = e.cfg
    level = float(e.action.sparsity or 0.0)
    new = slim_masks(e.tensors, level, cfg.floor, cfg.round_to, e.current)
    for n in e.tensors:  # γ and β together: the channel's BN output becomes exactly 0
        bias = n.rsplit(".", 1)[0] + ".bias"
        if bias in e.params:
            new[bias] = new[n].clone()
    return new


def _std_threshold_rule(e: _Event) -> dict[str, Tensor]:
    if e.cfg.std == "first":
        return _runtime.std_first_event(e.cfg, e.action, e.tensors, e.current, e.stats)
    return masks_for(e.tensors, e.action.per_param, criterion="std_threshold", current=e.current)


def _threshold_rule(e: _Event) -> dict[str, Tensor]:
    return masks_for(e.tensors, e.action.per_param, criterion="threshold", current=e.current)


def _group_rule(e: _Event) -> dict[str, Tensor]:
    seed = e.run.executor.recipe.training.seed
    gen = _runtime.event_generator(seed, e.action.pruner, e.run.epoch, e.run.step)
    return _runtime.group_event(e.cfg, e.action, e.tensors, e.current, gen)


def _splicing_rule(e: _Event) -> dict[str, Tensor]:
    transient = e.run.runtime.transient(e.action)
    previous = e.run.runtime.current(e.action) if transient else e.current
    return _runtime.splice_event(e.cfg, e.action, e.tensors, previous, e.stats)


def _magnitude_rule(e: _Event) -> dict[str, Tensor]:
    cfg, action = e.cfg, e.action
    if cfg.thresholds is not None:  # a magnitude pruner with absolute cut-offs
        return _threshold_rule(e)
    amounts = {n: action.per_param.get(n, action.sparsity) for n in e.tensors}
    missing = sorted(n for n, a in amounts.items() if a is None)
    if missing:
        raise ConfigError(f"pruner {action.pruner!r}: no sparsity for {missing}")
    tensors = e.tensors
    if cfg.fold_bn:  # rank |w·γ/σ|; the mask is the same shape
        tensors = _runtime.fold_tensors(e.run._model, list(tensors), e.run.norms)
    return masks_for(
        tensors,
        {n: float(a) for n, a in amounts.items() if a is not None},
        scope="global" if cfg.global_ranking else "layer",
        current=e.current,
        rounding=cfg.rounding,
    )


#: pruner config class → how one of its events computes keep-masks (one entry per kind).
_MASK_RULES: dict[type, Callable[[_Event], dict[str, Tensor]]] = {
    StructuredPrunerConfig: _structured_rule,
    SlimPrunerConfig: _slim_rule,
    StdThresholdPrunerConfig: _std_threshold_rule,
    RampThresholdPrunerConfig: _threshold_rule,
    GroupPrunerConfig: _group_rule,
    SplicingPrunerConfig: _splicing_rule,
    MagnitudePrunerConfig: _magnitude_rule,
}


def slim_masks(
    bn_weights: Mapping[str, Tensor],
    percent: float,
    floor: int = 1,
    round_to: int | None = None,
    current: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Network Slimming channel selection (Liu et al. 2017, arXiv:1708.06519).

    One global ranking of raw |γ| — the ``global`` allocator's rule
    (:func:`prunekit.allocators.global_keep`) — removes ``percent`` of all channels, lowest
    first, while each layer keeps at least ``floor`` (no layer vanishes) and, with ``round_to``,
    a multiple of it (capped at the layer's width).

    Args:
        bn_weights: BN weight name → γ.
        percent: fraction of all channels to prune.
        floor: channels each layer keeps at least.
        round_to: each layer keeps a multiple of this many channels.
        current: keep-masks already in force (pruned channels rank lowest).

    Returns:
        BN weight name → per-channel keep mask (1-D).
    """
    # The global allocator's ranking (prunekit.allocators.global_keep) on raw |γ|; channels
    # pruned earlier score -1, so they stay pruned and count towards ``percent``.
    scores = {}
    for name, g in bn_weights.items():
        s = g.detach().abs().flatten().double()
        if current is not None and name in current:
            s = torch.where(current[name].flatten().to(s.device) != 0, s, -1.0)
        scores[name] = s.cpu()
    counts = global_keep(scores, percent, floor=floor, round_to=round_to, normalize=None)
    keep = {}
    for name, g in bn_weights.items():
        mask = torch.zeros(g.numel(), dtype=torch.bool)
        mask[torch.topk(scores[name], counts[name]).indices] = True
        keep[name] = mask.view(g.shape).to(g.device)
    return keep


def load_data(
    section: DataSection, device: torch.device | str = "cpu", seed: int = 0
) -> tuple[Batches, Batches]:
    """Train and test loaders for a data section (``prunekit.data``: decoded, cached uint8
    tensors; batches built and augmented on ``device``)."""
    from prunekit.data import TensorLoader, load_dataset

    train = load_dataset(section.dataset, split="train", workers=section.workers)
    test = load_dataset(section.dataset, split="test", workers=section.workers)
    augment = "crop_flip" if section.augment else None
    eval_bs = section.eval_batch_size or section.batch_size
    return (
        TensorLoader(
            train, section.batch_size, shuffle=True, device=device, augment=augment, seed=seed
        ),
        TensorLoader(test, eval_bs, shuffle=False, device=device),
    )


def _leaders(graph: DependencyGraph, names: list[str], dim: int) -> dict[str, str]:
    """Group id → the first of ``names`` (in order) whose dim ``dim`` lies in that group: the
    weight whose own structures rank the group (Distiller's group_dependency Leader)."""
    where = {(s.tensor, s.dim): g.id for g in graph.groups for s in g.slots}
    out: dict[str, str] = {}
    for name in names:
        gid = where.get((name, dim))
        if gid is not None:
            out.setdefault(gid, name)
    return out


def _groups_for(graph: DependencyGraph, names: list[str], dim: int) -> set[str]:
    """Ids of the dependency-graph groups holding dim ``dim`` of any of ``names``."""
    wanted = set(names)
    return {g.id for g in graph.groups if any(s.tensor in wanted and s.dim == dim for s in g.slots)}


def surgery_keep_sets(
    graph: Any, masks: dict[str, Tensor], tensors: set[str]
) -> dict[str, list[int]]:
    """Kept units per group, read from soft-pruning masks.

    A unit is removed when, in every slot of its group whose tensor is in ``tensors``, all of
    its entries are masked. Slots of other tensors do not vote; so for slimming (masks on BN
    γ/β only) coupled BNs keep the union of their channels.

    Args:
        graph: the dependency graph of the (still full-size) model.
        masks: parameter name → keep mask.
        tensors: the masked tensors that may trigger removal.

    Returns:
        group id → sorted kept unit indices, for groups that lose units.
    """
    keep: dict[str, list[int]] = {}
    for group in graph.groups:
        voting = [s for s in group.slots if s.tensor in tensors and s.tensor in masks]
        if not voting:
            continue
        alive = torch.zeros(group.size, dtype=torch.bool)
        for slot in voting:
            mask = masks[slot.tensor].detach().cpu()
            rows = mask.movedim(slot.dim, 0).reshape(mask.shape[slot.dim], -1).any(dim=1)
            positions = torch.as_tensor(slot.positions, dtype=torch.long)
            units = torch.as_tensor(slot.units, dtype=torch.long)
            alive[units[rows[positions]]] = True
        if not bool(alive.all()):
            keep[group.id] = torch.nonzero(alive).flatten().tolist()
    return keep
