"""Start N local training processes under the torch elastic agent.

:func:`elastic_run` wraps :func:`torch.distributed.launcher.api.elastic_launch` for one
node: a c10d rendezvous on a free loopback port and up to ``max_restarts`` restarts of
the whole group after a failure.

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

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from scidl.runtime.ports import free_port

NO_SHARED_STORE = "TORCH_DISABLE_SHARE_RDZV_TCP_STORE"
SHUTDOWN_TIMEOUT_S = 10  # SIGTERM → SIGKILL grace for the workers of a failed attempt


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


def launch_config(nproc: int, max_restarts: int) -> Any:
    """The agent's settings for ``nproc`` processes on this machine."""
    from torch.distributed.launcher.api import LaunchConfig

    return LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc,
        run_id=f"scidl-{uuid.uuid4().hex[:8]}", rdzv_backend="c10d",
        rdzv_endpoint=f"127.0.0.1:{free_port()}", max_restarts=max_restarts,
        monitor_interval=0.1, start_method="spawn", shutdown_timeout=SHUTDOWN_TIMEOUT_S,
    )


def elastic_run(fn: Callable[..., Any], args: tuple[Any, ...], nproc: int,
                max_restarts: int) -> dict[int, Any]:
    """Run ``fn(*args)`` on ``nproc`` local processes; returns ``{rank: result}``.

    Every attempt (the first and each restart) forms its process group on a store of
    its own (see the module docstring).
    """
    from torch.distributed.launcher.api import elastic_launch

    with _env(NO_SHARED_STORE, "1"):
        return elastic_launch(launch_config(nproc, max_restarts), fn)(*args)
