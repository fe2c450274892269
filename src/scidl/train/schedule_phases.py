"""Optimizer phases (``train.phases``) and float64 training (``train.precision=fp64``).

A run with phases trains with each phase's optimizer for its number of steps, in order
(e.g. Adam 1000 steps, then full-batch L-BFGS 50 steps of up to ``lbfgs_max_iter``
iterations each). At the first step of a phase the trainer gets a fresh optimizer over the
same parameters and a fresh LR schedule spanning that phase's steps
(:meth:`PhasePlan.enter`). A checkpoint records the phase index with the optimizer and
schedule state of that phase, so a run resumed mid-phase continues exactly where it left
off. L-BFGS (``optim=lbfgs``) is a closure optimizer: the trainer passes the plan's closure,
whose loss is averaged over the data-parallel ranks and whose gradients DDP averages, so
every rank takes the same line-search decisions and keeps the same weights.

A workload whose loss changes between calls (adaptive collocation points) may put a
callable ``freeze_objective()`` in ``Task.extras``: it is called when a closure phase starts,
because a line search needs one fixed objective.

Without ``train.phases`` the run has one phase: ``optim.name`` for the whole budget, and
nothing here changes what the trainer does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from scidl.comm.sparse_grads import optimizer_takes_sparse, sparse_modules
from scidl.config import RunConfig
from scidl.optim import build_optimizer, build_scheduler
from scidl.optim.config import OptimConfig

if TYPE_CHECKING:
    from scidl.train.trainer import Trainer
    from scidl.workloads.base import Task

__all__ = ["PhasePlan", "cast_batch", "needs_closure", "use_fp64"]


def needs_closure(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step`` must get a closure (L-BFGS, safeguarded Anderson)."""
    return bool(getattr(optimizer, "requires_closure", False)) or isinstance(
        optimizer, torch.optim.LBFGS)


class PhasePlan:
    """Where each phase starts and ends, and the switch between them.

    Args:
        cfg: the run config (``train.phases`` and the ``optim`` section).
    """

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.phases = list(cfg.train.phases)
        self.starts: list[int] = []
        total = 0
        for p in self.phases:
            self.starts.append(total)
            total += p.steps
        self.planned = total  # steps of all phases together
        self.index = 0  # the phase whose optimizer the trainer holds

    @property
    def active(self) -> bool:
        """Whether the run has phases (otherwise one phase of ``optim.name``)."""
        return bool(self.phases)

    def total_steps(self) -> int:
        """The run's budget: the phases' steps, capped by ``train.max_steps``."""
        cap = self.cfg.train.max_steps
        return self.planned if cap is None else min(cap, self.planned)

    def index_at(self, step: int) -> int:
        """The phase of the optimizer step that follows ``step`` completed steps."""
        i = 0
        while i + 1 < len(self.starts) and step >= self.starts[i + 1]:
            i += 1
        return i

    def ends_at(self, step: int) -> bool:
        """Whether ``step`` completed steps end a phase (not the last one)."""
        return self.active and step in self.starts[1:]

    def optim_config(self, index: int) -> OptimConfig:
        return self.phases[index].optim_config(self.cfg.optim)

    def build(self, index: int, model: nn.Module, global_batch: int
              ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
        """A fresh optimizer over ``model`` and its schedule over phase ``index``'s steps."""
        ocfg = self.optim_config(index)
        optimizer = build_optimizer(model, ocfg)
        return optimizer, build_scheduler(optimizer, ocfg, self.phases[index].steps, global_batch)

    def enter(self, trainer: Trainer, index: int, force: bool = False) -> None:
        """Give ``trainer`` phase ``index``'s optimizer and schedule (no-op if it has them,
        unless ``force``, or the run has no phases). Call on all ranks at the same step."""
        if not self.active or (index == self.index and not force):
            return
        self.index = index
        trainer.optimizer, trainer.scheduler = self.build(index, trainer.model, trainer.global_batch)
        trainer.schedule_total = self.phases[index].steps
        trainer._needs_closure = needs_closure(trainer.optimizer)
        trainer._densify = [] if optimizer_takes_sparse(
            trainer.optimizer, self.cfg.train.clip_grad_norm) \
            else [m.weight for m in sparse_modules(trainer.model)]
        if trainer._needs_closure:
            freeze = trainer.task.extras.get("freeze_objective")
            if callable(freeze):
                freeze()

    def enter_for_step(self, trainer: Trainer) -> None:
        """Switch phases if ``trainer.step`` completed steps end the current one."""
        if self.active:
            self.enter(trainer, self.index_at(trainer.step))

    def row_fields(self) -> dict[str, Any]:
        """The ``phase`` column of a metrics row (nothing without phases)."""
        return {"phase": self.index} if self.active else {}

    def summary(self, history: Sequence[dict[str, Any]], final_eval: dict[str, float] | None = None
                ) -> list[dict[str, Any]] | None:
        """Per phase: optimizer, planned and trained steps, step time, last logged loss
        and the last evaluation within the phase (``final_eval``, the evaluation at the end
        of training, for the phase training ended in)."""
        if not self.active:
            return None
        last = history[-1].get("phase") if history else None
        out = []
        for i, p in enumerate(self.phases):
            rows = [r for r in history if r.get("phase") == i]
            times = [r["step_time_s"] for r in rows]
            losses = [r["loss"] for r in rows if r.get("loss") is not None]
            evals = [r for r in rows if any(k.startswith("eval/") for k in r)]
            out.append({
                "phase": i, "optim": p.optim, "steps": p.steps, "trained_steps": len(rows),
                "first_step": self.starts[i] + 1, "last_step": self.starts[i] + p.steps,
                "train_time_s": math.fsum(times),
                "final_loss": losses[-1] if losses else None,
                "final_eval": dict(final_eval) if final_eval and i == last else
                {k[5:]: v for k, v in evals[-1].items() if k.startswith("eval/")} if evals else {},
            })
        return out


def use_fp64(cfg: RunConfig, task: Task) -> None:
    """``train.precision=fp64``: the model in float64 (before it is wrapped), and its
    floating inputs cast to float64 by a forward pre-hook (evaluation grids, points a loss
    samples itself); the trainer casts the batches (:func:`cast_batch`)."""
    if cfg.train.precision != "fp64":
        return
    task.model.double()
    task.model.register_forward_pre_hook(_inputs_to_fp64)


def _inputs_to_fp64(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(cast_batch(a) for a in args)


def cast_batch(batch: Any) -> Any:
    """Floating tensors (possibly nested in tuples/lists/dicts) as float64."""
    if isinstance(batch, torch.Tensor):
        return batch.double() if batch.is_floating_point() else batch
    if isinstance(batch, (list, tuple)):
        return type(batch)(cast_batch(b) for b in batch)
    if isinstance(batch, dict):
        return {k: cast_batch(v) for k, v in batch.items()}
    return batch


def batch_caster(cfg: RunConfig) -> Callable[[Any], Any]:
    """What the trainer applies to each batch: :func:`cast_batch` under fp64, else nothing."""
    return cast_batch if cfg.train.precision == "fp64" else (lambda b: b)
