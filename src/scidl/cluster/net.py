"""Build, read back and remove a virtual cluster with ``ip`` and ``tc``.

Everything lives in network namespaces this package creates (``sd-NAME-*``): the bridge
sits in its own "switch" namespace and every veth end is created directly inside its
namespace, so nothing appears in the host's namespace and no host setting (sysctl,
firewall, bridge netfilter) is read or changed. Removing the namespaces removes every
interface and bridge in them. The one file outside them is each node's
``/etc/netns/sd-NAME-n<i>/hosts`` (``ip netns exec`` shows it as the node's /etc/hosts),
naming the nodes; ``down`` removes it.

The state file (``$SCIDL_CLUSTER_DIR/NAME.json``, default ``/run/scidl/clusters``) is
written before anything is created, so :func:`down` removes a half-built cluster after
a crash.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scidl.cluster.spec import NODE_IF, PREFIX, PREFIX_LEN, ClusterSpec, format_rate, tbf_args

STATE_DIR_ENV = "SCIDL_CLUSTER_DIR"
DEFAULT_STATE_DIR = "/run/scidl/clusters"
CMD_TIMEOUT_S = 30


class ClusterError(RuntimeError):
    """The cluster cannot be made, found or used (one line, exit status 2)."""


def missing_requirements(euid: int | None = None, which: Any = None) -> str | None:
    """What this machine lacks to build a virtual cluster (None: nothing)."""
    euid = os.geteuid() if euid is None else euid
    which = which or shutil.which
    missing = [tool for tool in ("ip", "tc") if which(tool) is None]
    if missing:
        return f"the virtual cluster needs the {' and '.join(missing)} command(s) (iproute2)"
    if euid != 0:
        return "the virtual cluster needs root (network namespaces): run as root"
    return None


def require_tools() -> None:
    msg = missing_requirements()
    if msg:
        raise ClusterError(msg)


def state_dir() -> Path:
    return Path(os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR)


def state_path(name: str) -> Path:
    return state_dir() / f"{name}.json"


def read_state(name: str) -> dict[str, Any] | None:
    path = state_path(name)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ClusterError(f"cannot read the cluster state file {path}: {e}") from None


def write_state(spec: ClusterSpec, complete: bool) -> None:
    path = state_path(spec.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"spec": spec.to_dict(), "namespaces": spec.namespaces,
                               "complete": complete}, indent=2))
    tmp.replace(path)


def _run(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=CMD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ClusterError(f"`{' '.join(argv)}` did not finish within {CMD_TIMEOUT_S}s") from None
    if check and proc.returncode != 0:
        why = (proc.stderr or proc.stdout).strip().splitlines()
        raise ClusterError(f"`{' '.join(argv)}` failed: {why[0] if why else proc.returncode}")
    return proc


def existing_namespaces() -> set[str]:
    out = _run(["ip", "netns", "list"]).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def build_commands(spec: ClusterSpec) -> list[list[str]]:
    """Every ``ip``/``tc`` command that builds ``spec`` (namespaces first), in order."""
    sw = spec.switch_ns
    cmds: list[list[str]] = [["ip", "netns", "add", ns] for ns in spec.namespaces]
    cmds.append(["ip", "-n", sw, "link", "set", "lo", "up"])
    for br in spec.bridges:
        cmds += [["ip", "-n", sw, "link", "add", br, "type", "bridge"],
                 ["ip", "-n", sw, "link", "set", br, "up"]]
    for k in range(spec.racks if spec.racks > 1 else 0):
        up_if, down_if = f"u{k}", f"d{k}"
        cmds += [["ip", "-n", sw, "link", "add", up_if, "type", "veth", "peer", "name", down_if],
                 ["ip", "-n", sw, "link", "set", up_if, "master", f"rk{k}"],
                 ["ip", "-n", sw, "link", "set", down_if, "master", "core"]]
        for dev in (up_if, down_if):
            assert spec.rack_link_bits is not None
            cmds += [["tc", "-n", sw, "qdisc", "add", "dev", dev, "root",
                      *tbf_args(spec.rack_link_bits)],
                     ["ip", "-n", sw, "link", "set", dev, "up"]]
    for i in range(spec.nodes):
        ns, port = spec.node_ns(i), f"p{i}"
        cmds += [
            ["ip", "link", "add", "name", NODE_IF, "netns", ns, "type", "veth",
             "peer", "name", port, "netns", sw],
            ["ip", "-n", sw, "link", "set", port, "master", spec.bridge_of(i)],
            ["tc", "-n", sw, "qdisc", "add", "dev", port, "root", *tbf_args(spec.link_bits)],
            ["ip", "-n", sw, "link", "set", port, "up"],
            ["ip", "-n", ns, "link", "set", "lo", "up"],
            ["ip", "-n", ns, "addr", "add", f"{spec.address(i)}/{PREFIX_LEN}", "dev", NODE_IF],
            ["tc", "-n", ns, "qdisc", "add", "dev", NODE_IF, "root", *tbf_args(spec.link_bits)],
            ["ip", "-n", ns, "link", "set", NODE_IF, "up"],
        ]
    return cmds


NETNS_ETC = Path("/etc/netns")  # `ip netns exec NS` shows /etc/netns/NS/hosts as /etc/hosts


def write_hosts(spec: ClusterSpec, etc: Path = NETNS_ETC) -> None:
    """Each node's /etc/hosts (seen inside its namespace only): the node names, so peers'
    addresses resolve without a DNS server (none is reachable from a namespace)."""
    text = "127.0.0.1 localhost\n::1 localhost\n" + "".join(
        f"{spec.address(i)} {spec.node_ns(i)} n{i}\n::ffff:{spec.address(i)} {spec.node_ns(i)}\n"
        for i in range(spec.nodes))  # the second form: peers of dual-stack sockets
    for i in range(spec.nodes):
        folder = etc / spec.node_ns(i)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "hosts").write_text(text)


def remove_hosts(namespaces: Sequence[str], etc: Path = NETNS_ETC) -> None:
    """Remove the /etc/netns folders :func:`write_hosts` made (only our hosts file)."""
    for ns in namespaces:
        folder = etc / ns
        (folder / "hosts").unlink(missing_ok=True)
        try:
            folder.rmdir()
        except OSError:  # absent, or holds files that are not ours: leave it
            pass
    try:
        etc.rmdir()  # only when empty: another tool's files there stay
    except OSError:
        pass


def is_up(spec: ClusterSpec) -> bool:
    state = read_state(spec.name)
    return bool(state and state.get("complete")) and set(spec.namespaces) <= existing_namespaces()


def up(spec: ClusterSpec) -> str:
    """Build ``spec``; idempotent. Returns what was done, as one line."""
    require_tools()
    state = read_state(spec.name)
    if state is not None:
        old = ClusterSpec.from_dict(state["spec"])
        if old != spec:
            raise ClusterError(
                f"cluster {spec.name!r} is already up with {old.describe()}; run "
                f"`scidl cluster down --name {spec.name}` first to change it")
        if is_up(spec):
            return f"cluster {spec.name!r} is already up ({spec.describe()})"
        down(spec.name)  # a half-built cluster (an earlier `up` stopped): start over
    clash = set(spec.namespaces) & existing_namespaces()
    if clash:
        raise ClusterError(f"network namespace {sorted(clash)[0]} exists but no cluster state "
                           f"names it; remove it with `ip netns delete {sorted(clash)[0]}`")
    write_state(spec, complete=False)  # before creating anything: `down` can always clean up
    try:
        for cmd in build_commands(spec):
            _run(cmd)
        write_hosts(spec)
    except BaseException:
        down(spec.name)
        raise
    write_state(spec, complete=True)
    return f"cluster {spec.name!r} is up: {spec.describe()}"


def leftover_namespaces(name: str) -> list[str]:
    """Namespaces of cluster ``name`` that exist (by their prefix), state file or not."""
    prefix = f"{PREFIX}-{name}-"
    return sorted(ns for ns in existing_namespaces()
                  if ns.startswith(prefix) and (ns[len(prefix):] == "sw"
                                                or ns[len(prefix):][1:].isdigit()))


def down(name: str) -> str:
    """Remove everything cluster ``name`` made (namespaces, with their links and bridges)
    and its state file; nothing there is fine. Returns what was done, as one line."""
    require_tools()
    state = read_state(name)
    names = set(state.get("namespaces", [])) if state else set()
    present = existing_namespaces()
    gone = sorted((names & present) | set(leftover_namespaces(name)))
    for ns in gone:
        _run(["ip", "netns", "delete", ns])
    remove_hosts(sorted(names | set(gone)))
    state_path(name).unlink(missing_ok=True)
    if not gone and state is None:
        return f"cluster {name!r} is not up (nothing to remove)"
    return f"cluster {name!r} is down ({len(gone)} namespace(s) removed)"


def load(name: str) -> ClusterSpec:
    """The spec of the running cluster ``name``; ClusterError when it is not up."""
    require_tools()
    state = read_state(name)
    if state is None or not state.get("complete"):
        raise ClusterError(f"cluster {name!r} is not up; start it with "
                           f"`scidl cluster up --name {name}`")
    spec = ClusterSpec.from_dict(state["spec"])
    missing = set(spec.namespaces) - existing_namespaces()
    if missing:
        raise ClusterError(f"cluster {name!r} lost namespace {sorted(missing)[0]}; run "
                           f"`scidl cluster down --name {name}` and `up` again")
    return spec


def shaping(ns: str, dev: str) -> str:
    """The root qdisc of ``dev`` in ``ns`` as ``tc`` reports it (``tbf 200mbit``)."""
    proc = _run(["tc", "-j", "-n", ns, "qdisc", "show", "dev", dev], check=False)
    if proc.returncode != 0:
        return "missing"
    try:
        rows = json.loads(proc.stdout or "[]")
    except ValueError:
        return "unreadable"
    for row in rows:
        if row.get("root"):
            rate = (row.get("options") or {}).get("rate")
            return f"{row['kind']} {format_rate(rate * 8)}" if rate else str(row["kind"])
    return "none"


def address_of(ns: str, dev: str = NODE_IF) -> str:
    proc = _run(["ip", "-j", "-n", ns, "-4", "addr", "show", "dev", dev], check=False)
    try:
        infos = json.loads(proc.stdout or "[]")
    except ValueError:
        return "?"
    for info in infos:
        for a in info.get("addr_info", []):
            return f"{a['local']}/{a['prefixlen']}"
    return "none"


def status_lines(name: str) -> list[str]:
    """``scidl cluster status``: the nodes, their addresses and the shaping read from tc."""
    spec = load(name)
    sw = spec.switch_ns
    lines = [f"cluster {name!r}: {spec.describe()}; switch namespace {sw} "
             f"(bridges {', '.join(spec.bridges)})",
             f"{'node':<5} {'namespace':<16} {'address':<15} {'rack':<5} "
             f"{'out (' + NODE_IF + ')':<14} in (switch port)"]
    for i in range(spec.nodes):
        ns = spec.node_ns(i)
        lines.append(f"n{i:<4} {ns:<16} {address_of(ns):<15} {spec.rack_of(i):<5} "
                     f"{shaping(ns, NODE_IF):<14} {shaping(sw, f'p{i}')}")
    for k in range(spec.racks if spec.racks > 1 else 0):
        lines.append(f"rack {k} uplink: up {shaping(sw, f'u{k}')}, down {shaping(sw, f'd{k}')}")
    return lines
