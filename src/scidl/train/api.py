"""The Python entry point: ``scidl.run(cfg)`` trains a run config on 1..N processes.

With ``cfg.dist.nproc > 1`` (and no outer launcher such as torchrun, srun or mpirun),
:func:`run` starts the processes through the torch elastic agent, which restarts the
whole group up to ``cfg.dist.max_restarts`` times after a failure (each restart resumes
from the newest good checkpoint). Under an outer launcher, every process calls
:func:`run` itself and trains as one rank.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch.distributed as dist

from scidl.config import ConfigError, RunConfig, save_config
from scidl.parallel.pipeline import PipelineError
from scidl.runtime.dist import DistContext, distributed_context
from scidl.runtime.env import LaunchError, detect_launch
from scidl.runtime.plotting import provenance
from scidl.runtime.seed import seed_everything
from scidl.runtime.torch_settings import threads_for_this_machine, torch_settings
from scidl.runtime.watchdog import StallWatchdog
from scidl.runtime.worker_errors import exit_with_user_error, report_worker_errors
from scidl.train.callbacks import TrainerCallback
from scidl.train.checkpoint import CheckpointError, atomic_write_text
from scidl.train.phases import FIRST_STEP, SETUP, STARTING, Phases, building_line
from scidl.train.pictures import PICTURES_DIR, draw_after_fit
from scidl.train.preflight import check_resume_world, check_run, warn_oversubscribed
from scidl.train.rundir import discard_unused_run_dir, make_run_dir
from scidl.workloads.base import BuildContext, Task

if TYPE_CHECKING:
    from scidl.train.trainer import Trainer

TaskFactory = Callable[[BuildContext], Task]


@dataclass
class RunResult:
    """Where a run's results are and what they were."""

    run_dir: Path
    summary: dict[str, Any]

    @property
    def headline(self) -> tuple[str, float | None]:
        return self.summary["headline"], self.summary.get("headline_value")


# Errors caused by the user's input: the CLI prints them as one line (exit status 2).
# A checkpoint that cannot be resumed or written (no usable one, full disk) is reported
# the same way: one line naming the folder and the cause.
USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, PipelineError, LaunchError, CheckpointError)


def build_task(cfg: RunConfig, ctx: BuildContext, task_factory: TaskFactory | None) -> Task:
    """Seed, then build the workload's task (identical on every rank)."""
    from scidl.workloads.factory import check_task

    seed_everything(cfg.train.seed)
    if task_factory is not None:
        return check_task(task_factory(ctx), getattr(task_factory, "__qualname__", "task_factory"))
    from scidl.workloads import get_workload

    return check_task(get_workload(cfg.workload).build(cfg.task_config(), ctx), cfg.workload)


def build_phase_line(cfg: RunConfig, task_factory: TaskFactory | None) -> str:
    """The start-up line shown while the task is built (the workload's own note, e.g.
    what reference it computes; none for a user's task factory)."""
    note = ""
    if task_factory is None:
        from scidl.workloads import get_workload

        note = get_workload(cfg.workload).build_note(cfg.task_config())
    return building_line(cfg.workload_label(), note)


def _agree_run_dir(cfg: RunConfig, dctx: DistContext) -> tuple[Path, Path | None]:
    """The run folder of all ranks (rank 0 creates it) and, on rank 0, the topmost folder
    it created (None: nothing, or on other ranks)."""
    box: list[Any] = [None, None]
    if dctx.is_main:
        path, top = make_run_dir(cfg)
        box = [str(path), str(top) if top else None]
    dist.broadcast_object_list(box, src=0)
    path = Path(box[0])
    path.mkdir(parents=True, exist_ok=True)
    return path, Path(box[1]) if box[1] and dctx.is_main else None


