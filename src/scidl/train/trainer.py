"""The training loop: one readable path from a single CPU core to many GPUs.

The trainer holds a :class:`~scidl.parallel.plan.ParallelPlan` (data parallel, or
pipeline stages x replicas) and never branches on the layout. Per optimizer step: the
plan's forward/backward (gradients reduced over the replicas by the communication
strategy) → NaN/Inf check that all ranks answer alike (``scidl.train.step_stats``) →
optional clipping (the plan's global norm) → optimizer step → LR schedule → communication
accounting → metrics (loss averaged over ranks when a row is logged), evaluation (on the
plan's evaluation model), checkpoint, callbacks. Everything runs inside a process
group (a one-member group for a single process), so the code path is the same at any scale.
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from scidl.comm import build_strategy
from scidl.comm.sparse_grads import densify_grads, optimizer_takes_sparse, sparse_modules
from scidl.config import ConfigError, RunConfig
from scidl.data.loading import ThreadPrefetcher
from scidl.data.sampler import build_sampler
from scidl.data.staging import loader_options, stage_for_rank
from scidl.optim import build_optimizer, build_scheduler
from scidl.optim.schedules import lr_factor_fn
from scidl.parallel.plan import build_plan, per_replica_batch
from scidl.runtime.dist import DistContext
from scidl.runtime.seed import rng_state, set_rng_state
from scidl.train import checkpoint as ckpt
from scidl.train.best import BestTracker
from scidl.train.callbacks import OnStepEnd, OnTrainEnd, TrainerCallback
from scidl.train.loggers import build_loggers
from scidl.train.logging import MetricsLogger, truncate_metrics
from scidl.train.progress import Progress, progress_fields
from scidl.train.schedule_phases import PhasePlan, batch_caster, needs_closure, use_fp64
from scidl.train.skips import TrainingDiverged, check_skipped
from scidl.train.step_stats import GradCheck, PendingLosses, step_schedule
from scidl.workloads.base import Task

CKPT_FILES = ckpt.TRAINER_FILES  # what a trainer checkpoint must hold


def to_device(batch: Any, device: torch.device) -> Any:
    """Move tensors (possibly nested in tuples/lists/dicts) to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


class WorldSizeMismatch(ConfigError):
    """A checkpoint written by another number of processes (a user error, not a fallback)."""


