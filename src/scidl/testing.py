"""Helpers for tests that spawn gloo processes on CPU (importable by users' tests too).

``run_distributed(fn, world_size, *args)`` starts ``world_size`` processes, initialises a
gloo process group in each (``torch.set_num_threads(1)``), calls ``fn(rank, world_size,
*args)`` and returns the per-rank return values (which must be picklable). A process
that fails raises in the caller with its traceback; the whole call is bounded by
``timeout`` seconds, after which every child is killed.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import queue
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from scidl.runtime.ports import free_port


def _child(
    fn: Callable[..., Any], rank: int, world: int, port: int, args: tuple[Any, ...], q: Any
) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
    )
    try:
        dist.init_process_group(
            "gloo", rank=rank, world_size=world, timeout=timedelta(seconds=120)
        )
        out = fn(rank, world, *args)
        # Serialise here: tensors sent through a queue live in shared memory that vanishes
        # when this process exits, possibly before the parent has read them.
        buf = io.BytesIO()
        torch.save(out, buf)
        q.put((rank, True, buf.getvalue()))
    except BaseException:  # report every failure to the parent
        q.put((rank, False, traceback.format_exc()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_distributed(
    fn: Callable[..., Any], world_size: int, *args: Any, timeout: float = 180.0
) -> list[Any]:
    """Run ``fn(rank, world_size, *args)`` on ``world_size`` gloo processes; return results."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(target=_child, args=(fn, r, world_size, port, args, q), daemon=True)
        for r in range(world_size)
    ]
    for p in procs:
        p.start()
    results: dict[int, Any] = {}
    errors: list[str] = []
    try:
        for _ in range(world_size):
            try:
                rank, ok, out = q.get(timeout=timeout)
            except queue.Empty as e:  # a rank hung or died silently
                dead = [r for r, p in enumerate(procs) if not p.is_alive() and r not in results]
                raise TimeoutError(
                    f"distributed run did not finish within {timeout}s "
                    f"(ranks done: {sorted(results)}; exited without a result: {dead})"
                ) from e
            if ok:
                import torch

                # our own child's bytes (trusted), so full unpickling is fine here
                results[rank] = torch.load(io.BytesIO(out), weights_only=False)
            else:
                errors.append(f"rank {rank} failed:\n{out}")
                break
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
    if errors:
        raise RuntimeError("\n".join(errors))
    return [results[r] for r in range(world_size)]
