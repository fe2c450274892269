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
import logging
import os
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch
import torch.distributed as dist

from scidl.config import ConfigError, RunConfig, check_finite, folder_in_use, save_config
from scidl.parallel.pipeline import PipelineError
from scidl.runtime.dist import DistContext, distributed_context
from scidl.runtime.env import LaunchEnv, LaunchError, detect_launch
from scidl.runtime.seed import seed_everything
from scidl.runtime.watchdog import (
    HEARTBEAT_DIR,
    STALL_EXIT,
    STALL_TAG,
    StallError,
    StallWatchdog,
)
from scidl.train.checkpoint import CheckpointError, atomic_write_text
from scidl.workloads.base import BuildContext, Task

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


def new_run_dir(cfg: RunConfig) -> Path:
    """``<log.root>/<workload>/<UTC timestamp>-<4 hex>``, created now."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    path = Path(cfg.log.root) / cfg.workload / f"{stamp}-{uuid.uuid4().hex[:4]}"
    path.mkdir(parents=True, exist_ok=False)
    return path


# ------------------------------------------------------------------ checks before a run


def _run_dir_key(cfg: RunConfig) -> str:
    return "log.run_dir" if cfg.log.run_dir else "log.root"


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _writable(folder: Path) -> bool:
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def check_run_dir(cfg: RunConfig, resume: bool) -> None:
    """The run folder can be used: only a resumed run may write into an existing run."""
    key = _run_dir_key(cfg)
    if resume:
        if not cfg.log.run_dir:
            raise ConfigError("resuming needs log.run_dir (the run folder to continue)")
        path = Path(cfg.log.run_dir)
        if not path.is_dir():
            raise ConfigError(f"cannot resume {path}: not a folder")
        if not _writable(path):
            raise ConfigError(f"cannot resume {path}: the folder is not writable")
        return
    target = Path(cfg.log.run_dir) if cfg.log.run_dir else Path(cfg.log.root) / cfg.workload
    if cfg.log.run_dir and folder_in_use(target):
        if not target.is_dir():
            raise ConfigError(f"invalid value for 'log.run_dir': {target} is a file, not a folder")
        raise ConfigError(
            f"invalid value for 'log.run_dir': {target} already holds a run (not empty); "
            f"continue it with --resume {target}, or choose a new folder"
        )
    base = _nearest_existing(target)
    if not base.is_dir():
        raise ConfigError(f"invalid value for '{key}': {base} is a file, not a folder")
    if not _writable(base):
        raise ConfigError(f"invalid value for '{key}': {base} is not writable")


def _check_device(cfg: RunConfig) -> None:
    d = cfg.dist
    cuda = torch.cuda.is_available()
    if d.device == "cuda" and not cuda:
        raise ConfigError("dist.device=cuda but no CUDA device is available "
                          "(use dist.device=cpu or auto)")
    if d.backend == "nccl" and (d.device == "cpu" or not cuda):
        raise ConfigError("dist.backend=nccl needs a CUDA device (use dist.backend=gloo or auto)")


def _check_layout(cfg: RunConfig, world: int) -> None:
    """Process layout and batch arithmetic that need only the config and the world size."""
    t, par = cfg.train, cfg.parallel
    stages = par.pipeline_stages
    if world % stages:
        raise ConfigError(f"parallel.pipeline_stages={stages} does not divide the {world} "
                          f"process(es); use a process count that is a multiple of {stages}")
    if stages > 1 and t.grad_accum != 1:
        raise ConfigError("with parallel.pipeline_stages > 1 use parallel.microbatches, "
                          "not train.grad_accum")
    dp = world // stages
    if t.global_batch_size is not None and t.global_batch_size % (dp * t.grad_accum):
        raise ConfigError(
            f"train.global_batch_size={t.global_batch_size} is not divisible by "
            f"{dp} data-parallel process(es) x train.grad_accum={t.grad_accum}")
    per_rank = t.global_batch_size // (dp * t.grad_accum) if t.global_batch_size else t.batch_size
    if stages > 1 and per_rank % par.microbatches:
        raise ConfigError(f"the per-replica batch of {per_rank} does not split into "
                          f"parallel.microbatches={par.microbatches}")


def warn_oversubscribed(nproc: int, cores: int | None = None) -> None:
    """One warning when more processes than cores are started on this machine."""
    cores = cores or os.cpu_count() or 1
    if nproc > cores:
        warnings.warn(f"dist.nproc={nproc} processes on {cores} CPU core(s): oversubscribed, "
                      f"each gets 1 thread and steps will be slow", stacklevel=3)


def check_run(cfg: RunConfig, resume: bool = False, launch: LaunchEnv | None = None,
              own_task: bool = False) -> None:
    """Every check that needs no dataset, before anything is created or started.

    Raises ConfigError (one line naming the key) for a config that cannot run here.
    ``own_task``: the model comes from a task factory, not from ``cfg.workload``.
    """
    launch = launch or detect_launch()
    check_finite(cfg.model_dump())  # configs built in Python skip load_config's checks
    if not own_task:
        cfg.task_config()
    _check_device(cfg)
    world = cfg.dist.nproc if launch.launcher == "single" else launch.world_size
    _check_layout(cfg, world)
    check_run_dir(cfg, resume)


# ------------------------------------------------------------------ run folders


def check_resume_world(plan: Sequence[Any], world: int) -> None:
    """The newest resumable checkpoint was written by ``world`` processes (checked before
    any process starts, so a mistaken ``--nproc`` leaves the run folder untouched)."""
    for good in plan[:1]:
        try:
            written_by = good.load("state.pt")["progress"]["world_size"]
        except Exception:  # noqa: BLE001 - unloadable: the training processes fall back
            return
        if written_by != world:
            raise ConfigError(f"checkpoint {good.path} was written by {written_by} processes; "
                              f"resume with --nproc {written_by}")


def _topmost_missing(path: Path) -> Path | None:
    """The highest of ``path`` and its ancestors that does not exist (None: path exists)."""
    path = path.absolute()
    if path.exists():
        return None
    while not path.parent.exists() and path.parent != path:
        path = path.parent
    return path


def _make_run_dir(cfg: RunConfig) -> tuple[Path, Path | None]:
    """Create the run folder; returns it and the topmost folder this call created."""
    explicit = cfg.log.run_dir is not None
    target = Path(str(cfg.log.run_dir)) if explicit else Path(cfg.log.root) / cfg.workload
    top = _topmost_missing(target)
    try:
        path = target if explicit else new_run_dir(cfg)
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"invalid value for '{_run_dir_key(cfg)}': cannot create the run "
                          f"folder ({e.strerror or e})") from None
    return path, (top if explicit else top or path)


def discard_unused_run_dir(path: Path, top: Path | None) -> None:
    """After a failed start: remove what this run created if it holds only its config.yaml.

    ``top`` is the topmost folder the run created (None: the folder existed before, so
    only the run's own files are removed). A folder with metrics or checkpoints is kept.
    """
    if not path.is_dir():
        return
    files = [p for p in path.rglob("*")
             if not p.is_dir() and HEARTBEAT_DIR not in p.relative_to(path).parts]
    if any(p != path / "config.yaml" for p in files):
        return
    shutil.rmtree(path / HEARTBEAT_DIR, ignore_errors=True)
    if top is None:
        (path / "config.yaml").unlink(missing_ok=True)
        for sub in sorted((p for p in path.rglob("*") if p.is_dir()), reverse=True):
            with contextlib.suppress(OSError):
                sub.rmdir()
        return
    shutil.rmtree(path, ignore_errors=True)
    parent = path.parent.absolute()
    top = top.absolute()
    while parent != parent.parent and (parent == top or top in parent.parents):
        with contextlib.suppress(OSError):
            parent.rmdir()  # only if empty
        parent = parent.parent


def build_task(cfg: RunConfig, ctx: BuildContext, task_factory: TaskFactory | None) -> Task:
    """Seed, then build the workload's task (identical on every rank)."""
    seed_everything(cfg.train.seed)
    if task_factory is not None:
        return task_factory(ctx)
    from scidl.workloads import get_workload

    return get_workload(cfg.workload).build(cfg.task_config(), ctx)


def _agree_run_dir(cfg: RunConfig, dctx: DistContext) -> tuple[Path, Path | None]:
    """The run folder of all ranks (rank 0 creates it) and, on rank 0, the topmost folder
    it created (None: nothing, or on other ranks)."""
    box: list[Any] = [None, None]
    if dctx.is_main:
        path, top = _make_run_dir(cfg)
        box = [str(path), str(top) if top else None]
    dist.broadcast_object_list(box, src=0)
    path = Path(box[0])
    path.mkdir(parents=True, exist_ok=True)
    return path, Path(box[1]) if box[1] and dctx.is_main else None


def train_process(
    cfg_dict: dict[str, Any], resume: bool = False, task_factory: TaskFactory | None = None,
    callbacks: Sequence[Any] = (), from_scratch: bool = False,
) -> dict[str, Any]:
    """Train as one rank of the job described by the environment (all ranks call this).

    ``from_scratch``: when resuming finds no usable checkpoint, train from step 0 instead
    of failing.
    """
    from scidl.train.trainer import Trainer

    cfg = RunConfig.model_validate(cfg_dict)
    if cfg.dist.threads_per_proc:
        torch.set_num_threads(cfg.dist.threads_per_proc)
    else:  # several processes on one machine: share the cores instead of oversubscribing
        local = detect_launch().local_world_size
        if local > 1:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True)
    with distributed_context(cfg.dist.device, cfg.dist.backend, cfg.dist.timeout_s) as dctx:
        run_dir, created = _agree_run_dir(cfg, dctx)
        watchdog = _StepTracker()
        with _watch(cfg, dctx, run_dir, watchdog):
            try:
                if dctx.is_main and not (run_dir / "config.yaml").exists():
                    save_config(cfg.model_copy(update={"log": cfg.log.model_copy(update={"run_dir": str(run_dir)})}), run_dir / "config.yaml")
                ctx = BuildContext(seed=cfg.train.seed, device=dctx.device, run_dir=run_dir,
                                   data_dir=Path(cfg.log.root) / ".data")
                task = build_task(cfg, ctx, task_factory)
                seed_everything(cfg.train.seed + 1 + dctx.rank)  # per-rank stream (dropout, noise)
                trainer = Trainer(cfg, task, dctx, run_dir, [watchdog, *callbacks])
            except BaseException:
                if created is not None:
                    discard_unused_run_dir(run_dir, created)
                raise
            # An elastic restart re-enters here: continue from the newest good checkpoint
            # (none yet: from step 0, with the dead attempt's metrics rows dropped).
            restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
            if resume or restarted:
                trainer.resume(allow_none=from_scratch or (restarted and not resume))
            summary = trainer.fit()
        summary["run_dir"] = str(run_dir)
        if dctx.is_main:
            atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2, default=str))
            atomic_write_text(run_dir / "comm.json", json.dumps(trainer.strategy.report(), indent=2, default=str))
        return summary


