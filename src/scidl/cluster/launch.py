"""``scidl train ... --cluster NAME``: one node launcher per virtual node.

The virtual cluster only supplies what a real multi-node job gets from its scheduler:
each node's launcher is the ordinary ``scidl train ... --nproc K --nnodes N
--node-rank i --rdzv-endpoint HEAD:PORT --local-addr ADDR`` (a torch elastic agent,
:func:`scidl.runtime.launch.elastic_run`), started inside the node's namespace with
``ip netns exec`` and ``GLOO_SOCKET_IFNAME`` set to the node's interface. Node 0
(the lowest address) hosts the rendezvous and holds rank 0: its output is streamed
here; the other nodes write to log files, shown when they fail. A failing node, an
interrupt or the timeout stops every node launcher (and its workers).

A node whose launcher is killed (a signal: the node "crashed") is started again, up to
``--max-restarts`` times, as a scheduler replaces a failed node: the other nodes' agents
restart their workers (using their own ``--max-restarts``), the replacement joins the
next rendezvous round and every rank resumes from the newest checkpoint
(:func:`scidl.train.api.any_rank_restarted`). Node 0 hosts the rendezvous store, so
its loss ends the job (as with torchrun's c10d rendezvous on a real cluster).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from scidl.cluster.spec import NODE_IF, ClusterSpec

# Options of `scidl train` the parent consumes (with their value): not passed to the nodes.
_PARENT_OPTIONS = ("--cluster", "--ranks-per-node", "--cluster-timeout", "--nproc")
_NODE_OPTIONS = ("--nnodes", "--node-rank", "--rdzv-endpoint", "--rdzv-id", "--local-addr")
STOP_GRACE_S = 10.0
LOG_TAIL = 30


def strip_options(argv: Sequence[str], names: Sequence[str]) -> list[str]:
    """``argv`` without the options ``names`` and their values (``--x v`` and ``--x=v``)."""
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in names:
            skip = True
            continue
        if a.split("=", 1)[0] in names and "=" in a:
            continue
        out.append(a)
    return out


def node_argv(argv: Sequence[str], spec: ClusterSpec, i: int, ranks_per_node: int,
              port: int, rdzv_id: str) -> list[str]:
    """The ``scidl`` arguments of node ``i``'s launcher: the user's ``train`` command with
    the torchrun-style node options of this node."""
    base = strip_options(argv, (*_PARENT_OPTIONS, *_NODE_OPTIONS))
    return [*base, "--nproc", str(ranks_per_node), "--nnodes", str(spec.nodes),
            "--node-rank", str(i), "--rdzv-endpoint", f"{spec.address(0)}:{port}",
            "--rdzv-id", rdzv_id, "--local-addr", spec.address(i)]


def _start(spec: ClusterSpec, i: int, argv: list[str], out: IO[Any] | None,
           module: str = "scidl") -> subprocess.Popen[bytes]:
    cmd = ["ip", "netns", "exec", spec.node_ns(i), sys.executable, "-m", module, *argv]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": NODE_IF, "PYTHONUNBUFFERED": "1"}
    # A session of its own: stopping a node stops its agent and every worker it started.
    return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT if out else None,
                            start_new_session=True)


def stop(procs: Sequence[subprocess.Popen[bytes]], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM each node launcher's process group, SIGKILL what is left after ``grace_s``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in procs:
            try:
                os.killpg(p.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(p.poll() is None for p in procs):
            time.sleep(0.1)
    for p in procs:
        if p.poll() is None:
            p.wait(timeout=5)


def _tail(path: Path, n: int = LOG_TAIL) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def supervise(spec: ClusterSpec, argvs: list[list[str]], timeout_s: float,
              log_dir: Path, max_restarts: int = 0, module: str = "scidl") -> int:
    """Start every node launcher, wait for all of them (at most ``timeout_s``); a node
    other than 0 killed by a signal is started again (at most ``max_restarts`` times in
    all); any other failure stops the others. Each node runs ``python -m MODULE ARGV``.
    Returns the job's exit status."""
    logs = [log_dir / f"n{i}.log" for i in range(spec.nodes)]
    files = [None, *(open(p, "ab") for p in logs[1:])]  # noqa: SIM115 - closed below
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i, argv in enumerate(argvs):
            procs.append(_start(spec, i, argv, files[i], module))
        deadline = time.monotonic() + timeout_s
        while True:
            codes = [p.poll() for p in procs]
            failed = [i for i, c in enumerate(codes) if c not in (None, 0)]
            crashed = [i for i in failed if i > 0 and (codes[i] or 0) < 0]
            if crashed and max_restarts > 0 and codes[0] is None:
                i = crashed[0]
                max_restarts -= 1
                print(f"scidl: node n{i} of cluster {spec.name!r} died (signal "
                      f"{-(codes[i] or 0)}); starting its launcher again ({max_restarts} "
                      "restart(s) left)", file=sys.stderr, flush=True)
                procs[i] = _start(spec, i, argvs[i], files[i], module)
                continue
            if failed:
                i = failed[0]
                stop(procs)
                if i > 0:
                    print(f"--- node n{i} (log {logs[i]}) ---\n{_tail(logs[i])}", file=sys.stderr)
                print(f"scidl: error: node n{i} of cluster {spec.name!r} failed "
                      f"(exit status {codes[i]}); every node was stopped", file=sys.stderr)
                code = codes[i] or 1
                return code if code > 0 else 1
            if all(c == 0 for c in codes):
                return 0
            if time.monotonic() > deadline:
                stop(procs)
                print(f"scidl: error: the run on cluster {spec.name!r} did not finish within "
                      f"{timeout_s:g}s (--cluster-timeout); every node was stopped",
                      file=sys.stderr)
                return 1
            time.sleep(0.2)
    finally:
        stop([p for p in procs if p.poll() is None])
        for f in files:
            if f is not None:
                f.close()


def train_on_cluster(args: argparse.Namespace) -> int:
    """``scidl train ... --cluster NAME``: the job on every node of the cluster."""
    from scidl.cli import UserError
    from scidl.cluster import net
    from scidl.runtime.ports import free_port

    if any(getattr(args, k.lstrip("-").replace("-", "_"), None) is not None
           for k in _NODE_OPTIONS):
        raise UserError("--cluster sets --nnodes, --node-rank, --rdzv-endpoint, --rdzv-id and "
                        "--local-addr itself; leave them out")
    if args.ranks_per_node is not None and args.nproc is not None \
            and args.ranks_per_node != args.nproc:
        raise UserError(f"--ranks-per-node {args.ranks_per_node} and --nproc {args.nproc} "
                        "disagree; with --cluster give --ranks-per-node")
    k = args.ranks_per_node or args.nproc or 1
    if k < 1:
        raise UserError(f"--ranks-per-node {k}: at least 1")
    if args.cluster_timeout <= 0:
        raise UserError(f"--cluster-timeout {args.cluster_timeout:g}: must be positive")
    try:
        spec = net.load(args.cluster)
    except net.ClusterError as e:
        raise UserError(str(e)) from None
    port = free_port()
    rdzv_id = f"scidl-{spec.name}-{port}"
    argvs = [node_argv(args._argv, spec, i, k, port, rdzv_id) for i in range(spec.nodes)]
    log_dir = Path(tempfile.mkdtemp(prefix=f"scidl-cluster-{spec.name}-"))
    code = 1
    try:
        code = supervise(spec, argvs, args.cluster_timeout, log_dir, args.max_restarts or 0)
    finally:
        if code == 0:
            shutil.rmtree(log_dir, ignore_errors=True)
    return code
