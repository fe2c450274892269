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
from scidl.runtime.env import LaunchEnv, LaunchError, detect_launch
from scidl.runtime.launch import NodeSpec
from scidl.runtime.plotting import provenance
from scidl.runtime.seed import seed_everything
from scidl.runtime.torch_settings import (
    binding_line,
    bound_to,
    cores_for_this_machine,
    threads_for_this_machine,
    torch_settings,
)
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
    reports: bool = True  # False on the node launchers of a multi-node job without rank 0

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
    launch = detect_launch()
    threads = threads_for_this_machine(cfg.dist.threads_per_proc, launch.local_world_size)
    cores = cores_for_this_machine(cfg.dist.bind_cores, launch.local_rank,
                                   launch.local_world_size, threads.threads)
    with torch_settings(threads.threads, cfg.train.deterministic), \
            distributed_context(cfg.dist.device, cfg.dist.backend, cfg.dist.timeout_s) as dctx, \
            bound_to(cores), \
            warnings.catch_warnings():
        if not dctx.is_main:  # rank 0 speaks for the job: the same warning once, not N times
            warnings.simplefilter("ignore")
        run_dir, created = _agree_run_dir(cfg, dctx)
        if on_run_dir is not None and dctx.is_main:
            on_run_dir(run_dir)
        if dctx.is_main and cfg.log.progress:
            print(threads.line, flush=True)
            if launch.local_world_size > 1:
                print(binding_line(cfg.dist.bind_cores, launch.local_world_size, cores), flush=True)
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
            restarted = any_rank_restarted(dctx)
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


def any_rank_restarted(dctx: DistContext) -> bool:
    """Whether this attempt follows a failure, on any rank. Each node's agent counts its
    own restarts (``TORCHELASTIC_RESTART_COUNT``); a node launcher started afresh in
    place of a dead one (by a scheduler, or ``scidl train --cluster``) counts 0 while the
    others count 1, and must resume with them, not start from step 0."""
    mine = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
    if dctx.world_size == 1:
        return mine
    import torch

    flag = torch.tensor([int(mine)], device=dctx.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


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
    from scidl.runtime.teardown import freeze_for_exit

    warnings.showwarning = _one_line_warning
    try:
        return train_process(*args)
    except USER_ERRORS as e:
        exit_with_user_error(e)
    finally:  # this process only exits from here on
        freeze_for_exit()


def _launch_local(cfg: RunConfig, resume: bool, task_factory: TaskFactory | None,
                  callbacks: Sequence[TrainerCallback], from_scratch: bool = False,
                  extend: bool = False, nodes: NodeSpec | None = None,
                  on_run_dir: Callable[[Path], None] | None = None) -> dict[str, Any]:
    """This node's processes under the elastic agent; the summary of its lowest rank
    (rank 0's on the node that holds it), with ``"rank"`` added."""
    from scidl.runtime.launch import elastic_run

    results = elastic_run(_local_worker, (cfg.to_dict(), resume, task_factory, callbacks, from_scratch,
                                          on_run_dir, extend),
                          cfg.dist.nproc, cfg.dist.max_restarts, nodes)
    first = min(results)
    return {**results[first], "rank": first}


def run(
    cfg: RunConfig,
    task_factory: TaskFactory | None = None,
    resume: bool = False,
    callbacks: Sequence[TrainerCallback] = (),
    restart_from_scratch: bool = False,
    on_run_dir: Callable[[Path], None] | None = None,
    extend: bool = False,
    nodes: NodeSpec | None = None,
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
            process (local launch) or on rank 0 (under torchrun, Slurm or MPI, or with
            several ``nodes``); the CLI prints it there.
        nodes: this process launches one node's ``cfg.dist.nproc`` processes of a
            multi-node job (:func:`scidl.runtime.launch.node_spec`); None: one node.

    Scripts that call this with ``cfg.dist.nproc > 1`` need an ``if __name__ == "__main__":``
    guard: the processes are started with ``spawn`` and import the script.
    """
    launch = detect_launch()
    multi = nodes is not None and nodes.multi  # this process is one node's launcher
    if multi:  # the job's layout, as its workers will see it
        assert nodes is not None
        launch = LaunchEnv("torchrun", world_size=cfg.dist.nproc * nodes.nnodes,
                           local_world_size=cfg.dist.nproc)
    if extend and not resume:
        raise ConfigError("extend only applies when resuming a run (--resume RUN_DIR --extend)")
    # With several nodes only the head checks that the run folder is new: the others may
    # start after rank 0 created it, or replace a dead node of a running job.
    head = not multi or nodes.node_rank == 0 or resume  # type: ignore[union-attr]
    check_run(cfg if head else cfg.model_copy(update={"log": cfg.log.model_copy(update={"run_dir": None})}),
              resume, launch, own_task=task_factory is not None)
    if resume:  # fail here, before any process starts, when nothing can be resumed
        from scidl.train.checkpoint import TRAINER_FILES, resume_plan

        plan = resume_plan(Path(str(cfg.log.run_dir)) / "checkpoints", restart_from_scratch,
                           TRAINER_FILES, warn=False)  # the training processes report unusable ones
        check_resume_world(plan, cfg.dist.nproc if launch.launcher == "single" else launch.world_size,
                           cfg.parallel.pipeline_stages)
    local = multi or (cfg.dist.nproc > 1 and launch.launcher == "single")
    if local:
        warn_oversubscribed(cfg.dist.nproc)
    created: Path | None = None
    single = launch.launcher == "single"
    if single and not resume:  # this process creates the folder
        path, created = make_run_dir(cfg)
        cfg = cfg.model_copy(update={"log": cfg.log.model_copy(update={"run_dir": str(path)})})
    if single and on_run_dir is not None:  # folder known before launching
        on_run_dir(Path(str(cfg.log.run_dir)))
    if local and cfg.log.progress and (not multi or nodes.node_rank in (None, 0)):  # type: ignore[union-attr]
        # the longest silent phase: spawn, import torch, rendezvous
        print(STARTING.format(n=cfg.dist.nproc * (nodes.nnodes if multi else 1)),  # type: ignore[union-attr]
              flush=True)
    try:
        if local:
            # Several nodes: rank 0 (on whichever node) creates the run folder and names it.
            summary = report_worker_errors(
                lambda: _launch_local(cfg, resume, task_factory, callbacks, restart_from_scratch,
                                      extend, nodes, on_run_dir if multi else None))
        else:
            summary = train_process(cfg.to_dict(), resume, task_factory, callbacks,
                                    restart_from_scratch,
                                    on_run_dir if launch.launcher != "single" else None, extend)
    except BaseException:
        if single and not resume:
            discard_unused_run_dir(Path(str(cfg.log.run_dir)), created)
        raise
    return RunResult(Path(summary["run_dir"]), summary, reports=summary.pop("rank", 0) == 0)
