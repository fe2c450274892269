"""Where this process came from: single process, torchrun, Slurm (srun) or MPI.

:func:`detect_launch` reads the environment (it never writes it) and returns a
:class:`LaunchEnv` with rank, world size, local rank and the rendezvous address. It is
called by the trainer at start-up, never at import time.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Launcher = Literal["single", "torchrun", "slurm", "mpi"]
DEFAULT_PORT = 29500


class LaunchError(RuntimeError):
    """The environment describes an inconsistent launch."""


@dataclass(frozen=True)
class LaunchEnv:
    """The process layout as seen by this process."""

    launcher: Launcher
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = DEFAULT_PORT

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def export(self) -> dict[str, str]:
        """The variables ``init_process_group(init_method='env://')`` reads."""
        return {
            "RANK": str(self.rank),
            "WORLD_SIZE": str(self.world_size),
            "LOCAL_RANK": str(self.local_rank),
            "LOCAL_WORLD_SIZE": str(self.local_world_size),
            "MASTER_ADDR": self.master_addr,
            "MASTER_PORT": str(self.master_port),
        }


def first_slurm_host(nodelist: str) -> str:
    """First host of a Slurm node list: ``"gpu[003-005,007],cpu1"`` → ``"gpu003"``."""
    nodelist = nodelist.strip()
    m = re.match(r"^([^\[,]+)(?:\[([^\]]+)\])?", nodelist)
    if not m:
        raise LaunchError(f"cannot parse SLURM_NODELIST {nodelist!r}")
    prefix, ranges = m.group(1), m.group(2)
    if not ranges:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    return f"{prefix}{first}"


def slurm_port(job_id: str | None) -> int:
    """A rendezvous port derived from the job id, so all tasks agree without talking."""
    if not job_id or not job_id.isdigit():
        return DEFAULT_PORT
    return 15000 + int(job_id) % 20000


def _int(env: Mapping[str, str], key: str) -> int:
    if key not in env:
        raise LaunchError(f"environment variable {key} is not set, but other launcher "
                          "variables are (an incomplete launch environment)")
    try:
        return int(env[key])
    except ValueError:
        raise LaunchError(f"environment variable {key}={env[key]!r} is not an integer") from None


def _from_torchrun(env: Mapping[str, str]) -> LaunchEnv:
    world = _int(env, "WORLD_SIZE")
    return LaunchEnv(
        "torchrun",
        rank=_int(env, "RANK"),
        world_size=world,
        local_rank=_int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else 0,
        local_world_size=_int(env, "LOCAL_WORLD_SIZE") if "LOCAL_WORLD_SIZE" in env else world,
        master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
        master_port=_int(env, "MASTER_PORT") if "MASTER_PORT" in env else DEFAULT_PORT,
    )


def slurm_tasks_per_node(env: Mapping[str, str]) -> int | None:
    """Tasks on each node: ``SLURM_NTASKS_PER_NODE``, else ``SLURM_TASKS_PER_NODE`` when
    every node has the same count (``"2(x3)"`` → 2); None when unknown or uneven."""
    if env.get("SLURM_NTASKS_PER_NODE", "").isdigit():
        return int(env["SLURM_NTASKS_PER_NODE"])
    counts = set(re.findall(r"(\d+)(?:\(x\d+\))?", env.get("SLURM_TASKS_PER_NODE", "")))
    return int(counts.pop()) if len(counts) == 1 else None


def _from_slurm(env: Mapping[str, str]) -> LaunchEnv:
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get(
        "SLURM_NODELIST", "127.0.0.1"
    )
    world = _int(env, "SLURM_NTASKS")
    return LaunchEnv(
        "slurm",
        rank=_int(env, "SLURM_PROCID"),
        world_size=world,
        local_rank=_int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0,
        local_world_size=slurm_tasks_per_node(env) or world,
        master_addr=env.get("MASTER_ADDR") or first_slurm_host(nodelist),
        master_port=_int(env, "MASTER_PORT") if "MASTER_PORT" in env else slurm_port(
            env.get("SLURM_JOB_ID")
        ),
    )


def _from_mpi(env: Mapping[str, str]) -> LaunchEnv:
    if "OMPI_COMM_WORLD_RANK" in env:
        rank, world = _int(env, "OMPI_COMM_WORLD_RANK"), _int(env, "OMPI_COMM_WORLD_SIZE")
        local = _int(env, "OMPI_COMM_WORLD_LOCAL_RANK") if "OMPI_COMM_WORLD_LOCAL_RANK" in env else 0
        lsize = _int(env, "OMPI_COMM_WORLD_LOCAL_SIZE") if "OMPI_COMM_WORLD_LOCAL_SIZE" in env else world
    else:  # MPICH / Intel MPI (Hydra): PMI_RANK / PMI_SIZE, MPI_LOCALRANKID
        rank, world = _int(env, "PMI_RANK"), _int(env, "PMI_SIZE")
        local = _int(env, "MPI_LOCALRANKID") if "MPI_LOCALRANKID" in env else 0
        lsize = _int(env, "MPI_LOCALNRANKS") if "MPI_LOCALNRANKS" in env else world
    if "MASTER_ADDR" not in env and world > 1:
        raise LaunchError(
            "launched by MPI with several ranks but MASTER_ADDR is not set: export "
            "MASTER_ADDR=<host of rank 0> (and optionally MASTER_PORT) in the job script"
        )
    return LaunchEnv(
        "mpi",
        rank=rank,
        world_size=world,
        local_rank=local,
        local_world_size=lsize,
        master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
        master_port=_int(env, "MASTER_PORT") if "MASTER_PORT" in env else DEFAULT_PORT,
    )


def detect_launch(env: Mapping[str, str] | None = None) -> LaunchEnv:
    """Detect the launcher from environment variables (``os.environ`` by default).

    Precedence: torchrun (``RANK``+``WORLD_SIZE``, also set by ``scidl``'s own launcher) →
    Slurm under ``srun`` (``SLURM_PROCID``+``SLURM_NTASKS``) → MPI
    (``OMPI_COMM_WORLD_*`` or ``PMI_RANK``) → single process.
    A Slurm allocation without ``srun`` (``SLURM_JOB_ID`` but no ``SLURM_PROCID``) with
    several tasks requested gets a warning: only one process will train.
    """
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        launch = _from_torchrun(env)
    elif "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        launch = _from_slurm(env)
    elif "OMPI_COMM_WORLD_RANK" in env or "PMI_RANK" in env:
        launch = _from_mpi(env)
    else:
        if env.get("SLURM_JOB_ID") and env.get("SLURM_NTASKS", "1") not in ("", "1"):
            warnings.warn(
                f"inside a Slurm allocation of {env['SLURM_NTASKS']} tasks but not started by "
                "srun: training on 1 process. Use `srun python -m scidl train ...`.",
                stacklevel=2,
            )
        launch = LaunchEnv("single")
    if not 0 <= launch.rank < launch.world_size:
        raise LaunchError(
            f"{launch.launcher}: rank {launch.rank} is outside world size {launch.world_size}"
        )
    if not 0 <= launch.local_rank < max(launch.local_world_size, 1):
        raise LaunchError(
            f"{launch.launcher}: local rank {launch.local_rank} outside local world "
            f"{launch.local_world_size}"
        )
    return launch