def train_process(
    cfg_dict: dict[str, Any], resume: bool = False, task_factory: TaskFactory | None = None,
    callbacks: Sequence[TrainerCallback] = (), from_scratch: bool = False,
    on_run_dir: Callable[[Path], None] | None = None, extend: bool = False,
) -> dict[str, Any]:
    """Train as one rank of the job described by the environment (all ranks call this).

    ``from_scratch``: when resuming finds no usable checkpoint, train from step 0 instead
    of failing. ``on_run_dir(path)`` is called on rank 0 once the run folder is agreed.
    ``extend``: stretch the resumed run's LR schedule to this budget.
    """
    from scidl.train.trainer import Trainer

    cfg = RunConfig.model_validate(cfg_dict)
    threads = threads_for_this_machine(cfg.dist.threads_per_proc, detect_launch().local_world_size)
    with torch_settings(threads.threads, cfg.train.deterministic), \
            distributed_context(cfg.dist.device, cfg.dist.backend, cfg.dist.timeout_s) as dctx, \
            warnings.catch_warnings():
        if not dctx.is_main:  # rank 0 speaks for the job: the same warning once, not N times
            warnings.simplefilter("ignore")
        run_dir, created = _agree_run_dir(cfg, dctx)
        if on_run_dir is not None and dctx.is_main:
            on_run_dir(run_dir)
        if dctx.is_main and cfg.log.progress:
            print(threads.line, flush=True)
        watchdog = _StepTracker()
        phases = Phases(dctx.is_main and cfg.log.progress)
        with _watch(cfg, dctx, run_dir, watchdog):
            try:
                if dctx.is_main and not (run_dir / "config.yaml").exists():
                    save_config(cfg.model_copy(update={"log": cfg.log.model_copy(update={"run_dir": str(run_dir)})}), run_dir / "config.yaml")
                ctx = BuildContext(seed=cfg.train.seed, device=dctx.device, run_dir=run_dir,
                                   data_dir=Path(cfg.log.root) / ".data")
                phases.show(build_phase_line(cfg, task_factory))
                task = build_task(cfg, ctx, task_factory)
                seed_everything(cfg.train.seed + 1 + dctx.rank)  # per-rank stream (dropout, noise)
                phases.show(SETUP)
                trainer = Trainer(cfg, task, dctx, run_dir, [watchdog, *callbacks])
            except BaseException:
                phases.close()
                if created is not None:
                    discard_unused_run_dir(run_dir, created)
                raise
            # An elastic restart re-enters here: continue from the newest good checkpoint
            # (none yet: from step 0, with the dead attempt's metrics rows dropped).
            restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
            if resume or restarted:
                trainer.resume(allow_none=from_scratch or (restarted and not resume), extend=extend)
            phases.show(FIRST_STEP)
            phases.close()  # the progress bar takes over
            summary = trainer.fit()
            pictures, drawn_from = draw_after_fit(cfg, trainer, task, run_dir,
                                                  own_task=task_factory is not None)
        if pictures:
            summary["pictures"] = [os.path.relpath(p, run_dir) for p in pictures]
            summary["pictures_from"] = drawn_from
            if cfg.log.progress:
                print(f"pictures: {len(pictures)} in {run_dir / PICTURES_DIR} ({drawn_from})",
                      flush=True)
        summary["run_dir"] = str(run_dir)
        summary["provenance"] = provenance()  # host, CPUs, versions, date: for report captions
        if dctx.is_main:
            atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2, default=str))
            atomic_write_text(run_dir / "comm.json", json.dumps(trainer.strategy.report(), indent=2, default=str))
            if cfg.log.mlflow:
                from scidl.train.loggers.mlflow import attach_files

                attach_files(run_dir, [(run_dir / "summary.json", None), (run_dir / "comm.json", None),
                                       *((Path(p), PICTURES_DIR) for p in pictures or ())])
        return summary


class _StepTracker:
    """Trainer callback: the last finished step, for the stall watchdog's heartbeat."""

    def __init__(self) -> None:
        self.step = 0

    def on_step_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        self.step = trainer.step


def _watch(cfg: RunConfig, dctx: DistContext, run_dir: Path, tracker: _StepTracker) -> Any:
    """The stall watchdog for a multi-process job; nothing for one process."""
    if dctx.world_size == 1:
        return contextlib.nullcontext()
    return StallWatchdog(run_dir, dctx.rank, dctx.world_size, cfg.dist.stall_timeout_s,
                         step=lambda: tracker.step)


def _local_worker(*args: Any) -> dict[str, Any]:
    """Entry point of each process :func:`run` starts: :func:`train_process`, with user
    errors reported as a message instead of a traceback, and warnings as one line each."""
    from scidl.cli import _one_line_warning

    warnings.showwarning = _one_line_warning
    try:
        return train_process(*args)
    except USER_ERRORS as e:
        exit_with_user_error(e)


