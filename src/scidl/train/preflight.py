"""Checks made before a run creates anything or starts a process.

Everything that needs only the config, the launch and the checkpoint folder is checked
here, so a config that cannot run ends in one line (a :class:`~scidl.config.ConfigError`
naming the key) with no run folder and no process left behind.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from scidl.config import ConfigError, RunConfig, check_finite
from scidl.parallel.fsdp import check_shard_layout
from scidl.parallel.plan import ParallelDims
from scidl.runtime.env import LaunchEnv, detect_launch
from scidl.train.loggers import check_loggers
from scidl.train.rundir import check_run_dir


def _check_device(cfg: RunConfig) -> None:
    d = cfg.dist
    cuda = torch.cuda.is_available()
    if d.device == "cuda" and not cuda:
        raise ConfigError("dist.device=cuda but no CUDA device is available "
                          "(use dist.device=cpu or auto)")
    if d.backend == "nccl" and (d.device == "cpu" or not cuda):
        raise ConfigError("dist.backend=nccl needs a CUDA device (use dist.backend=gloo or auto)")


def _check_layout(cfg: RunConfig, world: int, local_world: int | None = None) -> None:
    """Process layout and batch arithmetic that need only the config and the world size."""
    t, par = cfg.train, cfg.parallel
    stages = par.pipeline_stages
    dp = ParallelDims(world, stages).dp  # raises ConfigError for an impossible layout
    check_shard_layout(cfg, world, local_world)
    _check_checkpoint(cfg)
    if stages > 1 and t.grad_accum != 1:
        raise ConfigError("with parallel.pipeline_stages > 1 use parallel.microbatches, "
                          "not train.grad_accum")
    if t.global_batch_size is not None and t.global_batch_size % (dp * t.grad_accum):
        raise ConfigError(
            f"train.global_batch_size={t.global_batch_size} is not divisible by "
            f"{dp} data-parallel process(es) x train.grad_accum={t.grad_accum}")
    per_rank = t.global_batch_size // (dp * t.grad_accum) if t.global_batch_size else t.batch_size
    if stages > 1 and per_rank % par.microbatches:
        raise ConfigError(f"the per-replica batch of {per_rank} does not split into "
                          f"parallel.microbatches={par.microbatches}")


def _check_checkpoint(cfg: RunConfig) -> None:
    """``checkpoint.format`` / ``checkpoint.async_save`` against the layout."""
    from scidl.train.checkpoint import resolve_format

    fmt = resolve_format(cfg.checkpoint.format, cfg.parallel.shard)
    if cfg.checkpoint.format == "torch" and cfg.parallel.shard != "none":
        raise ConfigError(f"checkpoint.format=torch does not apply with parallel.shard="
                          f"{cfg.parallel.shard} (sharded state goes through dcp); use auto")
    if fmt == "dcp" and cfg.parallel.pipeline_stages > 1:
        raise ConfigError("checkpoint.format=dcp does not apply with parallel.pipeline_stages > 1 "
                          "(each stage keeps its own rank{r}.pt); use checkpoint.format=auto")
    if cfg.checkpoint.async_save and fmt != "dcp":
        raise ConfigError("checkpoint.async_save needs checkpoint.format=dcp (or parallel.shard)")


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
    single = launch.launcher == "single"
    _check_layout(cfg, world, world if single else launch.local_world_size)
    check_loggers(cfg)
    check_run_dir(cfg, resume)


def check_resume_world(plan: Sequence[Any], world: int, pipeline_stages: int = 1) -> None:
    """The newest resumable checkpoint can be loaded by ``world`` processes (checked before
    any process starts, so a mistaken ``--nproc`` leaves the run folder untouched): the
    same count, or any count when its model and optimizer state reshard (a ``dcp`` or
    replicated checkpoint, and no pipeline stages now)."""
    from scidl.train.checkpoint import state_layout

    for good in plan[:1]:
        try:
            shared = good.load("state.pt")
            written_by = shared["progress"]["world_size"]
            layout = state_layout(shared)
        except Exception:  # noqa: BLE001 - unloadable: the training processes fall back
            return
        if written_by != world and (layout == "per_rank" or pipeline_stages > 1):
            why = "its pipeline stages" if layout == "per_rank" else "pipeline stages"
            raise ConfigError(f"checkpoint {good.path} was written by {written_by} processes and "
                              f"{why} do not reshard; resume with --nproc {written_by}")