class _StepTracker:
    """Trainer callback: the last finished step, for the stall watchdog's heartbeat."""

    def __init__(self) -> None:
        self.step = 0

    def on_step_end(self, trainer: Any, row: dict[str, Any]) -> None:
        self.step = trainer.step


def _watch(cfg: RunConfig, dctx: DistContext, run_dir: Path, tracker: _StepTracker) -> Any:
    """The stall watchdog for a multi-process job; nothing for one process."""
    if dctx.world_size == 1:
        return contextlib.nullcontext()
    return StallWatchdog(run_dir, dctx.rank, dctx.world_size, cfg.dist.stall_timeout_s,
                         step=lambda: tracker.step)


# ------------------------------------------------------------- errors raised in workers

USER_ERROR_EXIT = 2
_USER_ERROR_TAG = "scidl user error: "


def _exit_with_user_error(err: BaseException) -> NoReturn:
    """In a worker started by :func:`run`: leave the one-line message in the elastic agent's
    error file for this process and exit 2 (no traceback is printed)."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        with contextlib.suppress(OSError):
            Path(path).write_text(json.dumps({"message": _USER_ERROR_TAG + str(err),
                                              "timestamp": int(time.time())}))
    raise SystemExit(USER_ERROR_EXIT)


def _local_worker(*args: Any) -> dict[str, Any]:
    """Entry point of each process :func:`run` starts: :func:`train_process`, with user
    errors reported as a message instead of a traceback."""
    try:
        return train_process(*args)
    except USER_ERRORS as e:
        _exit_with_user_error(e)


def _user_error_message(err: BaseException) -> str | None:
    """The one-line message of a user error raised in a worker (None: not one)."""
    for failure in getattr(err, "failures", {}).values():
        msg = failure.message
        if failure.exitcode == USER_ERROR_EXIT and isinstance(msg, str) and msg.startswith(_USER_ERROR_TAG):
            return msg[len(_USER_ERROR_TAG):]
    return None


def _stall_message(err: BaseException) -> str | None:
    """The stall watchdog's line, when a worker ended the job for a stalled rank."""
    for failure in getattr(err, "failures", {}).values():
        msg = failure.message
        if failure.exitcode == STALL_EXIT and isinstance(msg, str) and msg.startswith(STALL_TAG):
            return msg[len(STALL_TAG):]
    return None


