"""Run a recipe: train epoch by epoch, pruning and regularizing as its policies say.

The executor follows a :class:`~prunekit.recipes.resolve.ResolvedRecipe`: at the start of each
epoch it applies that epoch's pruning events (masks are kept and re-applied after every optimizer
step, as Distiller does), adds the active regularizers' penalties to the loss, optionally
distills from the dense teacher, and drives the LR with the same :class:`LRDriver` that printed
the plan. At the end, structured pruners with ``surgery: true`` physically slice the model.

Unstructured pruning, slimming masks, penalties and distillation are self-contained
(:mod:`prunekit.recipes.ops`). Structured (dependency-graph) pruning, surgery, dataset loading
and saving call the core engine lazily (``prunekit.trace``, ``prunekit.importance.score``,
``prunekit.plan.make_plan``, ``prunekit.surgery.apply_plan``, ``prunekit.io.save``,
``prunekit.data.load_dataset``).

Example:
    >>> result = Executor(load_recipe("examples/recipes/lenet300_agp_mnist.yaml"),
    ...                   out_dir="runs/lenet").run()
    >>> result.history[-1]["accuracy"]
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
from collections.abc import Iterable, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from prunekit._fileio import atomic_write_text
from prunekit.errors import CheckpointError, ConfigError
from prunekit.recipes import ops
from prunekit.recipes.lr import LRDriver
from prunekit.recipes.native import (
    DataSection,
    GroupLassoRegularizer,
    MagnitudePruner,
    Recipe,
    SlimPruner,
    StdThresholdPruner,
    StructuredPruner,
)
from prunekit.recipes.resolve import (
    PruneAction,
    ResolvedRecipe,
    resolve,
)
from prunekit.train.evaluate import evaluate

Batches = Iterable[tuple[Tensor, Tensor]]
#: sub-folder of ``out_dir`` holding the per-epoch checkpoint
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
        for name, mask in self.masks.items():
            params[name].mul_(mask.to(params[name].dtype))


class Executor:
    """Runs a recipe end to end.

    Args:
        recipe: the recipe (native or converted from Distiller).
        model: the network; None builds ``recipe.model`` with ``prunekit.models.build_model``.
        train_data: iterable of ``(inputs, targets)`` batches; None loads ``recipe.data``.
        eval_data: held-out batches for accuracy after each epoch; None: from ``recipe.data``
            when train_data is None as well, else no evaluation.
        epochs: overrides the epoch count.
        data_spec: overrides ``recipe.data.dataset``.
        out_dir: folder for the model (``prunekit.io.save``), ``history.json`` and
            ``resolved.json``; None writes nothing.
        device: ``cpu``/``cuda``/…; None: ``recipe.training.device`` or cuda when available.
        progress: show a tqdm bar (None: only on a TTY).
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
        self.device = torch.device(device or recipe.training.device or _default_device())
        self.progress = sys.stderr.isatty() if progress is None else progress
        self._calibration: Batches | None = None  # batches for taylor / activation scores

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
        self._calibration = train
        model.to(self.device)
        teacher = self._teacher(model)
        opt = _optimizer(model, self.recipe)
        driver = self._lr_driver(opt, resolved, train)
        state, history = _State(), []
        if resume:
            history = self._restore(model, teacher, opt, driver, resolved, state)
        todo = resolved.epochs[len(history) :]
        bar = tqdm(todo, desc="recipe", disable=not self.progress, unit="epoch")
        for plan in bar:
            for loader in (train, test):
                set_epoch = getattr(loader, "set_epoch", None)
                if set_epoch is not None:  # reproducible shuffling / augmentation
                    set_epoch(plan.epoch)
            for action in plan.prune:
                self._prune(model, action, resolved, state)
            loss = self._train_epoch(
                model, train, opt, driver, plan.regularize, resolved, teacher, state
            )
            row = {
                "epoch": plan.epoch,
                "lr": plan.lr,
                "loss": loss,
                "sparsity": _sparsity(model, state),
            }
            if test is not None:
                row["accuracy"] = evaluate(model, test, device=self.device)["acc"]
            history.append(row)
            bar.set_postfix(loss=f"{loss:.3f}", sparsity=f"{row['sparsity']:.2f}")
            driver.epoch_end(plan.epoch)
            self._checkpoint(model, teacher, opt, resolved, state, history)
        model = self._finalize(model, state)
        self._save(model, resolved, history)
        return RunResult(model, resolved, history, state.masks, self.out_dir)

    def _lr_driver(
        self, opt: torch.optim.Optimizer, resolved: ResolvedRecipe, train: Batches
    ) -> LRDriver:
        steps = len(train) if isinstance(train, Sized) else 1
        lr_active = {
            n: [p.epoch for p in resolved.epochs if n in p.lr_step]
            for n in self.recipe.lr_schedules
        }
        lr_active = {n: es for n, es in lr_active.items() if es}
        return LRDriver(opt, self.recipe, resolved.num_epochs, lr_active, steps)

    # -- checkpoints ----------------------------------------------------------------------------

    def _checkpoint(
        self,
        model: nn.Module,
        teacher: nn.Module | None,
        opt: torch.optim.Optimizer,
        resolved: ResolvedRecipe,
        state: _State,
        history: list[dict[str, float]],
    ) -> None:
        """Atomically save everything the next epoch depends on (no pickle)."""
        if self.out_dir is None:
            return
        from prunekit.train.checkpoint import save_checkpoint
        from prunekit.train.seed import get_rng_state

        payload: dict[str, Any] = {
            "recipe_sha256": _fingerprint(resolved),
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "masks": dict(state.masks),
            "surgery_tensors": sorted(state.surgery_tensors),
            "history": history,
            "rng": get_rng_state(),
        }
        if teacher is not None and self._dense_teacher():
            payload["teacher"] = teacher.state_dict()
        save_checkpoint(self.out_dir / CHECKPOINT_DIR, len(history), payload)

    def _restore(
        self,
        model: nn.Module,
        teacher: nn.Module | None,
        opt: torch.optim.Optimizer,
        driver: LRDriver,
        resolved: ResolvedRecipe,
        state: _State,
    ) -> list[dict[str, float]]:
        """Load the newest checkpoint into the run's objects; returns the epochs done."""
        from prunekit.train.checkpoint import latest_checkpoint, load_checkpoint
        from prunekit.train.seed import set_rng_state

        assert self.out_dir is not None
        folder = self.out_dir / CHECKPOINT_DIR
        if latest_checkpoint(folder) is None:
            return []
        saved = load_checkpoint(folder)
        if saved.get("recipe_sha256") != _fingerprint(resolved):
            raise CheckpointError(
                f"{folder} was written by a different recipe or run length; delete it (or run "
                "without --resume) to start over"
            )
        history: list[dict[str, float]] = list(saved["history"])
        model.load_state_dict(saved["model"])
        if teacher is not None and "teacher" in saved:
            teacher.load_state_dict(saved["teacher"])
        # The LR schedulers are replayed (they are pure functions of their step calls), then
        # the optimizer state, which also holds the current learning rate, is loaded on top.
        driver.replay([int(row["epoch"]) for row in history])
        opt.load_state_dict(saved["optimizer"])
        state.masks.update({k: v.to(self.device) for k, v in saved["masks"].items()})
        state.surgery_tensors.update(saved["surgery_tensors"])
        set_rng_state(saved["rng"])
        return history

    def _dense_teacher(self) -> bool:
        kd = self.recipe.distillation
        return kd is not None and kd.teacher == "dense"

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
        from prunekit.models import build_model

        return build_model(section.spec, **section.kwargs)

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

    # -- one epoch ------------------------------------------------------------------------------

    def _train_epoch(
        self,
        model: nn.Module,
        batches: Batches,
        opt: torch.optim.Optimizer,
        driver: LRDriver,
        regularizers: list[str],
        resolved: ResolvedRecipe,
        teacher: nn.Module | None,
        state: _State,
    ) -> float:
        """One pass over the data; returns the mean loss."""
        training, kd = self.recipe.training, self.recipe.distillation
        params = dict(model.named_parameters())
        use_bf16 = training.bf16 and self.device.type == "cuda"
        model.train()
        total, count = 0.0, 0
        for x, y in batches:
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_bf16):
                logits = model(x)
                if teacher is not None and kd is not None:
                    with torch.no_grad():
                        t_logits = teacher(x)
                    loss = ops.distillation_loss(
                        logits.float(),
                        t_logits.float(),
                        y,
                        kd.temperature,
                        kd.alpha,
                        training.label_smoothing,
                    )
                else:
                    loss = F.cross_entropy(
                        logits.float(), y, label_smoothing=training.label_smoothing
                    )
            loss = loss + self._penalty(params, regularizers, resolved)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            driver.batch_end()
            state.apply(params)
            total, count = total + float(loss.detach()) * len(y), count + len(y)
        return total / max(count, 1)

    def _penalty(
        self, params: dict[str, nn.Parameter], active: list[str], resolved: ResolvedRecipe
    ) -> Tensor:
        total = torch.zeros((), device=self.device)
        for name in active:
            strengths = resolved.strengths[name]
            tensors = {p: params[p] for p in strengths}
            reg = self.recipe.regularizers[name]
            if isinstance(reg, GroupLassoRegularizer):
                total = total + ops.group_lasso_penalty(tensors, strengths, reg.group)
            else:
                total = total + ops.l1_penalty(tensors, strengths)
        return total

    # -- pruning --------------------------------------------------------------------------------

    def _prune(
        self, model: nn.Module, action: PruneAction, resolved: ResolvedRecipe, state: _State
    ) -> None:
        """Apply one pruning event, updating ``state.masks``."""
        cfg = self.recipe.pruners[action.pruner]
        params = dict(model.named_parameters())
        names = resolved.targets[action.pruner]
        if isinstance(cfg, StructuredPruner):
            self._prune_structured(model, cfg, action, names, state)
            state.apply(params)
            return
        # Rank on the currently masked weights, so earlier pruning is never undone.
        state.apply(params)
        tensors = {n: params[n] for n in names}
        if isinstance(cfg, SlimPruner):
            new = ops.slim_masks(tensors, float(action.sparsity or 0.0), cfg.floor)
            for n in names:  # γ and β together: the channel's BN output becomes exactly 0
                bias = n.rsplit(".", 1)[0] + ".bias"
                if bias in params:
                    new[bias] = new[n].clone()
            if cfg.surgery:
                state.surgery_tensors.update(new)
        elif isinstance(cfg, StdThresholdPruner):
            new = ops.std_masks(tensors, action.per_param)
        elif isinstance(cfg, MagnitudePruner) and cfg.thresholds is not None:
            new = ops.threshold_masks(tensors, action.per_param)
        else:
            assert isinstance(cfg, MagnitudePruner)
            new = ops.magnitude_masks(
                tensors, action.sparsity, action.per_param or None, cfg.global_ranking
            )
        for n, mask in new.items():
            old = state.masks.get(n)
            state.masks[n] = mask if old is None else (mask & old.to(mask.device))
        state.apply(params)

    def _prune_structured(
        self,
        model: nn.Module,
        cfg: StructuredPruner,
        action: PruneAction,
        names: list[str],
        state: _State,
    ) -> None:
        """Soft structured pruning through the core engine; masks record what it zeroed.

        Ranking on the soft-pruned model means units zeroed earlier score lowest and stay
        pruned, so AGP levels only ever add units.
        """
        from prunekit import importance, plan, surgery, trace

        graph = trace(model, self._example_input())
        groups = _groups_for(graph, names, 0 if cfg.target == "filters" else 1)
        scores = importance.score(model, graph, cfg.criterion, batches=self._calibration)
        scores = {gid: s for gid, s in scores.items() if gid in groups}
        pruning_plan = plan.make_plan(
            graph,
            scores,
            ratio=float(action.sparsity or 0.0),
            global_ranking=cfg.global_ranking,
            floor=cfg.floor,
            round_to=cfg.round_to,
        )
        surgery.apply_plan(model, pruning_plan, soft=True)
        params = dict(model.named_parameters())
        for name, mask in plan_masks(pruning_plan, params).items():
            old = state.masks.get(name)
            state.masks[name] = mask if old is None else (old & mask)
            if cfg.surgery:
                state.surgery_tensors.add(name)

    def _example_input(self) -> Tensor:
        section = self.recipe.model
        shape = section.input_shape if section and section.input_shape else [1, 3, 224, 224]
        return torch.zeros(*shape, device=self.device)

    # -- end of run -----------------------------------------------------------------------------

    def _finalize(self, model: nn.Module, state: _State) -> nn.Module:
        """Physically remove the units that ``surgery: true`` pruners zeroed (one plan)."""
        if not state.surgery_tensors:
            return model
        from prunekit import plan, surgery, trace

        graph = trace(model, self._example_input())
        keep = surgery_keep_sets(graph, state.masks, state.surgery_tensors)
        if keep:
            surgery.apply_plan(model, plan.plan_from_keep(graph, keep, {"source": "recipe"}))
        return model

    def _save(
        self, model: nn.Module, resolved: ResolvedRecipe, history: list[dict[str, float]]
    ) -> None:
        """Write ``model/`` (``prunekit.io``), ``history.json`` and ``resolved.json``."""
        if self.out_dir is None:
            return
        from prunekit import io

        section = self.recipe.model
        if section is None:
            raise ConfigError("saving needs the recipe's 'model' section (the base model spec)")
        if section.checkpoint is not None:
            base = io.read_spec(section.checkpoint)
            spec = {"model": base["model"], "kwargs": base.get("kwargs", {})}
        else:
            spec = {"model": section.spec, "kwargs": section.kwargs}
        io.save(model, self.out_dir / "model", spec)
        atomic_write_text(self.out_dir / "history.json", json.dumps(history, indent=2))
        resolved.save_json(self.out_dir / "resolved.json")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _fingerprint(resolved: ResolvedRecipe) -> str:
    """Identity of a run's plan: a checkpoint only resumes the run it was written by."""
    return hashlib.sha256(resolved.to_json().encode()).hexdigest()


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    t = recipe.training
    params = [p for p in model.parameters() if p.requires_grad]
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    return torch.optim.SGD(
        params, lr=t.lr, momentum=t.momentum, nesterov=t.nesterov, weight_decay=t.weight_decay
    )


def _sparsity(model: nn.Module, state: _State) -> float:
    """Fraction of zeros over the masked parameters (0 when nothing is pruned yet)."""
    if not state.masks:
        return 0.0
    pruned = sum(int((~m).sum()) for m in state.masks.values())
    return pruned / sum(m.numel() for m in state.masks.values())


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


def plan_masks(pruning_plan: Any, params: dict[str, nn.Parameter]) -> dict[str, Tensor]:
    """Keep masks of the parameters a core-engine plan slices (``plan.tensors``: kept positions
    per dim). Buffers (BN running stats) are left out: they are not trained."""
    masks: dict[str, Tensor] = {}
    for name, dims in pruning_plan.tensors.items():
        if name not in params:
            continue
        p = params[name]
        mask = torch.ones(p.shape, dtype=torch.bool, device=p.device)
        for dim, kept in dims.items():
            drop = torch.ones(p.shape[dim], dtype=torch.bool, device=p.device)
            drop[torch.as_tensor(kept, dtype=torch.long, device=p.device)] = False
            shape = [1] * p.dim()
            shape[dim] = -1
            mask &= ~drop.view(shape)
        masks[name] = mask
    return masks


def _groups_for(graph: Any, names: list[str], dim: int) -> set[str]:
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
