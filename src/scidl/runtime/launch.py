"""Start N local processes: under the torch elastic agent, or as a plain process group.

Two launchers for one machine, both product code:

* :func:`run_distributed` starts ``world_size`` spawned processes, sets one torch thread
  in each and initialises its process group exactly as a training worker does
  (``scidl.runtime.dist.distributed_context`` on a torchrun-style environment; gloo on
  CPU by default, NCCL on the local GPUs with ``backend="nccl"``), calls
  ``fn(rank, world_size, *args)`` and returns the per-rank results. No restarts; a
  failing rank raises in the caller with its traceback; the call is bounded by
  ``timeout``. The collectives benchmark, the per-label GAN and the tests use it.
* :func:`elastic_run` (``scidl train --nproc``) wraps ``elastic_launch`` of
  ``torch.distributed.launcher.api``: on one node, a c10d rendezvous on a free loopback
  port; on several nodes (a :class:`NodeSpec`: ``--nnodes``, ``--node-rank``,
  ``--rdzv-endpoint``, as torchrun takes them, or from ``PET_*``/Slurm variables, see
  :func:`node_spec`), one such agent per node meeting at the head node's endpoint. Up to
  ``max_restarts`` restarts of the whole group after a failure; its workers set up their
  process group with the same ``distributed_context``.

Why the store is not shared. Since torch 2.4 the c10d rendezvous hands its workers one
TCP store that outlives every restart (``TORCHELASTIC_USE_AGENT_STORE=True``): the
rendezvous creates it once, in round 0, and each restarted attempt's ``env://``
initialisation connects to the same store with the same keys (``default_pg/...``, gloo's
per-rank addresses, barrier counters), without a per-attempt prefix. A restarted group
can then read the dead attempt's addresses (gloo ``connectFullMesh ... Connection
refused``) or a stale barrier count (a silent hang). With sharing turned off, every
rendezvous round publishes a fresh master port and the new attempt's rank 0 hosts a new,
empty store, so no key of a dead attempt can be seen. Torch's only switch for this is the
``TORCH_DISABLE_SHARE_RDZV_TCP_STORE`` variable, read by the agent (in this process)
when it forms each round and starts the workers; :func:`elastic_run` sets it for the
duration of the launch and restores the previous value afterwards, so users set nothing.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import queue
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from scidl.runtime.env import LaunchEnv, LaunchError, first_slurm_host, slurm_port
from scidl.runtime.ports import free_port

NO_SHARED_STORE = "TORCH_DISABLE_SHARE_RDZV_TCP_STORE"
SHUTDOWN_TIMEOUT_S = 10  # SIGTERM → SIGKILL grace for the workers of a failed attempt
GROUP_TIMEOUT_S = 120  # collective timeout inside run_distributed's process groups


@contextmanager
def _env(key: str, value: str) -> Iterator[None]:
    """Set ``os.environ[key]`` for the block; restore the previous state afterwards."""
    old = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


RDZV_PORT = 29400  # torchrun's default rendezvous port


@dataclass(frozen=True)
class NodeSpec:
    """Where this node launcher sits in a multi-node job (torchrun's ``--nnodes``,
    ``--node-rank``, ``--rdzv-endpoint``, ``--rdzv-id`` and ``--local-addr``)."""

    nnodes: int = 1
    node_rank: int | None = None  # None: torch decides which node hosts the rendezvous
    rdzv_endpoint: str | None = None
    rdzv_id: str | None = None
    local_addr: str | None = None

    @property
    def multi(self) -> bool:
        return self.nnodes > 1


def _slurm_nodes(env: Mapping[str, str]) -> NodeSpec | None:
    """One task per node under ``srun`` (``SLURM_NTASKS == SLURM_NNODES > 1``): each task
    is a node launcher; the head is the first host of the step's node list."""
    nodes, tasks = env.get("SLURM_NNODES", ""), env.get("SLURM_NTASKS", "")
    if not (nodes.isdigit() and int(nodes) > 1 and tasks == nodes and "SLURM_NODEID" in env):
        return None
    nodelist = (env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
                or env.get("SLURM_NODELIST", ""))
    job = env.get("SLURM_JOB_ID")
    return NodeSpec(int(nodes), int(env["SLURM_NODEID"]),
                    f"{first_slurm_host(nodelist)}:{slurm_port(job)}", f"slurm-{job or 0}")


