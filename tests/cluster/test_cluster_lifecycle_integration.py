"""`scidl cluster up|status|exec|down` as root: shaping read back from tc, idempotent
`up`, `down` leaves no namespace, link or bridge (also from a half-built cluster)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import cli

from scidl.cluster import net
from scidl.cluster.spec import ClusterSpec


def _ours(name: str) -> list[str]:
    """Namespaces and host-side links whose names carry the cluster's name."""
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=20).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, timeout=20).stdout
    return [line for line in (ns + links).splitlines() if f"-{name}-" in line]


@pytest.mark.timeout(120)
def test_up_status_exec_idempotent_down(cluster_name, capfd):
    name = cluster_name
    host_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True,
                                timeout=20).stdout.count("\n")
    args = ["--name", name, "--nodes", "3", "--link", "200mbit", "--racks", "2",
            "--rack-link", "100mbit"]
    assert "is up" in cli("cluster", "up", *args).stdout
    # nothing in the host's namespace: every link is inside the cluster's namespaces
    assert subprocess.run(["ip", "-o", "link"], capture_output=True, text=True,
                          timeout=20).stdout.count("\n") == host_links
    status = cli("cluster", "status", "--name", name).stdout
    for i in range(3):
        assert f"192.0.2.{i + 1}/24" in status and f"sd-{name}-n{i}" in status
    assert status.count("tbf 200mbit") == 6  # each node's eth0 and its switch port
    assert status.count("tbf 100mbit") == 4  # both directions of both rack uplinks
    # status reads tc, not the state file: a changed qdisc shows
    subprocess.run(["tc", "-n", f"sd-{name}-n1", "qdisc", "replace", "dev", "eth0", "root",
                    "tbf", "rate", "50mbit", "burst", "64kb", "latency", "20ms"], check=True,
                   timeout=20)
    assert "tbf 50mbit" in cli("cluster", "status", "--name", name).stdout
    # same spec: a no-op; another spec: one line, exit 2
    assert "already up" in cli("cluster", "up", *args).stdout
    r = cli("cluster", "up", "--name", name, "--nodes", "2", check=False)
    assert r.returncode == 2 and "cluster down" in r.stderr and len(r.stderr.splitlines()) == 1
    # exec runs inside the node: it sees its own address only
    capfd.readouterr()
    cli("cluster", "exec", "--name", name, "n2", "--", "ip", "-o", "-4", "addr")
    seen = capfd.readouterr().out
    assert "192.0.2.3/24" in seen and "192.0.2.1/" not in seen
    assert "is down" in cli("cluster", "down", "--name", name).stdout
    assert _ours(name) == [] and not net.state_path(name).exists()
    assert not any(p.name.startswith(f"sd-{name}-") for p in net.NETNS_ETC.glob("*"))
    assert not net.NETNS_ETC.exists() or any(net.NETNS_ETC.iterdir())  # no empty folder left
    assert "not up" in cli("cluster", "down", "--name", name).stdout


@pytest.mark.timeout(60)
def test_down_after_a_crash_mid_up_removes_what_was_made(cluster_name):
    """The state file is written before anything is created: a crash after some
    namespaces exist (simulated: state + part of the build) is cleaned up by `down`,
    and `up` after it builds the cluster afresh."""
    spec = ClusterSpec(name=cluster_name, nodes=2, link_bits=10**8)
    net.write_state(spec, complete=False)
    for cmd in net.build_commands(spec)[:6]:  # namespaces and the bridge, then "crash"
        subprocess.run(cmd, check=True, capture_output=True, timeout=20)
    assert json.loads(net.state_path(cluster_name).read_text())["complete"] is False
    assert len(_ours(cluster_name)) == 3
    r = cli("cluster", "status", "--name", cluster_name, check=False)
    assert r.returncode == 2 and "not up" in r.stderr
    assert "3 namespace(s) removed" in cli("cluster", "down", "--name", cluster_name).stdout
    assert _ours(cluster_name) == []


@pytest.mark.timeout(30)
def test_without_root_or_tools_one_line_exit_2(monkeypatch, tmp_path):
    monkeypatch.setenv("SCIDL_CLUSTER_DIR", str(tmp_path))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    r = cli("cluster", "up", check=False)
    assert (r.returncode, r.stderr) == (
        2, "scidl: error: the virtual cluster needs root (network namespaces): run as root\n")
    monkeypatch.setattr(net.shutil, "which", lambda tool: None if tool == "tc" else "/x")
    r = cli("cluster", "status", check=False)
    assert (r.returncode, r.stderr) == (
        2, "scidl: error: the virtual cluster needs the tc command(s) (iproute2)\n")
