"""Free-port lookup for local rendezvous.

A port found free by binding port 0 comes from the kernel's ephemeral range, the same
range every outgoing connection takes its local port from: between the lookup and the
rendezvous server's ``listen``, a connection of another job on this machine (gloo opens
many) can take it. The port is therefore drawn at random below that range, where only
listeners live, and checked free on every interface."""

from __future__ import annotations

import random
import socket
from pathlib import Path

PORT_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST = 10000  # below this sit well-known and registered services
TRIES = 64


def ephemeral_range(path: Path = PORT_RANGE_FILE) -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (Linux's default where
    the file cannot be read)."""
    try:
        lo, hi = (int(x) for x in path.read_text().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def candidate_ports(ephemeral: tuple[int, int]) -> range:
    """Ports outside ``ephemeral`` to draw from: below it, or above it when it starts too
    low to leave room."""
    lo, hi = ephemeral
    if lo - LOWEST >= 1000:
        return range(LOWEST, lo)
    return range(hi + 1, 65536) if hi < 64535 else range(LOWEST, 65536)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("", port))
        except OSError:
            return False
    return True


def free_port(ephemeral: tuple[int, int] | None = None) -> int:
    """A TCP port free on every interface right now, outside the ephemeral range."""
    ports = candidate_ports(ephemeral or ephemeral_range())
    rng = random.SystemRandom()
    for _ in range(TRIES):
        port = rng.choice(ports)
        if _bindable(port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # all taken: any free one
        s.bind(("", 0))
        return int(s.getsockname()[1])
