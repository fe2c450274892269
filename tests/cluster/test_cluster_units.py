"""Pure parts of the virtual cluster and the multi-node launch (no root needed)."""

from __future__ import annotations

import pytest

from scidl.cluster.launch import node_argv, strip_options
from scidl.cluster.net import build_commands, missing_requirements
from scidl.cluster.spec import ClusterSpec, SpecError, format_rate, parse_rate
from scidl.comm.hierarchical import physical_layout
from scidl.runtime.env import LaunchError, detect_launch
from scidl.runtime.launch import NodeSpec, launch_config, node_spec


def test_parse_rate_units_and_errors():
    assert parse_rate("200mbit") == 200_000_000
    assert parse_rate("1gbit") == parse_rate("1000mbit") == 10**9
    assert parse_rate("1.5Gbit") == 1_500_000_000
    assert format_rate(2e8) == "200mbit" and format_rate(1e10) == "10gbit"
    for bad in ("100mb", "fast", "", "-1mbit", "1kbit"):
        with pytest.raises(SpecError, match="--link"):
            parse_rate(bad)


def test_spec_names_are_short_prefixed_and_documentation_addresses():
    spec = ClusterSpec(name="abcdefgh", nodes=100, link_bits=10**8, racks=4, rack_link_bits=10**9)
    names = [*spec.namespaces, *spec.bridges, *(f"p{i}" for i in range(100))]
    assert all(len(n) <= 15 for n in names)
    assert all(ns.startswith("sd-abcdefgh-") for ns in spec.namespaces)
    assert spec.address(0) == "192.0.2.1" and spec.address(99) == "192.0.2.100"
    assert [spec.rack_of(i) for i in (0, 24, 25, 99)] == [0, 0, 1, 3]
    for bad in ({"name": "Bad_Name"}, {"name": "waytoolongname"}, {"nodes": 0},
                {"nodes": 101}, {"racks": 2}, {"racks": 3, "nodes": 2, "rack_link_bits": 1},
                {"rack_link_bits": 10**9}):
        with pytest.raises(SpecError):
            ClusterSpec(**bad)


def test_build_commands_shape_both_directions_and_stay_in_namespaces():
    spec = ClusterSpec(name="x", nodes=2, link_bits=10**8, racks=2, rack_link_bits=10**7)
    cmds = build_commands(spec)
    tbf = [c for c in cmds if c[0] == "tc"]
    # each node's eth0 and its switch port, and both ends of each rack uplink
    assert len(tbf) == 2 * 2 + 2 * 2
    assert sum("100000000bit" in c for c in tbf) == 4 and sum("10000000bit" in c for c in tbf) == 4
    # nothing is created in the host's namespace: every `ip link add` names a namespace
    for c in cmds:
        if c[:3] == ["ip", "link", "add"]:
            assert c.count("netns") == 2
        elif c[0] == "ip" and c[1] != "netns":
            assert c[1] == "-n"


def test_missing_requirements_names_what_is_missing():
    assert "ip and tc" in missing_requirements(0, lambda t: None)
    assert "root" in missing_requirements(1000, lambda t: "/sbin/" + t)
    assert missing_requirements(0, lambda t: "/sbin/" + t) is None


def test_node_argv_replaces_parent_and_node_options():
    spec = ClusterSpec(name="c", nodes=3)
    argv = ["train", "digits", "--cluster", "c", "--ranks-per-node=2", "--max-steps", "5",
            "--cluster-timeout", "60", "a.b=1"]
    out = node_argv(argv, spec, 2, 2, 29400, "rid")
    assert out[:5] == ["train", "digits", "--max-steps", "5", "a.b=1"]
    assert out[5:] == ["--nproc", "2", "--nnodes", "3", "--node-rank", "2", "--rdzv-endpoint",
                       "192.0.2.1:29400", "--rdzv-id", "rid", "--local-addr", "192.0.2.3"]
    assert strip_options(["--x=1", "--x", "2", "y"], ["--x"]) == ["y"]