class _UserErrorLogFilter(logging.Filter):
    """Holds back the elastic agent's log records about a worker that exited with a user
    error (a traceback of the agent's own), and the 'Terminating process' warnings that
    precede them; other records pass (held ones are released with the next one)."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if getattr(exc, "exit_code", None) in (USER_ERROR_EXIT, STALL_EXIT):
            self.held.clear()
            return False
        if record.getMessage().startswith("Terminating process"):
            self.held.append(record)
            return False
        self.release()
        return True

    def release(self) -> None:
        held, self.held = self.held, []
        for rec in held:
            _emit(rec)


def _emit(record: logging.LogRecord) -> None:
    """Hand a held record to the handlers its logger would have used."""
    logger: logging.Logger | None = logging.getLogger(record.name)
    while logger is not None:
        for h in logger.handlers:
            if record.levelno >= h.level:
                h.handle(record)
        logger = logger.parent if logger.propagate else None


_AGENT_LOGGERS = ("torch.distributed.elastic.multiprocessing.api", "torch.multiprocessing.spawn")


@contextlib.contextmanager
def _quiet_user_errors() -> Iterator[_UserErrorLogFilter]:
    filt = _UserErrorLogFilter()
    loggers = [logging.getLogger(n) for n in _AGENT_LOGGERS]
    for lg in loggers:
        lg.addFilter(filt)
    try:
        yield filt
    finally:
        for lg in loggers:
            lg.removeFilter(filt)


def _launch_reporting_user_errors(launch: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``launch()``; a user error in a worker comes back as one ConfigError."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    with _quiet_user_errors() as filt:
        try:
            return launch()
        except ChildFailedError as e:
            stall = _stall_message(e)
            if stall is not None:
                raise StallError(stall) from None
            msg = _user_error_message(e)
            if msg is None:
                filt.release()
                raise
            raise ConfigError(msg) from None


def _launch_local(cfg: RunConfig, resume: bool, task_factory: TaskFactory | None,
                  callbacks: Sequence[Any], from_scratch: bool = False) -> dict[str, Any]:
    from scidl.runtime.launch import elastic_run

    results = elastic_run(_local_worker, (cfg.to_dict(), resume, task_factory, callbacks, from_scratch),
                          cfg.dist.nproc, cfg.dist.max_restarts)
    return results[0]


def run(
    cfg: RunConfig,
    task_factory: TaskFactory | None = None,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
    restart_from_scratch: bool = False,
) -> RunResult:
    """Train ``cfg`` and return where the results are.

    Args:
        cfg: a resolved :class:`RunConfig` (see :func:`scidl.config.load_config`).
        task_factory: optional ``factory(ctx) -> Task`` for a user's own model and data
            (top-level function, so it can be sent to spawned processes).
        resume: continue ``cfg.log.run_dir`` from its newest good checkpoint; raises
            :class:`~scidl.train.checkpoint.CheckpointError` when it has none.
        restart_from_scratch: with ``resume``, train from step 0 when no checkpoint is usable.
        callbacks: trainer callbacks (``on_step_end(trainer, row)``, ``on_train_end(trainer)``),
            called on every rank; picklable when ``cfg.dist.nproc > 1``.

    Scripts that call this with ``cfg.dist.nproc > 1`` need an ``if __name__ == "__main__":``
    guard: the processes are started with ``spawn`` and import the script.
    """
    launch = detect_launch()
    check_run(cfg, resume, launch, own_task=task_factory is not None)
    if resume:  # fail here, before any process starts, when nothing can be resumed
        from scidl.train.checkpoint import TRAINER_FILES, resume_plan

        plan = resume_plan(Path(str(cfg.log.run_dir)) / "checkpoints", restart_from_scratch,
                           TRAINER_FILES, warn=False)  # the training processes report unusable ones
        check_resume_world(plan, cfg.dist.nproc if launch.launcher == "single" else launch.world_size)
    local = cfg.dist.nproc > 1 and launch.launcher == "single"
    if local:
        warn_oversubscribed(cfg.dist.nproc)
    created: Path | None = None
    if launch.launcher == "single" and not resume:  # this process creates the folder
        path, created = _make_run_dir(cfg)
        cfg = cfg.model_copy(update={"log": cfg.log.model_copy(update={"run_dir": str(path)})})
    try:
        if local:
            summary = _launch_reporting_user_errors(
                lambda: _launch_local(cfg, resume, task_factory, callbacks, restart_from_scratch))
        else:
            summary = train_process(cfg.to_dict(), resume, task_factory, callbacks,
                                    restart_from_scratch)
    except BaseException:
        if launch.launcher == "single" and not resume:
            discard_unused_run_dir(Path(str(cfg.log.run_dir)), created)
        raise
    return RunResult(Path(summary["run_dir"]), summary)
