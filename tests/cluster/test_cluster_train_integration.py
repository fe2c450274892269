"""Real multi-node launches over shaped links: 2 nodes x 2 ranks give the weights of a
one-node 4-process run for dense, grouped and hierarchical; a killed node launcher is
replaced and the run resumes under --max-restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import cli

from scidl.cluster.launch import stop
from scidl.cluster.spec import NODE_IF, ClusterSpec
from scidl.train.checkpoint import latest_good_checkpoint

STRATEGIES = ["dense", "grouped", "hierarchical"]


def _weights(run_dir):
    return latest_good_checkpoint(run_dir / "checkpoints").load()["model"]


@pytest.mark.timeout(240)
def test_two_nodes_of_two_ranks_equal_one_node_of_four(cluster_name, tmp_path):
    cli("cluster", "up", "--name", cluster_name, "--nodes", "2", "--link", "200mbit")
    spec = ClusterSpec(name=cluster_name, nodes=2, link_bits=2 * 10**8)
    job = [sys.executable, "-m", "cluster_job"]
    # the node launchers learn their place from torchrun's PET_* variables
    nodes = []
    for i in range(2):
        env = {**os.environ, "GLOO_SOCKET_IFNAME": NODE_IF, "PET_NNODES": "2",
               "PET_NODE_RANK": str(i), "PET_RDZV_ENDPOINT": f"{spec.address(0)}:29400",
               "PET_RDZV_ID": cluster_name, "PET_LOCAL_ADDR": spec.address(i)}
        nodes.append(subprocess.Popen(
            ["ip", "netns", "exec", spec.node_ns(i), *job, str(tmp_path / "cluster"), "2",
             *STRATEGIES], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True))
    one = subprocess.Popen([*job, str(tmp_path / "one"), "4", *STRATEGIES],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        outs = [p.communicate(timeout=200)[0].decode(errors="replace") for p in [one, *nodes]]
    finally:
        stop([one, *nodes], grace_s=2)
    assert [p.returncode for p in [one, *nodes]] == [0, 0, 0], "\n".join(o[-3000:] for o in outs)
    for s in STRATEGIES:
        a, b = _weights(tmp_path / "one" / s), _weights(tmp_path / "cluster" / s)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6), (s, k)
    # hierarchical really crossed the node boundary (2 nodes), and did not on one node
    ops = {d: json.loads((tmp_path / d / "hierarchical" / "comm.json").read_text())["by_op"]
           for d in ("one", "cluster")}
    assert "allreduce_inter" in ops["cluster"] and "allreduce_inter" not in ops["one"]
    assert ops["cluster"]["allreduce_inter"]["bytes_sent"] > 0


def _kill_node(ns: str) -> int:
    """kill -9 every process in namespace ``ns`` (the node crashes); how many there were."""
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                          timeout=20).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(pids)


@pytest.mark.timeout(300)
def test_killed_node_launcher_is_replaced_and_the_run_resumes(cluster_name, tmp_path):
    """kill -9 of node n1's launcher and its worker mid-run: `scidl train --cluster`
    starts a new launcher there (--max-restarts 1), node n0's agent restarts its worker,
    both meet in the next rendezvous round and resume from the newest checkpoint: every
    step is trained and logged once."""
    cli("cluster", "up", "--name", cluster_name, "--nodes", "2", "--link", "1gbit")
    run_dir = tmp_path / "run"
    steps = 12
    job = subprocess.Popen(
        [sys.executable, "-m", "scidl", "train", "cluster_tasks:digits_slow", "--cluster",
         cluster_name, "--ranks-per-node", "1", "--max-restarts", "1", "--max-steps",
         str(steps), "--out", str(run_dir), "--quiet", "checkpoint.every_steps=2",
         "train.batch_size=16", "log.tensorboard=false", "train.log_every=1",
         "dist.timeout_s=60", "--cluster-timeout", "240"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 200
        while latest_good_checkpoint(run_dir / "checkpoints") is None:
            assert job.poll() is None and time.monotonic() < deadline, job.communicate()
            time.sleep(0.2)
        assert _kill_node(f"sd-{cluster_name}-n1") >= 2  # the launcher and its worker
        out, err = job.communicate(timeout=240)
    finally:
        stop([job], grace_s=2)
    assert job.returncode == 0, out[-2000:] + err[-3000:]
    assert "node n1" in err and "starting its launcher again" in err
    assert f"after {steps} steps on 2 process(es)" in out
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in rows if "loss" in x] == list(range(1, steps + 1))
