"""Process-group set-up and tear-down for one training process.

:func:`distributed_context` is a context manager: it initialises the default process
group for the detected launch (gloo on CPU, NCCL on CUDA), yields a :class:`DistContext`
and always destroys the group on exit, so nothing leaks between runs in one process.
A single process gets a one-member gloo group on an in-memory store, so every code
path (DDP, collectives, accounting) is the same at any scale.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from scidl.runtime.env import LaunchEnv, detect_launch


@dataclass(frozen=True)
class DistContext:
    """What a training process knows about its place in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str
    launcher: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's module inside data-parallel wrappers (``DistributedDataParallel``,
    ``DataParallel``, nested or not); any other module is returned as it is."""
    while isinstance(model, DistributedDataParallel | nn.DataParallel):
        model = model.module
    return model


def pick_device(device: str, local_rank: int) -> torch.device:
    """``auto``: CUDA (this process's local GPU) when available, else CPU."""
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("dist.device=cuda but no CUDA device is available")
        idx = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(idx)
        return torch.device("cuda", idx)
    return torch.device("cpu")


def pick_backend(backend: str, device: torch.device) -> str:
    """``auto``: NCCL for CUDA tensors, gloo for CPU."""
    if backend != "auto":
        if backend == "nccl" and device.type != "cuda":
            raise RuntimeError("dist.backend=nccl needs dist.device=cuda")
        return backend
    return "nccl" if device.type == "cuda" else "gloo"


def shared_store_warning(env: Mapping[str, str]) -> str | None:
    """A warning when an outer elastic agent restarts workers on one shared store.

    torchrun (torch >= 2.4) shares its rendezvous store with every attempt without a
    per-attempt prefix, so a restarted group can read a dead attempt's keys and fail or
    hang. ``scidl train --nproc`` turns the sharing off itself; under torchrun it is the
    user's switch.
    """
    restarts = env.get("TORCHELASTIC_MAX_RESTARTS", "0")
    if env.get("TORCHELASTIC_USE_AGENT_STORE") == "True" and restarts.isdigit() and int(restarts) > 0:
        return ("torchrun --max-restarts shares one store across restart attempts, so a restart "
                "can fail or hang; export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 before torchrun")
    return None


def init_process_group(launch: LaunchEnv, backend: str, timeout_s: float = 600.0) -> None:
    """Initialise the default process group for ``launch`` (one process: a one-member
    group on an in-memory store; otherwise ``env://`` from the launcher's variables)."""
    timeout = timedelta(seconds=timeout_s)
    if launch.world_size == 1 and launch.launcher == "single":
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1,
                                timeout=timeout)
        return
    for k, v in launch.export().items():
        os.environ.setdefault(k, v)
    msg = shared_store_warning(os.environ)
    if msg and launch.rank == 0:
        warnings.warn(msg, stacklevel=4)
    # env://: under the elastic agent this follows TORCHELASTIC_USE_AGENT_STORE.
    # SciDL's own launcher turns store sharing off (scidl.runtime.launch), so each
    # attempt's rank 0 hosts a fresh store on the port of that rendezvous round
    # and a restarted group never sees a dead attempt's keys.
    dist.init_process_group(backend, init_method="env://", rank=launch.rank,
                            world_size=launch.world_size, timeout=timeout)


@contextmanager
def distributed_context(
    device: str = "auto",
    backend: str = "auto",
    timeout_s: float = 600.0,
    launch: LaunchEnv | None = None,
) -> Iterator[DistContext]:
    """Initialise the default process group for this process; destroy it on exit."""
    launch = launch or detect_launch()
    dev = pick_device(device, launch.local_rank)
    be = pick_backend(backend, dev)
    owns_group = not dist.is_initialized()
    if owns_group:
        init_process_group(launch, be, timeout_s)
    try:
        yield DistContext(
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            local_rank=launch.local_rank,
            device=dev,
            backend=be,
            launcher=launch.launcher,
        )
    finally:
        if owns_group and dist.is_initialized():
            dist.destroy_process_group()
