"""Bytes and seconds spent in collectives, per step and per rank.

Byte counts are the payload bytes one rank really sends (and receives) with the
collective algorithm of the process group's backend (``n`` bytes of payload, ``p`` ranks,
counted per rank):

=========================================  ===================  ==========================
collective                                 nccl, mpi, …         gloo (measured)
=========================================  ===================  ==========================
allreduce of ``n`` bytes                   2(p-1)/p·n           2(p-1)/p·n
reduce-scatter of a total of ``n`` bytes   (p-1)/p·n            2(p-1)/p·n
allgather of ``b`` bytes from every rank   (p-1)·b              (p-1)·b
all-to-all of ``n`` bytes (even split)     (p-1)/p·n            (p-1)/p·n
broadcast of ``b`` bytes                   nccl: b on all but   b per child in a binomial
                                           the ring's last;     tree rooted at the source
                                           others: root (p-1)·b (root: ⌈log2 p⌉·b)
=========================================  ===================  ==========================

nccl runs the bandwidth-optimal ring algorithms (the bus-bandwidth factors of nccl-tests).
gloo's reduce-scatter runs a whole allreduce and keeps this rank's chunk, so it sends as
many bytes as an allreduce; its broadcast is a binomial tree. Both were measured from the
process's socket writes (``wchar`` of ``/proc/self/io``) on 2 and 4 processes:
``tests/comm/test_comm_wire_bytes_integration.py`` checks every gloo formula above against
the bytes really written (a 48-byte header per message aside). Receives: a broadcast's
non-root ranks receive ``b``; for the other collectives received = sent.

``seconds`` is the time from issuing a collective to its completion, summed over
collectives (overlapping collectives are each counted). ``exposed_s`` is the
communication time the training loop actually waited for: the time the backward pass
was blocked inside communication hooks plus the time between the last hook returning
and the last collective of the step completing.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, TypeVar

Num = TypeVar("Num", int, float)

# Backends whose reduce-scatter is an allreduce on the wire (measured, see the module doc).
REDUCE_SCATTER_AS_ALLREDUCE = frozenset({"gloo"})


def ring_steps(world: int) -> int:
    """Messages each rank sends in one pass around a ring of ``world`` ranks: p-1."""
    return max(world - 1, 0)


def ring_allreduce_bytes(nbytes: Num, world: int, backend: str | None = None) -> Num:
    """Bytes one rank sends (and receives) in an allreduce of ``nbytes``: 2(p-1)/p·n.

    The one place SciDL writes this formula: the byte counters, the cost model and the
    collective benchmark's fit all use it. The same on every backend (ring, or gloo's
    ring/halving-doubling). Integer ``nbytes`` gives whole bytes (rounded down).
    """
    sent = 2 * ring_steps(world) * nbytes
    if world <= 1:
        return sent
    return sent // world if isinstance(sent, int) else sent / world


def ring_pass_bytes(nbytes: float, world: int) -> float:
    """(p-1)/p·n: the bytes one ring pass moves per rank (a reduce-scatter of ``nbytes``
    in total, or an allgather producing ``nbytes``); half an allreduce."""
    return ring_allreduce_bytes(float(nbytes), world) / 2


def reduce_scatter_bytes(nbytes: Num, world: int, backend: str | None = None) -> Num:
    """Bytes one rank sends in a reduce-scatter of ``nbytes`` total on ``backend``.

    (p-1)/p·n for a ring reduce-scatter (nccl, and the default when ``backend`` is None);
    gloo sends an allreduce's 2(p-1)/p·n.
    """
    full = ring_allreduce_bytes(nbytes, world, backend)
    if backend in REDUCE_SCATTER_AS_ALLREDUCE:
        return full
    return full // 2 if isinstance(full, int) else full / 2


def allgather_bytes(block_bytes: Num, world: int, backend: str | None = None) -> Num:
    """Bytes one rank sends when every rank contributes ``block_bytes``: (p-1)·b (all backends)."""
    return ring_steps(world) * block_bytes


def alltoall_bytes(nbytes: Num, world: int, backend: str | None = None) -> Num:
    """Bytes one rank sends in an all-to-all of ``nbytes`` in all, spread evenly over the
    ``world`` destinations: (p-1)/p·n (its own block stays local; all backends)."""
    sent = ring_steps(world) * nbytes
    if world <= 1:
        return 0 * nbytes
    return sent // world if isinstance(sent, int) else sent / world


def broadcast_bytes(nbytes: int, world: int, rank: int, root: int = 0,
                    backend: str | None = None) -> int:
    """Bytes ``rank`` sends in a broadcast of ``nbytes`` from ``root`` (ranks of the group).

    gloo: a binomial tree, relative rank r sends to r + 2^k for every 2^k > r below p;
    nccl: a ring, every rank but the one before the root sends once; otherwise the root
    sends to each of the p-1 others.
    """
    if world <= 1:
        return 0
    rel = (rank - root) % world
    if backend == "gloo":
        children, step = 0, 1
        while step < world:
            if step > rel and rel + step < world:
                children += 1
            step *= 2
        return children * nbytes
    if backend == "nccl":
        return 0 if rel == world - 1 else nbytes
    return (world - 1) * nbytes if rel == 0 else 0


@dataclass
class CommCounters:
    """Running totals of one rank's collective traffic (thread-safe).

    ``record`` is called when a collective is issued (bytes) and ``add_seconds`` when it
    completes (from a communication thread), ``add_blocked``/``mark_*`` feed the exposed
    time. ``end_step`` closes one optimizer step.
    """

    bytes_sent: int = 0
    bytes_recv: int = 0
    seconds: float = 0.0
    exposed: float = 0.0
    calls: int = 0
    steps: int = 0
    by_op: dict[str, dict[str, float]] = field(default_factory=dict)
    _step: dict[str, float] = field(default_factory=dict)
    _blocked: float = 0.0
    _last_hook: float | None = None
    _last_done: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, op: str, sent: int, recv: int, seconds: float = 0.0, calls: int = 1) -> None:
        """Account ``calls`` collectives ``op`` moving ``sent``/``recv`` bytes in all (and
        their seconds)."""
        with self._lock:
            self._add(self._step, op, int(sent), int(recv), calls)
        if seconds:
            self.add_seconds(op, seconds)

    def _add(self, step: dict[str, float], op: str, sent: int, recv: int, calls: int) -> None:
        """Count ``calls`` collectives ``op`` into the totals and into ``step`` (under the
        lock)."""
        self.bytes_sent += sent
        self.bytes_recv += recv
        self.calls += calls
        step["bytes_sent"] = step.get("bytes_sent", 0) + sent
        step["bytes_recv"] = step.get("bytes_recv", 0) + recv
        step["calls"] = step.get("calls", 0) + calls
        o = self.by_op.setdefault(op, {"calls": 0, "bytes_sent": 0, "seconds": 0.0})
        o["calls"] += calls
        o["bytes_sent"] += sent

    def add_seconds(self, op: str, seconds: float) -> None:
        """Add the duration of one completed collective and note its completion time."""
        now = time.perf_counter()
        with self._lock:
            self.seconds += float(seconds)
            self._step["comm_s"] = self._step.get("comm_s", 0.0) + float(seconds)
            self.by_op.setdefault(op, {"calls": 0, "bytes_sent": 0, "seconds": 0.0})
            self.by_op[op]["seconds"] += float(seconds)
            if self._last_done is None or now > self._last_done:
                self._last_done = now

    def add_blocked(self, seconds: float) -> None:
        """The backward pass waited ``seconds`` for communication inside a hook."""
        with self._lock:
            self._blocked += float(seconds)

    def mark_hook_returned(self) -> None:
        """A communication hook returned (the compute thread moves on)."""
        with self._lock:
            self._last_hook = time.perf_counter()

    def end_step(self) -> dict[str, float]:
        """Close the current step and return its counters."""
        with self._lock:
            tail = 0.0
            if self._last_hook is not None and self._last_done is not None:
                tail = max(0.0, self._last_done - self._last_hook)
            exposed = self._blocked + tail
            step, self._step = self._step, {}
            step.setdefault("bytes_sent", 0)
            step.setdefault("bytes_recv", 0)
            step.setdefault("comm_s", 0.0)
            step["exposed_s"] = exposed
            self.exposed += exposed
            self._blocked, self._last_hook, self._last_done = 0.0, None, None
            self.steps += 1
            return step

    def close_untimed_step(self, op: str, sent: int, recv: int, calls: int) -> dict[str, float]:
        """:meth:`record` (when ``calls``) then :meth:`end_step` under one lock, for a step
        whose collectives are counted but not timed: its counters without ``comm_s`` and
        ``exposed_s`` (a strategy reducing with DDP's built-in allreduce)."""
        with self._lock:
            step, self._step = self._step, {}
            if calls:
                self._add(step, op, sent, recv, calls)
            else:
                step.setdefault("bytes_sent", 0)
                step.setdefault("bytes_recv", 0)
            step.pop("comm_s", None)
            exposed = self._blocked
            self.exposed += exposed
            self._blocked, self._last_hook, self._last_done = 0.0, None, None
            self.steps += 1
            return step

    def summary(self) -> dict[str, Any]:
        n = max(self.steps, 1)
        return {
            "bytes_sent": self.bytes_sent,
            "bytes_recv": self.bytes_recv,
            "comm_s": self.seconds,
            "exposed_s": self.exposed,
            "calls": self.calls,
            "steps": self.steps,
            "bytes_sent_per_step": self.bytes_sent / n,
            "bytes_recv_per_step": self.bytes_recv / n,
            "comm_s_per_step": self.seconds / n,
            "exposed_s_per_step": self.exposed / n,
            "by_op": {k: dict(v) for k, v in sorted(self.by_op.items())},
        }
