"""What a virtual cluster is: its size, links and the names and addresses it uses.

Pure functions only (no ``ip``/``tc`` calls): :func:`parse_rate` reads a link rate such
as ``200mbit``; :class:`ClusterSpec` names every namespace, interface and address of
the cluster, so :mod:`scidl.cluster.net` can build it and the state file can name what
to remove.

Layout. Node ``i`` is the network namespace ``sd-NAME-n<i>`` with one interface
``eth0`` (address ``192.0.2.<i+1>/24``, a documentation range that never leaves the
machine) whose veth peer ``p<i>`` sits in the switch namespace ``sd-NAME-sw`` on a
Linux bridge. Flat: one bridge ``br0``. With racks: a bridge ``rk<k>`` per rack, each
joined to the core bridge ``core`` by a veth pair ``u<k>`` (rack side) / ``d<k>`` (core
side). Every link is shaped in both directions with ``tbf`` at its rate.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

PREFIX = "sd"  # every namespace this package makes starts with "sd-"
SUBNET = "192.0.2"  # TEST-NET-1 (RFC 5737): documentation addresses only
PREFIX_LEN = 24
NODE_IF = "eth0"  # the interface inside each node namespace (GLOO_SOCKET_IFNAME)
MAX_NODES = 100  # n0..n99 keep namespace names within 15 characters
NAME_RE = re.compile(r"^[a-z0-9]{1,8}$")
_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9, "tbit": 10**12}
_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*$")


class SpecError(ValueError):
    """A cluster description that cannot be built (one line, names the option)."""


def parse_rate(text: str, option: str = "--link") -> int:
    """``"200mbit"`` → 200_000_000 bits per second (tc's decimal units)."""
    m = _RATE_RE.match(str(text).lower())
    if not m or m.group(2) not in _UNITS:
        raise SpecError(f"{option} {text!r}: give a rate as a number and a unit "
                        f"({', '.join(_UNITS)}), e.g. 200mbit or 1gbit")
    bits = int(float(m.group(1)) * _UNITS[m.group(2)])
    if bits < 8_000:
        raise SpecError(f"{option} {text!r}: at least 8kbit")
    return bits


def format_rate(bits: float) -> str:
    """200_000_000 → ``"200mbit"`` (the largest unit giving a whole number, else 3 digits)."""
    for unit in ("tbit", "gbit", "mbit", "kbit"):
        v = bits / _UNITS[unit]
        if v >= 1:
            return f"{v:g}{unit}" if v == int(v) else f"{v:.3g}{unit}"
    return f"{bits:g}bit"


@dataclass(frozen=True)
class ClusterSpec:
    """A virtual cluster: ``nodes`` namespaces, each linked at ``link_bits``/s to a switch;
    with ``racks`` > 1, the nodes are split into racks joined at ``rack_link_bits``/s."""

    name: str = "default"
    nodes: int = 2
    link_bits: int = 1_000_000_000
    racks: int = 1
    rack_link_bits: int | None = None

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.name):
            raise SpecError(f"--name {self.name!r}: 1 to 8 lower-case letters or digits "
                            "(it is part of every namespace name, at most 15 characters)")
        if not 1 <= self.nodes <= MAX_NODES:
            raise SpecError(f"--nodes {self.nodes}: between 1 and {MAX_NODES}")
        if not 1 <= self.racks <= self.nodes:
            raise SpecError(f"--racks {self.racks}: between 1 and the number of nodes ({self.nodes})")
        if self.racks > 1 and self.rack_link_bits is None:
            raise SpecError(f"--racks {self.racks} needs --rack-link RATE (the rack uplink rate)")
        if self.racks == 1 and self.rack_link_bits is not None:
            raise SpecError("--rack-link only applies with --racks 2 or more")

    # names ---------------------------------------------------------------------------
    @property
    def switch_ns(self) -> str:
        return f"{PREFIX}-{self.name}-sw"

    def node_ns(self, i: int) -> str:
        return f"{PREFIX}-{self.name}-n{i}"

    def address(self, i: int) -> str:
        return f"{SUBNET}.{i + 1}"

    def rack_of(self, i: int) -> int:
        """Racks hold consecutive nodes, as even as possible."""
        return i * self.racks // self.nodes

    @property
    def namespaces(self) -> list[str]:
        return [self.switch_ns, *(self.node_ns(i) for i in range(self.nodes))]

    def bridge_of(self, i: int) -> str:
        return "br0" if self.racks == 1 else f"rk{self.rack_of(i)}"

    @property
    def bridges(self) -> list[str]:
        return ["br0"] if self.racks == 1 else ["core", *(f"rk{k}" for k in range(self.racks))]

    # state ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClusterSpec:
        keys = {"name", "nodes", "link_bits", "racks", "rack_link_bits"}
        return cls(**{k: v for k, v in data.items() if k in keys})

    def describe(self) -> str:
        text = f"{self.nodes} node(s), link {format_rate(self.link_bits)}"
        if self.racks > 1:
            text += f", {self.racks} racks joined at {format_rate(self.rack_link_bits or 0)}"
        return text


def tbf_burst_bytes(bits: int) -> int:
    """Depth of the token bucket that shapes a link of ``bits``/s: ~4 ms of traffic, at
    least 64 KiB (so a full-size GSO segment passes)."""
    return max(bits // 8 // 250, 64 * 1024)


def tbf_args(bits: int) -> list[str]:
    """``tc`` arguments of a token bucket at ``bits``/s: a bucket of
    :func:`tbf_burst_bytes` and 20 ms of queue."""
    return ["tbf", "rate", f"{bits}bit", "burst", str(tbf_burst_bytes(bits)), "latency", "20ms"]