class Trainer:
    """Trains ``task`` under ``cfg`` in the process described by ``dctx``.

    Args:
        cfg: the resolved run config.
        task: what the workload built (model, data, loss, evaluate).
        dctx: this process's place in the job (from :func:`distributed_context`).
        run_dir: the run folder (shared by all ranks; rank 0 writes it).
        callbacks: objects with ``on_step_end(trainer, row)`` and/or
            ``on_train_end(trainer)`` (:mod:`scidl.train.callbacks`), called on every rank
            (``row["loss"]`` is None until the row is logged: every ``train.log_every`` steps).
    """

    def __init__(
        self,
        cfg: RunConfig,
        task: Task,
        dctx: DistContext,
        run_dir: Path,
        callbacks: Sequence[TrainerCallback] = (),
    ) -> None:
        self.cfg, self.task, self.dctx, self.run_dir = cfg, task, dctx, run_dir
        self.callbacks = list(callbacks)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.device = dctx.device
        self.strategy = build_strategy(cfg.comm)
        use_fp64(cfg, task)  # train.precision=fp64: before the plan wraps the model
        self._cast = batch_caster(cfg)
        self.phases = PhasePlan(cfg)  # train.phases: the optimizer of each stretch of steps
        # The layout: the wrapped model, forward/backward, clipping, evaluation model,
        # checkpoint split and data-parallel size all come from the plan.
        self.plan = build_plan(cfg, task, self.device, dctx.world_size, self.strategy)
        self.model = self.plan.model  # this rank's module: the whole model or its stage
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.strategy.use_optimizer(self.optimizer)
        self._needs_closure = needs_closure(self.optimizer)
        # Sparse gradients left sparse by the strategy (``dense``: native sparse allreduce)
        # are densified after the reduction unless the optimizer applies them as they are.
        self._densify = [] if optimizer_takes_sparse(self.optimizer, cfg.train.clip_grad_norm) \
            else [m.weight for m in sparse_modules(self.model)]
        self._dense_bufs: dict[int, torch.Tensor] = {}
        self.batch_size = per_replica_batch(cfg, self.plan.dp_size)
        self.sampler = build_sampler(
            task.train_data, self.plan.dp_size, self.plan.dp_rank, shuffle=not task.full_batch,
            seed=cfg.train.seed, drop_last=cfg.train.drop_last and not task.full_batch,
            shard_by=cfg.data.shard_by,
        )
        self.train_data = stage_for_rank(task.train_data, self.sampler, cfg.data.stage_dir)
        self._persistent_loader: DataLoader | None = None
        if task.full_batch:
            self.batch_size = max(self.sampler.num_samples, 1)
        self.steps_per_epoch = self._steps_per_epoch()
        self.total_steps = self._total_steps()
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, self.total_steps, self.global_batch)
        self.schedule_total = self.total_steps  # the steps the LR schedule spans
        self.phases.enter(self, 0, force=True)  # with phases: the first one's optimizer
        if cfg.train.early_stop_patience is not None and task.val_data is None \
                and not task.extras.get("eval_without_data"):
            raise ConfigError("train.early_stop_patience needs evaluations, but this workload "
                              "has no validation data")
        self.best = BestTracker(task.headline, task.higher_is_better,
                                cfg.train.early_stop_patience, cfg.train.early_stop_min_delta)
        self.stop_reason: str | None = None  # set when early stopping ends the run
        self._evaluated: torch.nn.Module | None = None  # the model of the last evaluation (rank 0)
        self._warned_no_headline = False
        self.step = 0
        self.epoch = 0
        self.micro_in_epoch = 0  # micro-batches consumed in the current epoch
        self.last_eval: dict[str, float] = {}
        self.history: list[dict[str, Any]] = []
        self.step_times: list[float] = []
        self.skipped_steps = 0
        self._logger: MetricsLogger | None = None
        self._last_ckpt_step = 0
        self._last_eval_step = 0
        self._quiet_until = 0  # steps before it do nothing after the step but keep the row
        self._losses = PendingLosses(self.plan.dp_size)  # rank-mean losses, reduced when logged
        self._due_rows: list[dict[str, Any]] = []  # rows to log once their loss arrives
        self._grad_check = getattr(self.plan, "grad_check", None) or GradCheck(self.model.parameters())
        self._ckpt_format = ckpt.resolve_format(cfg.checkpoint.format, cfg.parallel.shard)
        self._pending_save: ckpt.PendingSave | None = None  # an async checkpoint being written
        self._async_group: Any = None  # DCP's own process group for background saves
        self._cuda = self.device.type == "cuda"
        self._samples_per_step = self.global_batch  # fixed for the run (the rows' throughput)

    @property
    def global_batch(self) -> int:
        """Samples per optimizer step over the whole job.

        per-replica batch x ``grad_accum`` x data-parallel replicas. With pipeline stages
        the replicas are world / stages: the stages of one pipeline share its samples.
        """
        return self.batch_size * self.cfg.train.grad_accum * self.plan.dp_size

    # ------------------------------------------------------------------ budget

    def _steps_per_epoch(self) -> int:
        n = self.sampler.num_samples
        if self.task.full_batch:
            micro = 1
        elif self.sampler.drop_last or self.cfg.train.drop_last:
            micro = n // self.batch_size
        else:
            micro = math.ceil(n / self.batch_size)
        steps = micro // self.cfg.train.grad_accum
        if steps < 1:
            raise ConfigError(
                f"an epoch has {n} samples per rank: fewer than one optimizer step of "
                f"batch_size={self.batch_size} x grad_accum={self.cfg.train.grad_accum}; "
                "lower train.batch_size or use fewer processes"
            )
        return steps

    def _total_steps(self) -> int:
        """The phases' steps (capped by ``train.max_steps``), else ``train.max_steps`` if
        set, else ``train.epochs`` full epochs."""
        if self.phases.active:
            return self.phases.total_steps()
        if self.cfg.train.max_steps is not None:
            return self.cfg.train.max_steps
        return self.cfg.train.epochs * self.steps_per_epoch

    # ------------------------------------------------------------------ pieces

    def _loader(self) -> Iterable[Any]:
        """The epoch's loader. Its position is the sampler's (``set_start``), in the
        training process, so a resumed run reads the same samples with any number of
        workers; with ``train.persistent_workers`` one loader serves every epoch; with
        ``data.read_ahead=thread`` a thread of this process reads two batches ahead."""
        if self.cfg.data.read_ahead == "thread":
            return ThreadPrefetcher(self._data_loader(), depth=2)
        return self._data_loader()

    def _data_loader(self) -> DataLoader:
        if self._persistent_loader is not None:
            return self._persistent_loader
        loader = DataLoader(
            self.train_data, batch_size=self.batch_size, sampler=self.sampler,
            collate_fn=self.task.collate_fn, drop_last=self.sampler.drop_last,
            # Its own generator: creating an iterator must not draw from the global RNG,
            # or a resumed run's dropout stream would shift by one draw.
            generator=torch.Generator().manual_seed(self.cfg.train.seed),
            **loader_options(self.cfg.train, self.device),
        )
        if self.cfg.train.persistent_workers:
            self._persistent_loader = loader
        return loader

    def _agree_on_step(self, loss: torch.Tensor) -> tuple[bool, float]:
        """(skip, rank-mean loss) agreed with one small collective: the loss sum and a
        bad-step flag (MAX via SUM), where the reduced gradients may not carry every
        rank's NaN/Inf (``CommStrategy.nonfinite_agreed``, ``ParallelPlan.carries_nonfinite``)."""
        bad = self.cfg.train.skip_nonfinite and (
            self._grad_check.check() or not bool(torch.isfinite(loss))
        )
        flag = torch.stack([loss.detach().float(), torch.tensor(float(bad), device=self.device)])
        dist.all_reduce(flag)
        # pipelines: only last stages hold a loss
        return flag[1].item() > 0, flag[0].item() / self.plan.dp_size

    def _step(self, micro: list[Any]) -> dict[str, float]:
        t0 = time.perf_counter()
        optimizer, train = self.optimizer, self.cfg.train
        optimizer.zero_grad(set_to_none=True)
        closure = self.plan.closure(optimizer, micro) if self._needs_closure else None
        loss = self.plan.forward_backward(micro)
        if self._densify:
            densify_grads(self._densify, self._dense_bufs)
        loss_mean: float | None = None  # filled in when the row is logged (PendingLosses)
        if self.strategy.nonfinite_agreed and self.plan.carries_nonfinite:
            # every rank's reduced gradients carry any rank's NaN/Inf: no collective
            skipped = train.skip_nonfinite and self._grad_check.check()
        else:
            skipped, loss_mean = self._agree_on_step(loss)
        grad_norm = None
        if skipped:
            self._skip_step()
        else:
            if train.clip_grad_norm is not None:
                grad_norm = self.plan.clip_grad_norm(train.clip_grad_norm)
            if closure is not None:
                # torch annotates closures as returning float; LBFGS and ours take the loss tensor
                optimizer.step(closure)  # type: ignore[arg-type]
            else:
                optimizer.step()
        lr = optimizer.param_groups[0]["lr"]
        step_schedule(self.scheduler)
        comm = self.strategy.end_step()
        if self._cuda:
            torch.cuda.synchronize(self.device)
        dt = time.perf_counter() - t0
        self.step_times.append(dt)
        row: dict[str, Any] = {
            "step": self.step + 1, "epoch": self.epoch, "loss": loss_mean, "lr": lr,
            "step_time_s": dt, "samples_per_s": self._samples_per_step / dt if dt > 0 else 0.0,
            "skipped": int(skipped),
        }
        if loss_mean is None:
            self._losses.add(row, loss)
        if grad_norm is not None and not math.isnan(grad_norm):
            row["grad_norm"] = grad_norm
        for k, v in comm.items():
            row[_comm_column(k)] = v
        return row

    def _skip_step(self) -> None:
        """A non-finite step (all ranks alike): no update, the strategy forgets the step,
        and the run fails once too many steps were skipped."""
        self.skipped_steps += 1
        self.optimizer.zero_grad(set_to_none=True)
        self.strategy.on_skipped_step()  # no residual/warm start/lagged result survives
        failure = check_skipped(self.skipped_steps, self.step + 1, self.total_steps,
                                self.cfg.train.max_skipped_fraction)
        if failure:
            raise TrainingDiverged(failure)

    def evaluate(self) -> dict[str, float]:
        """Evaluate on rank 0 with the plain (whole) model; returns {} on other ranks.

        Call on all ranks: the plan may gather the model's weights to rank 0 first.
        """
        if self.task.val_data is None and not self.task.extras.get("eval_without_data"):
            return {}
        model = self.plan.eval_model()
        if model is None:  # only rank 0 evaluates
            return {}
        model.eval()
        grad = torch.enable_grad() if self.task.eval_needs_grad else torch.no_grad()
        with grad:
            out = {k: float(v) for k, v in self.task.evaluate(model, self.task.val_data).items()}
        model.train()
        self.last_eval = out
        self._evaluated = model
        return out

    def _track_best(self, ev: dict[str, float], may_stop: bool = True) -> None:
        """After an evaluation (all ranks): rank 0 updates the best value, publishes the
        evaluated model as the best checkpoint when it improved, and decides on early
        stopping; every rank learns the decision (and any write failure) by broadcast."""
        decision: list[Any] = [None, None]  # (stop reason, failure)
        value = ev.get(self.task.headline)
        if self.dctx.is_main and value is None and ev and not self._warned_no_headline:
            self._warned_no_headline = True
            warnings.warn(f"the evaluation has no {self.task.headline!r} (the workload's headline "
                          "metric): no best checkpoint is kept", stacklevel=2)
        if self.dctx.is_main and value is not None:
            new_best, stop = self.best.update(float(value), self.step)
            if new_best and self._evaluated is not None and self.cfg.checkpoint.best:
                state = {k: v.detach().cpu() for k, v in self._evaluated.state_dict().items()}
                try:
                    ckpt.save_best(self.ckpt_root, self.step, state, self.task.headline,
                                   float(value), self.task.higher_is_better)
                except Exception as e:  # reported on every rank, so none is left waiting
                    decision[1] = ckpt.write_failure(e, self.ckpt_root, self.step)
            if stop and may_stop:
                decision[0] = self.best.stop_message()
        if self.dctx.world_size > 1:
            dist.broadcast_object_list(decision, src=0)
        if decision[1] is not None:
            raise ckpt.CheckpointError(decision[1])
        if decision[0] is not None:
            self.stop_reason = decision[0]

    # ------------------------------------------------------------- checkpoints

    @property
    def ckpt_root(self) -> Path:
        return self.run_dir / "checkpoints"

    def save(self) -> None:
        """Write a checkpoint (call on all ranks): rank 0 writes the shared state, every
        rank its own part (RNG, strategy state, and its model/optimizer where the plan
        keeps them per rank). Nothing is exchanged but file names and hashes."""
        self.finish_save()
        dcp_part = None
        shared: dict[str, Any]
        own: dict[str, Any]
        if self._ckpt_format == "dcp":  # model and optimizer: each rank its shards, via DCP
            dcp_part = ckpt.dcp_state(self.model, self.optimizer)
            shared, own = {"model": None, "optimizer": None}, {}
        else:
            shared, own = self.plan.split_state(
                {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()})
        own = {"rng": _rng_for_save(), "strategy": _strategy_state(self.strategy), **own}
        shared = {
            **shared,
            "format": self._ckpt_format,
            "scheduler": self.scheduler.state_dict(),
            "progress": {"step": self.step, "epoch": self.epoch, "micro": self.micro_in_epoch,
                         "skipped": self.skipped_steps, "world_size": self.dctx.world_size,
                         "global_batch": self.global_batch, "phase": self.phases.index},
            "last_eval": self.last_eval,
            "best": self.best.state_dict(),
            "schedule_total": self.schedule_total,
        }
        background = dcp_part is not None and self.cfg.checkpoint.async_save
        if background and self._async_group is None:
            self._async_group = dist.new_group(backend="gloo")  # DCP's collectives off the training group
        out = ckpt.save_sharded(self.ckpt_root, self.step, shared, own, keep=self.cfg.checkpoint.keep,
                                dcp_state=dcp_part, async_group=self._async_group if background else None)
        if isinstance(out, ckpt.PendingSave):
            self._pending_save = out

    def finish_save(self) -> None:
        """Publish a checkpoint still being written in the background (all ranks)."""
        pending, self._pending_save = self._pending_save, None
        if pending is not None:
            pending.finish()

    def resume(self, allow_none: bool = False, extend: bool = False) -> int:
        """Continue from the newest checkpoint that verifies and loads; returns its step.

        A checkpoint that verifies but cannot be loaded (unreadable, wrong keys or shapes)
        is reported and the previous one is tried; all ranks agree on each decision.
        With no usable checkpoint this raises :class:`~scidl.train.checkpoint.CheckpointError`,
        or, with ``allow_none``, trains from step 0. Either way ``metrics.jsonl`` keeps only
        the rows up to the step resumed from, and unusable newer checkpoints are set aside.

        The LR schedule keeps the number of steps it was made for, unless ``extend``: then
        it spans this run's budget from here on (see :meth:`_fit_schedule`).
        """
        if extend and self.phases.active:
            raise ConfigError("--extend does not apply with train.phases: each phase's LR "
                              "schedule spans that phase's steps")
        candidates = ckpt.resume_plan(self.ckpt_root, allow_none, CKPT_FILES, warn=self.dctx.is_main)
        chosen: tuple[ckpt.Checkpoint, Any, Any] | None = None
        for good in candidates:
            try:
                loaded, reason = self._load_checked(good), None
            except WorldSizeMismatch:
                raise
            except Exception as e:  # torch.load errors, missing keys, shape mismatches
                loaded, reason = None, f"{type(e).__name__}: {e}".splitlines()[0]
            flag = torch.tensor([0.0 if reason is None else 1.0], device=self.device)
            dist.all_reduce(flag)  # every rank must be able to load it
            if flag.item() == 0:
                assert loaded is not None
                chosen = (good, *loaded)
                break
            if self.dctx.is_main:
                warnings.warn(f"checkpoint {good.path} verifies but cannot be loaded "
                              f"({reason or 'on another rank'}); trying the previous one", stacklevel=2)
        if chosen is None and candidates and not allow_none:
            raise ckpt.CheckpointError(
                f"no checkpoint in {self.ckpt_root} can be loaded; pass --restart-from-scratch "
                "to train from step 0")
        if chosen is not None:
            self._apply_checkpoint(*chosen)
            if not self.phases.active:  # with phases each schedule spans its phase
                self._fit_schedule(int(chosen[1].get("schedule_total") or self.total_steps), extend)
        if self.dctx.is_main:
            ckpt.set_aside_after(self.ckpt_root, self.step)
            truncate_metrics(self.run_dir / "metrics.jsonl", self.step)
        dist.barrier()
        return self.step

    def _load_checked(self, good: ckpt.Checkpoint) -> tuple[dict[str, Any], dict[str, Any]]:
        """This rank's part of ``good``, checked against the model before anything is applied.

        A checkpoint of another process count loads when its model and optimizer state
        reshard (``dcp`` or replicated, and no pipeline now); then this rank's own part
        (RNG, strategy state) is not carried over (see :meth:`_carried_part`).
        """
        state = good.load(ckpt.SHARED_FILE)
        prog = state["progress"]
        layout = ckpt.state_layout(state)
        if prog["world_size"] != self.dctx.world_size and (
                layout == "per_rank" or self.plan.dims.pp > 1):
            raise WorldSizeMismatch(
                f"checkpoint {good.path} was written by {prog['world_size']} processes; "
                f"resume with --nproc {prog['world_size']}"
            )
        mine = good.load(ckpt.rank_file(self.dctx.rank)) if prog["world_size"] == self.dctx.world_size \
            else self._carried_part(good, int(prog["world_size"]))
        if layout != "dcp":  # DCP's load checks names and shapes itself
            both = self.plan.pick_state(state, mine)
            _check_same_tensors(self.model.state_dict(), both["model"])
            opt = both["optimizer"]
            if not isinstance(opt, dict):
                raise KeyError("optimizer state missing")
            if "param_groups" in opt:  # torch optimizers (wrappers may keep their own layout)
                groups = [len(g["params"]) for g in opt["param_groups"]]
                if groups != [len(g["params"]) for g in self.optimizer.param_groups]:
                    raise ValueError(f"optimizer state has parameter groups of sizes {groups}")
        if not isinstance(state["scheduler"], dict) or not isinstance(mine["rng"], dict | None):
            raise KeyError("scheduler or RNG state missing")
        for key in ("step", "epoch", "micro", "skipped"):
            int(prog[key])
        return state, mine

    def _carried_part(self, good: ckpt.Checkpoint, written_by: int) -> dict[str, Any]:
        """This rank's own part when resuming on another process count: nothing (RNG
        streams continue from this run's seeds; the communication strategy starts afresh,
        with a warning on rank 0 when the checkpoint held its state, e.g. error feedback)."""
        if self.dctx.is_main:
            dropped = ckpt.strategy_state_in(good.load(ckpt.rank_file(0)))
            warnings.warn(
                f"checkpoint {good.path} was written by {written_by} processes, resuming on "
                f"{self.dctx.world_size}: model and optimizer state are resharded; per-rank RNG "
                "streams restart from the seed" + (f"; the communication strategy's state "
                f"({dropped}) is dropped" if dropped else ""), stacklevel=3)
        return {"rng": None, "strategy": None}

    def _apply_checkpoint(self, good: ckpt.Checkpoint, state: dict[str, Any], mine: dict[str, Any]) -> None:
        prog, layout = state["progress"], ckpt.state_layout(state)
        self.phases.enter(self, int(prog.get("phase", 0)))  # the optimizer the state is of
        if layout == "dcp":
            ckpt.load_dcp(good.path, self.model, self.optimizer)
        elif self._ckpt_format == "dcp" and self.cfg.parallel.shard != "none":
            ckpt.load_full(self.model, self.optimizer, state["model"], state["optimizer"])
        else:
            both = self.plan.pick_state(state, mine)
            self.model.load_state_dict(both["model"])
            self.optimizer.load_state_dict(both["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.epoch, self.micro_in_epoch = prog["step"], prog["epoch"], prog["micro"]
        if prog["world_size"] != self.dctx.world_size and prog.get("global_batch"):
            # the epoch's position in samples, in this run's micro-batches
            per_micro = prog["global_batch"] // self.cfg.train.grad_accum
            self.micro_in_epoch = prog["micro"] * per_micro // (self.batch_size * self.plan.dp_size)
        self.skipped_steps = prog["skipped"]
        self._last_ckpt_step = self._last_eval_step = self.step
        self.last_eval = state.get("last_eval", {})
        self.best.load_state_dict(state.get("best") or {})
        if mine["rng"] is not None:
            _rng_from_save(mine["rng"])
        if mine.get("strategy") is not None and hasattr(self.strategy, "load_state_dict"):
            self.strategy.load_state_dict(mine["strategy"])

    def _fit_schedule(self, planned: int, extend: bool) -> None:
        """After resuming a run whose schedule spans ``planned`` steps with a budget of
        ``total_steps``: with ``extend`` the schedule is that of a ``total_steps`` run from
        the current step on; otherwise it stays the ``planned`` one (past its end a
        decaying schedule stays at its floor), with a warning when the budget grew."""
        if planned == self.total_steps:
            return
        if extend:
            fn = lr_factor_fn(self.cfg.optim, self.total_steps, self.global_batch)
            self.scheduler.lr_lambdas = [fn] * len(self.optimizer.param_groups)
            lrs = [base * fn(self.scheduler.last_epoch) for base in self.scheduler.base_lrs]
            for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
                group["lr"] = lr
            self.scheduler._last_lr = lrs
            self.schedule_total = self.total_steps
            return
        fn = lr_factor_fn(self.cfg.optim, planned, self.global_batch)
        self.scheduler.lr_lambdas = [fn] * len(self.optimizer.param_groups)
        self.schedule_total = planned
        if self.total_steps > planned and self.cfg.optim.schedule != "constant" and self.dctx.is_main:
            warnings.warn(
                f"the {self.cfg.optim.schedule} LR schedule spans the run's first {planned} steps "
                f"and is not stretched to the new budget of {self.total_steps}; pass --extend "
                "to stretch it", stacklevel=3)

    def _epoch_end_due(self, end_of_epoch: bool, last: int) -> bool:
        """At an epoch end, but no more than ~20 times a run (full-batch: 1 step = 1 epoch)."""
        return end_of_epoch and self.step - last >= max(1, self.total_steps // 20)

    def _should_checkpoint(self, end_of_epoch: bool) -> bool:
        every = self.cfg.checkpoint.every_steps
        if every > 0:
            return self.step % every == 0
        return self._epoch_end_due(end_of_epoch, self._last_ckpt_step)

    def _should_eval(self, end_of_epoch: bool) -> bool:
        every = self.cfg.train.eval_every
        if every > 0:
            return self.step % every == 0
        return self._epoch_end_due(end_of_epoch, self._last_eval_step)

    # -------------------------------------------------------------------- loop

    def _micro_batches(self) -> Iterator[list[Any]]:
        """Groups of ``grad_accum`` micro-batches for the rest of the current epoch."""
        self.sampler.set_epoch(self.epoch)
        self.sampler.set_start(self.micro_in_epoch * self.batch_size)
        group: list[Any] = []
        for batch in self._loader():
            group.append(self._cast(to_device(batch, self.device)))
            if len(group) == self.cfg.train.grad_accum:
                yield group
                group = []

    def fit(self) -> dict[str, Any]:
        """Train to the budget; returns the summary (also written to summary.json)."""
        t_start = time.perf_counter()
        if self.dctx.is_main:
            self._logger = MetricsLogger(self.run_dir, loggers=build_loggers(self.cfg, self.run_dir))
        progress = Progress(self.total_steps, self.cfg.log.progress and self.dctx.is_main,
                            description=self.cfg.workload_label(), every_s=self.cfg.log.every_s,
                            samples_per_step=self.global_batch)
        progress.update(self.step)
        self.plan.train()
        finished = False
        try:
            while self.step < self.total_steps and self.stop_reason is None:
                for micro in self._micro_batches():
                    self.train_step(micro, progress)
                    if self._epoch_done() or self.step >= self.total_steps or self.stop_reason:
                        break
                if self._epoch_done():
                    self.epoch += 1
                    self.micro_in_epoch = 0
            self._flush_losses()
            if self.stop_reason is None:  # early stopping has just evaluated this model
                final_eval = self.evaluate()
                self._track_best(final_eval, may_stop=False)
                if self.dctx.is_main and final_eval and self._logger:
                    self._logger.log({"step": self.step, "epoch": self.epoch,
                                      **{f"eval/{k}": v for k, v in final_eval.items()}})
            if self.cfg.checkpoint.final:
                self.save()
            self.finish_save()
            for cb in self.callbacks:
                if isinstance(cb, OnTrainEnd):
                    cb.on_train_end(self)
            finished = True
        except TrainingDiverged:  # every rank stops at the same step: log what led there
            self._flush_losses()
            raise
        finally:
            progress.close()
            if self._logger and not finished:
                self._logger.close(None)
        if self.stop_reason is not None and self.dctx.is_main:
            print(f"step {self.step}/{self.total_steps}: {self.stop_reason}", flush=True)
        summary = self._summary(time.perf_counter() - t_start)
        if self._logger:
            self._logger.close(summary)
        return summary

    def train_step(self, micro: list[Any], progress: Progress | None = None) -> dict[str, Any]:
        """One optimizer step on ``micro`` (``grad_accum`` micro-batches already on the
        device), then what :meth:`fit` does after each step (metrics row, evaluation,
        checkpoint, callbacks). Call on all ranks; returns the step's row."""
        self.phases.enter_for_step(self)  # a new phase starts: its optimizer and schedule
        row = self._step(micro)
        if self.phases.active:
            row.update(self.phases.row_fields())
        self.step += 1
        self.micro_in_epoch += len(micro)
        self._after_step(row, self._epoch_done(), progress)
        return row

    def _epoch_done(self) -> bool:
        return self.micro_in_epoch >= self.steps_per_epoch * self.cfg.train.grad_accum

    def _after_step(self, row: dict[str, Any], end_epoch: bool, progress: Progress | None) -> None:
        self.history.append(row)
        if self.step < self._quiet_until and not end_epoch and not self.callbacks:
            rows = self._due_rows
            if not rows or rows[0]["loss"] is None:  # nothing to log, evaluate or save
                if progress is not None:
                    progress.update(self.step, None, lr=row.get("lr"))
                return
        self._after_step_work(row, end_epoch, progress)
        self._quiet_until = self._next_event(self.step)

    def _next_event(self, step: int) -> int:
        """The first step after ``step`` at which :meth:`_after_step` may do more than keep
        the row (a logged row, a step-count evaluation or checkpoint, a phase's end, the
        last step); epoch ends, callbacks and arrived losses are checked at every step."""
        train = self.cfg.train
        out = self.total_steps
        for every in (train.log_every, train.eval_every, self.cfg.checkpoint.every_steps):
            if every > 0:
                out = min(out, (step // every + 1) * every)
        if self.phases.active:
            out = min([out, *(s for s in self.phases.starts[1:] if s > step)])
        return out

    def _after_step_work(self, row: dict[str, Any], end_epoch: bool, progress: Progress | None) -> None:
        eval_due = self._should_eval(end_epoch) or self.phases.ends_at(self.step)
        if eval_due:
            self._last_eval_step = self.step
            ev = self.evaluate()
            row.update({f"eval/{k}": v for k, v in ev.items()})
            self._track_best(ev)
        due = self.step % self.cfg.train.log_every == 0 or eval_due or self.step == self.total_steps
        if due:
            self._due_rows.append(row)
        ends = self.step in (1, self.total_steps)  # step 1: the first progress line
        collected = ends or due and self._losses.due(self.step)  # the same steps on every rank
        if collected:
            # the loss arrives by a later launch (at once at the first and the last step)
            self._losses.launch(self.step)
            self._losses.collect(wait=ends)
        # rows get their loss by a collect, or carry it from the step (agreed steps)
        rows = self._due_rows
        shown = self._log_ready() if rows and (collected or rows[0]["loss"] is not None) else None
        if shown is None and self.step == 1 and row["loss"] is not None:
            shown = progress_fields(row, self.task.headline)
        for cb in self.callbacks:
            if isinstance(cb, OnStepEnd):
                cb.on_step_end(self, row)
        if progress is not None:
            progress.update(self.step, shown, lr=row.get("lr"))
        if self._should_checkpoint(end_epoch) and self.step < self.total_steps \
                and self.stop_reason is None:  # the final checkpoint follows
            self._last_ckpt_step = self.step
            self._flush_losses()  # every row up to the checkpoint is written before it
            self.save()

    def _log_ready(self) -> dict[str, float] | None:
        """Log the due rows whose loss has arrived, in step order; returns what the
        progress display shows for the newest (None when none arrived)."""
        shown = None
        while self._due_rows and self._due_rows[0]["loss"] is not None:
            row = self._due_rows.pop(0)
            if self._logger:
                self._logger.log(row)
            shown = progress_fields(row, self.task.headline)
        return shown

    def _flush_losses(self) -> None:
        """Wait for every pending loss and log the rows (all ranks, at the same point)."""
        self._losses.resolve()
        self._log_ready()

    def _summary(self, wall: float) -> dict[str, Any]:
        timing = step_timing(self.step_times, self.steps_per_epoch, wall)
        mean = timing["step_time_s"]
        return {
            "workload": self.cfg.workload_label(),
            "headline": self.task.headline,
            "higher_is_better": self.task.higher_is_better,
            "headline_value": self.last_eval.get(self.task.headline),
            "final_eval": self.last_eval,
            "final": {"metric": self.task.headline, "value": self.last_eval.get(self.task.headline),
                      "step": self.step},
            "best": self._best_summary(),
            "stopped_early": self.stop_reason is not None,
            "stopped_at_step": self.step if self.stop_reason is not None else None,
            "stop_reason": self.stop_reason,
            "final_loss": self.history[-1]["loss"] if self.history else None,
            "steps": self.step,
            "epochs": self.epoch,
            "skipped_steps": self.skipped_steps,
            "world_size": self.dctx.world_size,
            "backend": self.dctx.backend,
            "device": str(self.device),
            "launcher": self.dctx.launcher,
            "batch_size_per_rank": self.batch_size,
            "global_batch_size": self.global_batch,
            "data_parallel_size": self.plan.dp_size,
            "steps_per_epoch": self.steps_per_epoch,
            "wall_s": wall,
            **timing,
            "samples_per_s": self.global_batch / mean if mean and mean > 0 else None,
            "comm": self.strategy.report(),
            "phases": self.phases.summary(self.history, self.last_eval),
            **self.plan.report(mean),
        }

    def _best_summary(self) -> dict[str, Any] | None:
        """The best evaluation and its checkpoint folder (None before any evaluation)."""
        if self.best.value is None or self.best.step is None:
            return None
        return {"metric": self.best.metric, "value": self.best.value, "step": self.best.step,
                "higher_is_better": self.best.higher_is_better,
                "checkpoint": str(ckpt.best_dir(self.ckpt_root, self.best.step))
                if self.cfg.checkpoint.best else None}


@functools.cache
def _comm_column(key: str) -> str:
    """The metrics column of a strategy's per-step counter: ``comm_<key>`` (``comm_s`` stays)."""
    return key if key.startswith("comm") else f"comm_{key}"


def step_timing(step_times: Sequence[float], steps_per_epoch: int, wall: float) -> dict[str, float]:
    """Step-time statistics of one ``fit`` call (the first step, which warms caches, left out).

    ``step_time_s`` is the mean, so periodic work (an extrapolation every k steps, a
    compression warm start) counts in proportion to how often it runs; the median, which
    hides such work, is kept as ``step_time_median_s``. ``epoch_time_s`` is the time the
    optimizer steps of one epoch take (mean step x steps per epoch); ``wall_s_per_epoch``
    divides the whole wall time (evaluation, checkpoints, start-up included) by the epochs
    this call trained.
    """
    nan = float("nan")
    times = list(step_times[1:] or step_times)
    if not times:
        return {"step_time_s": nan, "step_time_median_s": nan, "epoch_time_s": nan,
                "wall_s_per_epoch": nan}
    ordered = sorted(times)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    mean = math.fsum(times) / len(times)
    return {
        "step_time_s": mean,
        "step_time_median_s": median,
        "epoch_time_s": mean * steps_per_epoch,
        "wall_s_per_epoch": wall * steps_per_epoch / len(step_times),
    }


def _rng_for_save() -> dict[str, Any]:
    """RNG state in types ``torch.load(weights_only=True)`` accepts."""
    s = rng_state()
    np_state = s["numpy"]
    s["numpy"] = {"kind": np_state[0], "keys": torch.from_numpy(np_state[1].copy()),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached": float(np_state[4])}
    s["python"] = list(s["python"][1]) and [s["python"][0], list(s["python"][1]), s["python"][2]]
    return s


def _rng_from_save(s: dict[str, Any]) -> None:
    n = s["numpy"]
    py = s["python"]
    set_rng_state({
        **s,
        "numpy": (n["kind"], n["keys"].numpy(), n["pos"], n["has_gauss"], n["cached"]),
        "python": (py[0], tuple(py[1]), py[2]),
    })


def _check_same_tensors(expected: dict[str, Any], got: Any) -> None:
    """Raise KeyError/ValueError unless ``got`` has exactly ``expected``'s keys and shapes."""
    if not isinstance(got, dict):
        raise KeyError("no model state")
    missing, unexpected = expected.keys() - got.keys(), got.keys() - expected.keys()
    if missing or unexpected:
        raise KeyError(f"model keys differ (missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
    for k, v in expected.items():
        if tuple(got[k].shape) != tuple(v.shape):
            raise ValueError(f"{k} has shape {tuple(got[k].shape)}, the model has {tuple(v.shape)}")


def _strategy_state(strategy: Any) -> Any:
    fn = getattr(strategy, "state_dict", None)
    return fn() if callable(fn) else None

