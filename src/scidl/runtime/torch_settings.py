"""Process-wide torch settings of a run (thread count, deterministic algorithms), undone after it.

A run started in the caller's interpreter (``scidl.run`` without ``--nproc``) must leave
the interpreter as it found it: a notebook that trains once keeps its own thread count
and its own determinism setting for what it does next.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch


@dataclass(frozen=True)
class ThreadChoice:
    """Torch threads for one process and why: ``line`` is what the run log prints."""

    threads: int
    line: str


def choose_threads(configured: int | None, local_procs: int, usable_cores: int,
                   total_cores: int | None = None, load: float | None = None,
                   own_cores: bool = False) -> ThreadChoice:
    """Torch threads for one of ``local_procs`` processes on this machine.

    ``configured`` (``dist.threads_per_proc``) wins. Otherwise the cores this process may
    run on (``usable_cores``, its CPU affinity) are shared among the local processes, and
    fewer are used when the machine is busy: with a 1-minute ``load`` average over
    ``total_cores`` cores, only the idle ones (``total_cores - load``) are shared.
    ``own_cores``: the launcher already gave this process cores of its own (Slurm's
    ``--cpus-per-task`` binding), so they are not divided again. Never below 1.
    """
    if configured:
        return ThreadChoice(configured, f"threads per process: {configured} "
                                        "(dist.threads_per_proc)")
    procs = max(1, local_procs)
    usable = max(1, usable_cores)
    idle = float(usable * (procs if own_cores else 1))  # no load figure: all idle
    if load is not None and total_cores:
        idle = max(1.0, total_cores - load)
    if own_cores:  # this process's share of the idle cores, to the nearest whole core
        threads = min(usable, round(idle / procs))
    else:  # whole cores, never more threads than cores among the processes
        threads = min(usable, round(idle)) // procs
    threads = max(1, threads)
    why = (f"{usable} usable core{'s' if usable > 1 else ''}"
           f"{' of its own' if own_cores else ''}, {procs} process{'es' if procs > 1 else ''}")
    if load is not None:
        why += f", load {load:.1f}"
    return ThreadChoice(threads, f"threads per process: {threads} ({why})")


def _affinity(pid: int) -> set[int] | None:
    try:
        return set(os.sched_getaffinity(pid))
    except (AttributeError, OSError):  # macOS, Windows: no affinity API; parent gone
        return None


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    mine = _affinity(0)
    return len(mine) if mine else os.cpu_count() or 1


def has_own_cores() -> bool:
    """Whether this process was bound to fewer cores than its parent (a launcher such as
    ``srun`` pinning each task), rather than sharing its parent's cores with siblings."""
    mine, parent = _affinity(0), _affinity(os.getppid())
    return bool(mine and parent and mine < parent)


def load_average() -> float | None:
    """The machine's 1-minute load average (None where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def threads_for_this_machine(configured: int | None, local_procs: int) -> ThreadChoice:
    """:func:`choose_threads` with this process's affinity and the machine's load."""
    if configured:
        return choose_threads(configured, local_procs, 1)
    return choose_threads(None, local_procs, usable_cores(), os.cpu_count(), load_average(),
                          own_cores=has_own_cores())


BindSetting = bool | Literal["auto"]


def choose_cores(setting: BindSetting, local_rank: int, local_procs: int, threads: int,
                 usable: Iterable[int], own_cores: bool = False) -> tuple[int, ...] | None:
    """The cores local rank ``local_rank`` of ``local_procs`` binds to, or None (left to
    the OS scheduler).

    Rank r takes the r-th run of ``threads`` cores of ``usable`` (in ascending order), so
    the compute of the ranks of one machine never shares a core and stays where its cache
    is (:func:`bound_to` leaves the communication threads free). ``auto`` binds only when the ranks'
    threads fill the usable cores exactly (a machine the job has to itself: when a busy
    machine made the thread count smaller, binding to the first cores could put the job
    on cores other jobs use); ``True`` binds whenever there are several local processes,
    wrapping round the cores when they are fewer. Never a single process, and never one
    its launcher already gave cores of its own (``own_cores``, e.g. Slurm's binding).
    """
    cores = sorted(set(usable))
    if setting is False or local_procs < 2 or own_cores or not cores:
        return None
    if setting == "auto" and local_procs * threads != len(cores):
        return None
    start = local_rank * threads
    return tuple(sorted({cores[(start + i) % len(cores)] for i in range(max(1, threads))}))


def binding_line(setting: BindSetting, local_procs: int, cores: tuple[int, ...] | None) -> str:
    """What the run log says about core binding (printed by rank 0 for its own cores)."""
    if cores is None:
        return f"cores: left to the OS (dist.bind_cores={str(setting).lower()})"
    n = len(cores)
    return (f"cores: each of {local_procs} processes bound to {n} core{'s' if n > 1 else ''} "
            f"of its own (rank 0: {', '.join(map(str, cores))})")


def cores_for_this_machine(setting: BindSetting, local_rank: int, local_procs: int,
                           threads: int) -> tuple[int, ...] | None:
    """:func:`choose_cores` with this process's affinity (None where the OS has none)."""
    mine = _affinity(0)
    if not mine:
        return None
    return choose_cores(setting, local_rank, local_procs, threads, mine, own_cores=has_own_cores())


@contextmanager
def bound_to(cores: Sequence[int] | None) -> Iterator[None]:
    """Run the body with the calling thread bound to ``cores`` (None: unchanged); the
    thread's affinity is restored afterwards.

    Only the calling thread: torch's compute threads, started later by it, inherit the
    binding, while threads that already exist keep theirs. Call it once the process group
    is up, so its communication threads stay free to run on any core (bound to their
    rank's core as well, a rank's incoming gradients wait behind its own compute; see
    docs/benchmarks.md).
    """
    old = _affinity(0) if cores else None
    if cores and old is not None:  # (no affinity API: nothing to bind)
        os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        if old is not None:
            os.sched_setaffinity(0, old)


@contextmanager
def torch_settings(threads: int | None, deterministic: bool) -> Iterator[None]:
    """Set the thread count (None: unchanged) and, if asked, deterministic algorithms for
    the body; restore the caller's settings afterwards, also when the body raises."""
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        if threads:
            torch.set_num_threads(threads)
        if deterministic:
            torch.use_deterministic_algorithms(True)
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn_only)
