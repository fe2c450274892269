"""Bytes and seconds spent in collectives, per step and per rank."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CommCounters:
    """Running totals of one rank's collective traffic.

    ``bytes_sent``/``bytes_recv`` follow the bandwidth-optimal algorithm of each
    collective (ring allreduce: 2(p-1)/p·n bytes each way per rank), so they are
    comparable across strategies and backends.
    """

    bytes_sent: int = 0
    bytes_recv: int = 0
    seconds: float = 0.0
    calls: int = 0
    per_step: list[dict[str, float]] = field(default_factory=list)
    _step: dict[str, float] = field(default_factory=dict)

    def record(self, op: str, sent: int, recv: int, seconds: float = 0.0) -> None:
        self.bytes_sent += int(sent)
        self.bytes_recv += int(recv)
        self.seconds += float(seconds)
        self.calls += 1
        s = self._step
        s["bytes_sent"] = s.get("bytes_sent", 0) + int(sent)
        s["bytes_recv"] = s.get("bytes_recv", 0) + int(recv)
        s["comm_s"] = s.get("comm_s", 0.0) + float(seconds)
        s["calls"] = s.get("calls", 0) + 1
        s[f"{op}_calls"] = s.get(f"{op}_calls", 0) + 1

    def end_step(self) -> dict[str, float]:
        """Close the current step and return its counters."""
        step, self._step = self._step, {}
        self.per_step.append(step)
        return step

    def summary(self) -> dict[str, float]:
        n = max(len(self.per_step), 1)
        return {
            "bytes_sent": self.bytes_sent,
            "bytes_recv": self.bytes_recv,
            "comm_s": self.seconds,
            "calls": self.calls,
            "steps": len(self.per_step),
            "bytes_sent_per_step": self.bytes_sent / n,
            "comm_s_per_step": self.seconds / n,
        }


def ring_allreduce_bytes(nbytes: int, world: int) -> int:
    """Bytes one rank sends (and receives) in a ring allreduce of ``nbytes``: 2(p-1)/p·n."""
    if world <= 1:
        return 0
    return int(2 * (world - 1) * nbytes // world)