def test_node_spec_from_args_torchrun_env_and_slurm():
    assert node_spec(env={}) == NodeSpec()
    pet = {"PET_NNODES": "2", "PET_NODE_RANK": "1", "PET_RDZV_ENDPOINT": "head:1234"}
    assert node_spec(env=pet) == NodeSpec(2, 1, "head:1234")
    assert node_spec(3, 0, "h", env=pet) == NodeSpec(3, 0, "h")  # arguments win
    slurm = {"SLURM_NNODES": "2", "SLURM_NTASKS": "2", "SLURM_NODEID": "1", "SLURM_PROCID": "1",
             "SLURM_JOB_NODELIST": "gpu[007-008]", "SLURM_JOB_ID": "42"}
    assert node_spec(nproc=4, env=slurm) == NodeSpec(2, 1, "gpu007:15042", "slurm-42")
    assert node_spec(nproc=1, env=slurm) == NodeSpec()  # one rank per task: srun's own layout
    with pytest.raises(LaunchError, match="--rdzv-endpoint"):
        node_spec(2, 0, env={})
    with pytest.raises(LaunchError, match="--node-rank"):
        node_spec(2, 2, "h", env={})


def test_launch_config_for_several_nodes():
    cfg = launch_config(2, 1, NodeSpec(4, 0, "192.0.2.1", "job", "192.0.2.1"))
    assert (cfg.min_nodes, cfg.max_nodes, cfg.nproc_per_node) == (4, 4, 2)
    assert cfg.rdzv_endpoint == "192.0.2.1:29400" and cfg.run_id == "job"
    assert cfg.rdzv_configs["is_host"] is True and cfg.local_addr == "192.0.2.1"
    assert launch_config(2, 1, NodeSpec(4, 3, "h:5")).rdzv_configs["is_host"] is False
    assert "is_host" not in launch_config(2, 1, NodeSpec(4, None, "h:5")).rdzv_configs


def test_physical_layout_follows_the_node_boundary():
    """Defect: the old layout cut the group's member list into consecutive chunks of
    LOCAL_WORLD_SIZE, so a sub-group spanning nodes ([0, 2] on 2 nodes of 2) was
    treated as one node; now each rank's node is rank // LOCAL_WORLD_SIZE."""
    assert physical_layout([0, 1, 2, 3], 2) == ([[0, 1], [2, 3]], [[0, 2], [1, 3]])
    assert physical_layout([0, 2], 2) == ([[0], [2]], [[0, 2]])
    # one node, a sub-group (a pipeline layout's data-parallel group): the old code raised
    # "comm.ranks_per_node=4 must divide the number of ranks (2)"
    assert physical_layout([0, 2], 4) == ([[0, 2]], [[0], [2]])
    assert physical_layout([1, 3, 5, 7], 4) == ([[1, 3], [5, 7]], [[1, 5], [3, 7]])
    with pytest.raises(ValueError, match="unevenly"):
        physical_layout([0, 1, 2], 2)


def test_slurm_tasks_per_node_from_the_tasks_list():
    """Defect: without SLURM_NTASKS_PER_NODE the local world was the whole job, so
    `hierarchical` saw one node; SLURM_TASKS_PER_NODE ("2(x3)") names it."""
    env = {"SLURM_PROCID": "3", "SLURM_NTASKS": "6", "SLURM_LOCALID": "1",
           "SLURM_TASKS_PER_NODE": "2(x3)", "SLURM_JOB_NODELIST": "n[1-3]"}
    assert detect_launch(env).local_world_size == 2
    assert detect_launch({**env, "SLURM_TASKS_PER_NODE": "4,2"}).local_world_size == 6


@pytest.mark.parametrize("argv,message", [
    (["train", "digits", "--cluster", "x", "train.max_steps=abc"], "'train.max_steps'"),
    (["train", "digits", "--ranks-per-node", "2"], "--ranks-per-node only applies"),
    (["train", "digits", "--nnodes", "2"], "--rdzv-endpoint"),
])
def test_train_cluster_bad_input_is_one_line_before_any_node_starts(argv, message, capsys):
    from scidl.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
