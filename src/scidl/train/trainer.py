"""The training loop: one readable path from a single CPU core to many GPUs.

Per optimizer step: ``grad_accum`` micro-batches (forward/backward, DDP ``no_sync`` on all
but the last) → NaN/Inf check agreed by all ranks → optional clipping → optimizer step →
LR schedule → communication accounting → metrics, evaluation, checkpoint, callbacks.
Everything runs inside a process group (a one-member group for a single process), so the
code path is the same at any scale.
"""

from __future__ import annotations

import contextlib
import gc
import io
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from scidl.comm import build_strategy
from scidl.comm.sparse_grads import densify_grads, optimizer_takes_sparse, sparse_modules
from scidl.config import RunConfig
from scidl.data.sampler import ResumableDistributedSampler
from scidl.optim import build_optimizer, build_scheduler
from scidl.runtime.dist import DistContext
from scidl.runtime.seed import rng_state, set_rng_state
from scidl.train import checkpoint as ckpt
from scidl.train.logging import MetricsLogger, truncate_metrics
from scidl.train.progress import Progress, progress_fields
from scidl.train.skips import TrainingDiverged, check_skipped
from scidl.workloads.base import Task


def to_device(batch: Any, device: torch.device) -> Any:
    """Move tensors (possibly nested in tuples/lists/dicts) to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def resolve_batch_size(cfg: RunConfig, world: int) -> int:
    """Per-rank micro-batch size from ``train.batch_size`` or ``train.global_batch_size``."""
    t = cfg.train
    if t.global_batch_size is None:
        return t.batch_size
    per = t.global_batch_size // (world * t.grad_accum)
    if per * world * t.grad_accum != t.global_batch_size or per < 1:
        raise ValueError(
            f"train.global_batch_size={t.global_batch_size} is not divisible by "
            f"world_size ({world}) x train.grad_accum ({t.grad_accum})"
        )
    return per


class Trainer:
    """Trains ``task`` under ``cfg`` in the process described by ``dctx``.

    Args:
        cfg: the resolved run config.
        task: what the workload built (model, data, loss, evaluate).
        dctx: this process's place in the job (from :func:`distributed_context`).
        run_dir: the run folder (shared by all ranks; rank 0 writes it).
        callbacks: objects with optional ``on_step_end(trainer, row)`` and
            ``on_train_end(trainer)`` methods, called on every rank.
    """

    def __init__(
        self,
        cfg: RunConfig,
        task: Task,
        dctx: DistContext,
        run_dir: Path,
        callbacks: Sequence[Any] = (),
    ) -> None:
        self.cfg, self.task, self.dctx, self.run_dir = cfg, task, dctx, run_dir
        self.callbacks = list(callbacks)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.device = dctx.device
        self.strategy = build_strategy(cfg.comm)
        ddp_kw: dict[str, Any] = dict(self.strategy.ddp_kwargs())
        if self.device.type == "cuda":
            ddp_kw["device_ids"] = [self.device.index]
        self.pipe: Any = None
        self.dp_size, self.dp_rank = dctx.world_size, dctx.rank
        # find_unused_parameters: auto = off, unless the first backward leaves some
        # parameter without a gradient on every rank (then DDP is re-wrapped with it on).
        self._find_unused = cfg.parallel.find_unused_parameters
        if cfg.parallel.pipeline_stages > 1:  # stages always search for unused parameters
            self._find_unused = True
            self._init_pipeline(ddp_kw)
        else:
            self.model = task.model.to(self.device)
            self._ddp_kw = {k: v for k, v in ddp_kw.items() if k == "device_ids"}
            self.ddp = self.strategy.wrap(self.model, **self._ddp_kw,
                                          find_unused_parameters=self._find_unused is True)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        # Sparse gradients left sparse by the strategy (``dense``: native sparse allreduce)
        # are densified after the reduction unless the optimizer applies them as they are.
        self._densify = [] if optimizer_takes_sparse(self.optimizer, cfg.train.clip_grad_norm) \
            else [m.weight for m in sparse_modules(self.model)]
        self._dense_bufs: dict[int, torch.Tensor] = {}
        self.batch_size = resolve_batch_size(cfg, self.dp_size)
        self.sampler = ResumableDistributedSampler(
            task.train_data, self.dp_size, self.dp_rank, shuffle=not task.full_batch,
            seed=cfg.train.seed, drop_last=cfg.train.drop_last and not task.full_batch,
        )
        if task.full_batch:
            self.batch_size = max(self.sampler.num_samples, 1)
        self.steps_per_epoch = self._steps_per_epoch()
        self.total_steps = self._total_steps()
        self.global_batch = self.batch_size * cfg.train.grad_accum * self.dp_size
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, self.total_steps, self.global_batch)
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

    def _init_pipeline(self, ddp_kw: dict[str, Any]) -> None:
        """Cut the model into stages; this rank keeps its stage (rank 0 also the full model)."""
        from scidl.parallel.pipeline import PipelineEngine

        cfg, task = self.cfg, self.task
        if cfg.train.grad_accum != 1:
            raise ValueError("with pipeline stages use parallel.microbatches, not train.grad_accum")
        stages = cfg.parallel.pipeline_stages
        per_rank = resolve_batch_size(cfg, self.dctx.world_size // stages)
        first = next(iter(DataLoader(task.train_data, batch_size=max(per_rank // cfg.parallel.microbatches, 1),
                                     collate_fn=task.collate_fn, generator=torch.Generator())))
        self.pipe = PipelineEngine(task.model, task.loss_fn, cfg.parallel, self.device, first[0], ddp_kw)
        self.model, self.ddp = self.pipe.module, self.pipe.ddp
        self.strategy.install(self.ddp, self.pipe.dp_group)
        self.dp_size, self.dp_rank = self.pipe.layout.replicas, self.pipe.layout.replica
        if not self.dctx.is_main:  # only rank 0 keeps the whole model (for evaluation)
            import dataclasses

            self.task = dataclasses.replace(task, model=self.model)

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
            raise ValueError(
                f"an epoch has {n} samples per rank: fewer than one optimizer step of "
                f"batch_size={self.batch_size} x grad_accum={self.cfg.train.grad_accum}; "
                "lower train.batch_size or use fewer processes"
            )
        return steps

    def _total_steps(self) -> int:
        """``train.max_steps`` if set, else ``train.epochs`` full epochs."""
        if self.cfg.train.max_steps is not None:
            return self.cfg.train.max_steps
        return self.cfg.train.epochs * self.steps_per_epoch

    # ------------------------------------------------------------------ pieces

    def _loader(self) -> DataLoader:
        return DataLoader(
            self.task.train_data, batch_size=self.batch_size, sampler=self.sampler,
            collate_fn=self.task.collate_fn, drop_last=self.sampler.drop_last,
            num_workers=0,
            # Its own generator: creating an iterator must not draw from the global RNG,
            # or a resumed run's dropout stream would shift by one draw.
            generator=torch.Generator().manual_seed(self.cfg.train.seed),
        )

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.cfg.train.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _forward_backward(self, micro: list[Any]) -> torch.Tensor:
        """Loss of the micro-batches (averaged), gradients accumulated and reduced."""
        if self.pipe is not None:
            with self._autocast():
                return self.pipe.forward_backward(micro[0])
        total = torch.zeros((), device=self.device)
        for i, batch in enumerate(micro):
            last = i == len(micro) - 1
            sync = contextlib.nullcontext() if last else self.ddp.no_sync()
            with sync:
                with self._autocast():
                    loss = self.task.loss(self.ddp, batch) / len(micro)
                loss.backward()
            total += loss.detach().float()
        return total

    def _closure(self, micro: list[Any]) -> Callable[[], torch.Tensor]:
        """For optimizers that re-evaluate (L-BFGS, safeguarded methods).

        Returns the loss averaged over ranks, so every rank takes identical decisions.
        """

        def closure() -> torch.Tensor:
            self.optimizer.zero_grad(set_to_none=False)
            loss = self._forward_backward(micro)
            dist.all_reduce(loss)
            return loss / self.dctx.world_size

        return closure

    def _grads_nonfinite(self) -> bool:
        """Whether any local gradient holds a NaN/Inf (sparse ones: their values)."""
        grads = [p.grad._values() if p.grad.is_sparse else p.grad
                 for p in self.model.parameters() if p.grad is not None]
        grads = [g for g in grads if g.numel()]
        if not grads:
            return False
        norms = torch._foreach_norm(grads)
        return not bool(torch.isfinite(torch.stack(norms).sum()))

    def _resolve_unused(self) -> bool:
        """``find_unused_parameters=auto``, after the first backward (all ranks).

        If some parameter got no gradient on any rank, DDP (built without the search) has
        left that step's reduction unfinished: re-wrap the model with the search on,
        forget the strategy's state of the aborted step, and return True (the caller
        redoes the step). One small agreement collective, once per run.
        """
        self._find_unused = False
        unused = [n for n, p in self.model.named_parameters() if p.requires_grad and p.grad is None]
        flag = torch.tensor([float(len(unused))], device=self.device)
        dist.all_reduce(flag)
        if flag.item() == 0:
            return False
        self.strategy.on_skipped_step()
        old, self.ddp = self.ddp, None
        del old
        gc.collect()  # the old DDP's autograd hooks go with it
        self.ddp = self.strategy.wrap(self.model, **self._ddp_kw, find_unused_parameters=True)
        self.ddp.train(self.model.training)
        self._find_unused = True
        if self.dctx.is_main:
            names = (", ".join(unused[:3]) + (f" and {len(unused) - 3} more" if len(unused) > 3 else "")
                     ) or "some parameters (on other ranks)"
            print(f"scidl: hint: {names} got no gradient in the first step; DDP now searches for "
                  "unused parameters every step (set parallel.find_unused_parameters=true to "
                  "say so and skip this check)", file=sys.stderr, flush=True)
        return True

    def _step(self, micro: list[Any]) -> dict[str, float]:
        t0 = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        needs_closure = getattr(self.optimizer, "requires_closure", False) or isinstance(
            self.optimizer, torch.optim.LBFGS
        )
        if needs_closure and self.pipe is not None:
            raise ValueError(f"optimizer {self.cfg.optim.name!r} re-evaluates the loss (closure), "
                             "which pipeline stages do not support")
        loss = self._forward_backward(micro)
        if self._find_unused == "auto" and self.pipe is None and self._resolve_unused():
            self.optimizer.zero_grad(set_to_none=True)
            loss = self._forward_backward(micro)
        if self._densify:
            densify_grads(self._densify, self._dense_bufs)
        # One small collective: the loss sum (for logging) and a bad-step flag (MAX via SUM).
        bad = self.cfg.train.skip_nonfinite and (
            self._grads_nonfinite() or not bool(torch.isfinite(loss))
        )
        flag = torch.stack([loss.detach().float(), torch.tensor(float(bad), device=self.device)])
        dist.all_reduce(flag)
        loss_mean = flag[0].item() / self.dp_size  # pipelines: only last stages hold a loss
        skipped = flag[1].item() > 0
        grad_norm = float("nan")
        if skipped:
            self.skipped_steps += 1
            self.optimizer.zero_grad(set_to_none=True)
            self.strategy.on_skipped_step()  # no residual/warm start/lagged result survives
            failure = check_skipped(self.skipped_steps, self.step + 1, self.total_steps,
                                    self.cfg.train.max_skipped_fraction)
            if failure:
                raise TrainingDiverged(failure)
        else:
            if self.cfg.train.clip_grad_norm is not None:
                grad_norm = self._clip(self.cfg.train.clip_grad_norm)
            if needs_closure:
                self.optimizer.step(self._closure(micro))
            else:
                self.optimizer.step()
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        comm = self.strategy.end_step()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        dt = time.perf_counter() - t0
        self.step_times.append(dt)
        global_batch = self.batch_size * len(micro) * self.dctx.world_size
        row = {
            "step": self.step + 1, "epoch": self.epoch, "loss": loss_mean, "lr": lr,
            "step_time_s": dt, "samples_per_s": global_batch / dt if dt > 0 else 0.0,
            "skipped": int(skipped),
        }
        if not math.isnan(grad_norm):
            row["grad_norm"] = grad_norm
        row.update({f"comm_{k}" if not k.startswith("comm") else k: v for k, v in comm.items()})
        return row

    def _clip(self, max_norm: float) -> float:
        if self.pipe is None:
            return float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
        norm = self.pipe.grad_norm()  # across stages
        coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        for p in self.model.parameters():
            if p.grad is not None:
                p.grad.mul_(coef)
        return float(norm)

    def evaluate(self) -> dict[str, float]:
        """Evaluate on rank 0 with the plain (whole) model; returns {} on other ranks.

        Call on all ranks: with pipeline stages, rank 0 first gathers every stage's weights.
        """
        if self.task.val_data is None and not self.task.extras.get("eval_without_data"):
            return {}
        model = self.model
        if self.pipe is not None:
            from scidl.parallel.pipeline import gather_full_state

            full = gather_full_state(self.pipe)
            if not self.dctx.is_main:
                return {}
            model = self.task.model
            model.load_state_dict(full)
        if not self.dctx.is_main:
            return {}
        model.eval()
        grad = torch.enable_grad() if self.task.eval_needs_grad else torch.no_grad()
        with grad:
            out = {k: float(v) for k, v in self.task.evaluate(model, self.task.val_data).items()}
        model.train()
        self.last_eval = out
        return out

    # ------------------------------------------------------------- checkpoints

    @property
    def ckpt_root(self) -> Path:
        return self.run_dir / "checkpoints"

    def save(self) -> None:
        """Gather every rank's RNG/strategy state and write a checkpoint (call on all ranks)."""
        mine: dict[str, Any] = {"rng": _rng_for_save(), "strategy": _strategy_state(self.strategy)}
        if self.pipe is not None:  # each rank holds a different stage: save it per rank
            mine["model"] = self.model.state_dict()
            mine["optimizer"] = self.optimizer.state_dict()
        # Objects holding tensors are sent as torch.save bytes (pickling tensors through
        # all_gather_object is fragile) and decoded with weights_only=True.
        buf = io.BytesIO()
        torch.save(mine, buf)
        blobs: list[Any] = [None] * self.dctx.world_size
        dist.all_gather_object(blobs, buf.getvalue())
        gathered = [torch.load(io.BytesIO(b), weights_only=True) for b in blobs] if self.dctx.is_main else []
        if self.dctx.is_main:
            state = {
                "model": None if self.pipe else self.model.state_dict(),
                "optimizer": None if self.pipe else self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "progress": {"step": self.step, "epoch": self.epoch, "micro": self.micro_in_epoch,
                             "skipped": self.skipped_steps, "world_size": self.dctx.world_size},
                "last_eval": self.last_eval,
            }
            ckpt.save_checkpoint(
                self.ckpt_root, self.step, {"state.pt": state, "ranks.pt": gathered},
                keep=self.cfg.checkpoint.keep,
            )
        dist.barrier()

    def resume(self) -> int:
        """Load the newest good checkpoint of this run folder; returns its step (0 if none)."""
        good = ckpt.latest_good_checkpoint(self.ckpt_root, warn=self.dctx.is_main)
        if good is None:
            return 0
        state = good.load("state.pt")
        ranks = good.load("ranks.pt")
        prog = state["progress"]
        if prog["world_size"] != self.dctx.world_size:
            raise ValueError(
                f"checkpoint {good.path} was written by {prog['world_size']} processes; "
                f"resume with --nproc {prog['world_size']}"
            )
        mine = ranks[self.dctx.rank]
        self.model.load_state_dict(state["model"] if self.pipe is None else mine["model"])
        self.optimizer.load_state_dict(state["optimizer"] if self.pipe is None else mine["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.epoch, self.micro_in_epoch = prog["step"], prog["epoch"], prog["micro"]
        self.skipped_steps = prog["skipped"]
        self._last_ckpt_step = self._last_eval_step = self.step
        self.last_eval = state.get("last_eval", {})
        _rng_from_save(mine["rng"])
        if mine.get("strategy") is not None and hasattr(self.strategy, "load_state_dict"):
            self.strategy.load_state_dict(mine["strategy"])
        if self.dctx.is_main:
            truncate_metrics(self.run_dir / "metrics.jsonl", self.step)
        return self.step

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
            group.append(to_device(batch, self.device))
            if len(group) == self.cfg.train.grad_accum:
                yield group
                group = []

    def fit(self) -> dict[str, Any]:
        """Train to the budget; returns the summary (also written to summary.json)."""
        t_start = time.perf_counter()
        if self.dctx.is_main:
            self._logger = MetricsLogger(self.run_dir, self.cfg.log.tensorboard)
        progress = Progress(self.total_steps, self.cfg.log.progress and self.dctx.is_main,
                            description=self.cfg.workload)
        progress.update(self.step)
        self.ddp.train()
        try:
            while self.step < self.total_steps:
                for micro in self._micro_batches():
                    row = self._step(micro)
                    self.step += 1
                    self.micro_in_epoch += len(micro)
                    end_epoch = self.micro_in_epoch >= self.steps_per_epoch * self.cfg.train.grad_accum
                    self._after_step(row, end_epoch, progress)
                    if end_epoch or self.step >= self.total_steps:
                        break
                if self.micro_in_epoch >= self.steps_per_epoch * self.cfg.train.grad_accum:
                    self.epoch += 1
                    self.micro_in_epoch = 0
            final_eval = self.evaluate()
            if self.dctx.is_main and final_eval and self._logger:
                self._logger.log({"step": self.step, "epoch": self.epoch,
                                  **{f"eval/{k}": v for k, v in final_eval.items()}})
            if self.cfg.checkpoint.final:
                self.save()
            for cb in self.callbacks:
                if hasattr(cb, "on_train_end"):
                    cb.on_train_end(self)
        finally:
            progress.close()
            if self._logger:
                self._logger.close()
        return self._summary(time.perf_counter() - t_start)

    def _after_step(self, row: dict[str, Any], end_epoch: bool, progress: Progress) -> None:
        self.history.append(row)
        if self._should_eval(end_epoch):
            self._last_eval_step = self.step
            ev = self.evaluate()
            row.update({f"eval/{k}": v for k, v in ev.items()})
        if self._logger and (self.step % self.cfg.train.log_every == 0 or "eval/" in "".join(row)
                             or self.step == self.total_steps):
            self._logger.log(row)
        for cb in self.callbacks:
            if hasattr(cb, "on_step_end"):
                cb.on_step_end(self, row)
        progress.update(self.step, progress_fields(row, self.task.headline))
        if self._should_checkpoint(end_epoch) and self.step < self.total_steps:
            self._last_ckpt_step = self.step
            self.save()

    def _summary(self, wall: float) -> dict[str, Any]:
        times = sorted(self.step_times[1:] or self.step_times)  # first step warms caches
        median = times[len(times) // 2] if times else float("nan")
        global_batch = self.batch_size * self.cfg.train.grad_accum * self.dctx.world_size
        return {
            "workload": self.cfg.workload,
            "headline": self.task.headline,
            "higher_is_better": self.task.higher_is_better,
            "headline_value": self.last_eval.get(self.task.headline),
            "final_eval": self.last_eval,
            "final_loss": self.history[-1]["loss"] if self.history else None,
            "steps": self.step,
            "epochs": self.epoch,
            "skipped_steps": self.skipped_steps,
            "world_size": self.dctx.world_size,
            "backend": self.dctx.backend,
            "device": str(self.device),
            "launcher": self.dctx.launcher,
            "batch_size_per_rank": self.batch_size,
            "global_batch_size": global_batch,
            "wall_s": wall,
            "step_time_s": median,
            "samples_per_s": global_batch / median if median and median > 0 else None,
            "comm": self.strategy.report(),
            **({"pipeline": self.pipe.report(median)} if self.pipe is not None else {}),
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


def _strategy_state(strategy: Any) -> Any:
    fn = getattr(strategy, "state_dict", None)
    return fn() if callable(fn) else None


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DDP) else model
