"""Bytes and seconds spent in collectives, per step and per rank.

Byte counts follow the bandwidth-optimal algorithm of each collective, so they are the
same on every backend and comparable across strategies (``n`` bytes of payload, ``p``
ranks, counted per rank, sent = received):

* ring allreduce: 2(p-1)/p·n
* reduce-scatter / allgather of a total of ``n`` bytes: (p-1)/p·n
* allgather of ``b`` bytes from every rank: (p-1)·b
* broadcast of ``b`` bytes: the root sends (p-1)·b, the others receive b

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
from typing import Any


def ring_allreduce_bytes(nbytes: int, world: int) -> int:
    """Bytes one rank sends (and receives) in a ring allreduce of ``nbytes``: 2(p-1)/p·n."""
    if world <= 1:
        return 0
    return int(2 * (world - 1) * nbytes // world)


def reduce_scatter_bytes(nbytes: int, world: int) -> int:
    """Bytes one rank sends in a ring reduce-scatter (or allgather) of ``nbytes`` total."""
    if world <= 1:
        return 0
    return int((world - 1) * nbytes // world)


def allgather_bytes(block_bytes: int, world: int) -> int:
    """Bytes one rank sends when every rank contributes ``block_bytes``: (p-1)·b."""
    return int(max(world - 1, 0) * block_bytes)


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
    per_step: list[dict[str, float]] = field(default_factory=list)
    by_op: dict[str, dict[str, float]] = field(default_factory=dict)
    _step: dict[str, float] = field(default_factory=dict)
    _blocked: float = 0.0
    _last_hook: float | None = None
    _last_done: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, op: str, sent: int, recv: int, seconds: float = 0.0) -> None:
        """Account one collective ``op`` moving ``sent``/``recv`` bytes (and its seconds)."""
        with self._lock:
            self.bytes_sent += int(sent)
            self.bytes_recv += int(recv)
            self.calls += 1
            s = self._step
            s["bytes_sent"] = s.get("bytes_sent", 0) + int(sent)
            s["bytes_recv"] = s.get("bytes_recv", 0) + int(recv)
            s["calls"] = s.get("calls", 0) + 1
            o = self.by_op.setdefault(op, {"calls": 0, "bytes_sent": 0, "seconds": 0.0})
            o["calls"] += 1
            o["bytes_sent"] += int(sent)
        if seconds:
            self.add_seconds(op, seconds)

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
            self.per_step.append(step)
            return dict(step)

    def summary(self) -> dict[str, Any]:
        n = max(len(self.per_step), 1)
        return {
            "bytes_sent": self.bytes_sent,
            "bytes_recv": self.bytes_recv,
            "comm_s": self.seconds,
            "exposed_s": self.exposed,
            "calls": self.calls,
            "steps": len(self.per_step),
            "bytes_sent_per_step": self.bytes_sent / n,
            "bytes_recv_per_step": self.bytes_recv / n,
            "comm_s_per_step": self.seconds / n,
            "exposed_s_per_step": self.exposed / n,
            "by_op": {k: dict(v) for k, v in sorted(self.by_op.items())},
        }