def node_spec(nnodes: int | None = None, node_rank: int | None = None,
              rdzv_endpoint: str | None = None, rdzv_id: str | None = None,
              local_addr: str | None = None, nproc: int = 1,
              env: Mapping[str, str] | None = None) -> NodeSpec:
    """This node's place in the job: the arguments given; else torchrun's ``PET_NNODES``,
    ``PET_NODE_RANK``, ``PET_RDZV_ENDPOINT``, ``PET_RDZV_ID``, ``PET_LOCAL_ADDR``; else, for
    ``nproc`` > 1 under ``srun`` with one task per node, Slurm's ``SLURM_NNODES``,
    ``SLURM_NODEID`` and the first host of the node list; else one node.
    """
    env = os.environ if env is None else env

    def pick(value: Any, key: str) -> Any:
        return value if value is not None else env.get(key) or None

    nnodes = pick(nnodes, "PET_NNODES")
    if nnodes is None:
        slurm = _slurm_nodes(env) if nproc > 1 else None
        return slurm or NodeSpec()
    try:
        rank = pick(node_rank, "PET_NODE_RANK")
        spec = NodeSpec(int(nnodes), None if rank is None else int(rank),
                        pick(rdzv_endpoint, "PET_RDZV_ENDPOINT"), pick(rdzv_id, "PET_RDZV_ID"),
                        pick(local_addr, "PET_LOCAL_ADDR"))
    except ValueError as e:
        raise LaunchError(f"--nnodes/--node-rank must be integers ({e})") from None
    if spec.nnodes < 1 or not 0 <= (spec.node_rank or 0) < spec.nnodes:
        raise LaunchError(f"--node-rank {spec.node_rank} must lie in 0..{spec.nnodes - 1} "
                          f"(--nnodes {spec.nnodes})")
    if spec.multi and not spec.rdzv_endpoint:
        raise LaunchError(f"--nnodes {spec.nnodes} needs --rdzv-endpoint HOST[:PORT] (the "
                          "head node, where every node launcher meets)")
    return spec


def launch_config(nproc: int, max_restarts: int, nodes: NodeSpec | None = None) -> Any:
    """The agent's settings for ``nproc`` processes on this machine (one node), or on
    this node of ``nodes`` (every node's agent meets at ``nodes.rdzv_endpoint``; the head
    node, node rank 0, hosts the rendezvous store; ranks are ordered by node address)."""
    from torch.distributed.launcher.api import LaunchConfig

    if nodes is None or not nodes.multi:
        return LaunchConfig(
            min_nodes=1, max_nodes=1, nproc_per_node=nproc,
            run_id=f"scidl-{uuid.uuid4().hex[:8]}", rdzv_backend="c10d",
            rdzv_endpoint=f"127.0.0.1:{free_port()}", max_restarts=max_restarts,
            monitor_interval=0.1, start_method="spawn", shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        )
    endpoint = str(nodes.rdzv_endpoint)
    if ":" not in endpoint:
        endpoint = f"{endpoint}:{RDZV_PORT}"
    return LaunchConfig(
        min_nodes=nodes.nnodes, max_nodes=nodes.nnodes, nproc_per_node=nproc,
        run_id=nodes.rdzv_id or "scidl", rdzv_backend="c10d", rdzv_endpoint=endpoint,
        rdzv_configs={} if nodes.node_rank is None else {"is_host": nodes.node_rank == 0},
        max_restarts=max_restarts,
        monitor_interval=0.1, start_method="spawn", shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        local_addr=nodes.local_addr,
    )


def elastic_run(fn: Callable[..., Any], args: tuple[Any, ...], nproc: int,
                max_restarts: int, nodes: NodeSpec | None = None) -> dict[int, Any]:
    """Run ``fn(*args)`` on ``nproc`` local processes (of ``nodes``: this node's share of
    a multi-node job); returns ``{global rank: result}`` of this node's processes.

    Every attempt (the first and each restart) forms its process group on a store of
    its own (see the module docstring).
    """
    from torch.distributed.launcher.api import elastic_launch

    with _env(NO_SHARED_STORE, "1"):
        return elastic_launch(launch_config(nproc, max_restarts, nodes), fn)(*args)


# ----------------------------------------------------------------------------- plain group


def local_env(rank: int, world: int, port: int) -> LaunchEnv:
    """The launch layout of ``rank`` in a one-machine group on ``port`` (the variables
    torchrun would set; a trainer started inside sees an ordinary multi-process launch)."""
    return LaunchEnv("torchrun", rank=rank, world_size=world, local_rank=rank,
                     local_world_size=world, master_addr="127.0.0.1", master_port=port)