def _launch_local(cfg: RunConfig, resume: bool, task_factory: TaskFactory | None,
                  callbacks: Sequence[TrainerCallback], from_scratch: bool = False,
                  extend: bool = False) -> dict[str, Any]:
    from scidl.runtime.launch import elastic_run

    results = elastic_run(_local_worker, (cfg.to_dict(), resume, task_factory, callbacks, from_scratch,
                                          None, extend),
                          cfg.dist.nproc, cfg.dist.max_restarts)
    return results[0]


def run(
    cfg: RunConfig,
    task_factory: TaskFactory | None = None,
    resume: bool = False,
    callbacks: Sequence[TrainerCallback] = (),
    restart_from_scratch: bool = False,
    on_run_dir: Callable[[Path], None] | None = None,
    extend: bool = False,
) -> RunResult:
    """Train ``cfg`` and return where the results are.

    Args:
        cfg: a resolved :class:`RunConfig` (see :func:`scidl.config.load_config`).
        task_factory: optional ``factory(ctx) -> Task`` for a user's own model and data
            (top-level function, so it can be sent to spawned processes).
        resume: continue ``cfg.log.run_dir`` from its newest good checkpoint; raises
            :class:`~scidl.train.checkpoint.CheckpointError` when it has none.
        restart_from_scratch: with ``resume``, train from step 0 when no checkpoint is usable.
        extend: with ``resume``, stretch the LR schedule to the new budget
            (``train.max_steps``/``train.epochs``) instead of keeping the one the run was
            started with (see docs/training.md, "Extending a run").
        callbacks: trainer callbacks (:mod:`scidl.train.callbacks`: ``on_step_end(trainer, row)``
            and/or ``on_train_end(trainer)``), called on every rank; picklable when ``cfg.dist.nproc > 1``.
        on_run_dir: called once with the run folder before training starts, in this
            process (local launch) or on rank 0 (under torchrun, Slurm or MPI); the CLI
            prints it there.

    Scripts that call this with ``cfg.dist.nproc > 1`` need an ``if __name__ == "__main__":``
    guard: the processes are started with ``spawn`` and import the script.
    """
    launch = detect_launch()
    if extend and not resume:
        raise ConfigError("extend only applies when resuming a run (--resume RUN_DIR --extend)")
    check_run(cfg, resume, launch, own_task=task_factory is not None)
    if resume:  # fail here, before any process starts, when nothing can be resumed
        from scidl.train.checkpoint import TRAINER_FILES, resume_plan

        plan = resume_plan(Path(str(cfg.log.run_dir)) / "checkpoints", restart_from_scratch,
                           TRAINER_FILES, warn=False)  # the training processes report unusable ones
        check_resume_world(plan, cfg.dist.nproc if launch.launcher == "single" else launch.world_size,
                           cfg.parallel.pipeline_stages)
    local = cfg.dist.nproc > 1 and launch.launcher == "single"
    if local:
        warn_oversubscribed(cfg.dist.nproc)
    created: Path | None = None
    if launch.launcher == "single" and not resume:  # this process creates the folder
        path, created = make_run_dir(cfg)
        cfg = cfg.model_copy(update={"log": cfg.log.model_copy(update={"run_dir": str(path)})})
    if launch.launcher == "single" and on_run_dir is not None:  # folder known before launching
        on_run_dir(Path(str(cfg.log.run_dir)))
    if local and cfg.log.progress:  # the longest silent phase: spawn, import torch, rendezvous
        print(STARTING.format(n=cfg.dist.nproc), flush=True)
    try:
        if local:
            summary = report_worker_errors(
                lambda: _launch_local(cfg, resume, task_factory, callbacks, restart_from_scratch,
                                      extend))
        else:
            summary = train_process(cfg.to_dict(), resume, task_factory, callbacks,
                                    restart_from_scratch,
                                    on_run_dir if launch.launcher != "single" else None, extend)
    except BaseException:
        if launch.launcher == "single" and not resume:
            discard_unused_run_dir(Path(str(cfg.log.run_dir)), created)
        raise
    return RunResult(Path(summary["run_dir"]), summary)