def _child(fn: Callable[..., Any], rank: int, world: int, port: int, backend: str,
           args: tuple[Any, ...], q: Any, bind: bool | str = "auto") -> None:
    """One rank: the process-group set-up of a training worker, then ``fn``."""
    import torch

    from scidl.runtime.dist import distributed_context
    from scidl.runtime.torch_settings import bound_to, cores_for_this_machine

    torch.set_num_threads(1)
    cores = cores_for_this_machine(bind, rank, world, 1)  # type: ignore[arg-type]
    launch = local_env(rank, world, port)
    os.environ.update(launch.export())
    device = "cuda" if backend == "nccl" else "cpu"
    try:
        with distributed_context(device, backend, GROUP_TIMEOUT_S, launch=launch), bound_to(cores):
            out = fn(rank, world, *args)
        # Serialise here: tensors sent through a queue live in shared memory that vanishes
        # when this process exits, possibly before the parent has read them.
        buf = io.BytesIO()
        torch.save(out, buf)
        q.put((rank, True, buf.getvalue()))
        code = 0
    except BaseException:  # report every failure to the parent
        q.put((rank, False, traceback.format_exc()))
        code = 1
    _exit_now(q, code)


def _exit_now(q: Any, code: int) -> None:
    """End a :func:`run_distributed` child once its result is in the pipe: atexit
    handlers and stream flushes run, the interpreter's teardown does not (its collection
    of torch's objects costs about a second of CPU per process, and the parent waits for
    it in its join)."""
    import atexit

    q.close()
    q.join_thread()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _collect(q: Any, procs: list[Any], timeout: float, poll_s: float = 1.0) -> dict[int, Any]:
    """Every rank's result from ``q``; RuntimeError with the first failure's traceback.

    TimeoutError when no result arrives within ``timeout`` seconds, and as soon as every
    rank still owing one has exited without it (a child killed, or one that died before
    it could report): waiting out the timeout then would only delay the error."""
    import torch

    results: dict[int, Any] = {}
    deadline = time.monotonic() + timeout
    gone_since: float | None = None
    while len(results) < len(procs):
        try:
            rank, ok, out = q.get(timeout=max(0.0, min(poll_s, deadline - time.monotonic())))
        except queue.Empty as e:  # a rank hung or died silently
            dead = [r for r, p in enumerate(procs) if not p.is_alive() and r not in results]
            owing = [r for r in range(len(procs)) if r not in results]
            if dead == owing:  # give a result already in the pipe one more poll to arrive
                gone_since = gone_since if gone_since is not None else time.monotonic()
            if time.monotonic() >= deadline or (
                    gone_since is not None and time.monotonic() - gone_since > 2 * poll_s):
                what = f"within {timeout}s" if time.monotonic() >= deadline else \
                    "(every rank owing a result exited)"
                raise TimeoutError(
                    f"distributed run did not finish {what} "
                    f"(ranks done: {sorted(results)}; exited without a result: {dead})"
                ) from e
            continue
        if not ok:
            raise RuntimeError(f"rank {rank} failed:\n{out}")
        # our own child's bytes (trusted), so full unpickling is fine here
        results[rank] = torch.load(io.BytesIO(out), weights_only=False)
    return results


def run_distributed(fn: Callable[..., Any], world_size: int, *args: Any,
                    timeout: float = 180.0, backend: str = "gloo",
                    bind_cores: bool | str = "auto") -> list[Any]:
    """Run ``fn(rank, world_size, *args)`` on ``world_size`` local processes; return results.

    Each process is spawned, sets one torch thread, joins a ``backend`` process group on
    a free loopback port and returns ``fn``'s (picklable) result, listed by rank. Each
    process's compute thread is bound to a core of its own per ``bind_cores`` (the values
    of ``dist.bind_cores``; ``auto``: when there are as many processes as usable cores). A rank
    that raises makes this raise ``RuntimeError`` with its traceback; no result from some
    rank within ``timeout`` seconds raises ``TimeoutError``; every child is killed then.
    ``fn`` must be importable (a module-level function).
    """
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_child, args=(fn, r, world_size, port, backend, args, q, bind_cores),
                         daemon=True) for r in range(world_size)]
    for p in procs:
        p.start()
    try:
        results = _collect(q, procs, timeout)
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
    return [results[r] for r in range(world_size)]
