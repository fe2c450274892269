"""The cost model prices every comm strategy from the strategy's own wire description."""

from __future__ import annotations

import math

import pytest

from scidl.comm import CommConfig
from scidl.comm.accounting import ring_allreduce_bytes
from scidl.config import RunConfig
from scidl.scaling.costmodel import (
    Compression,
    LinkCost,
    Topology,
    allreduce_cost,
    gradient_comm_time,
    parse_comm,
    spec_of,
)
from scidl.scaling.hardware import Hardware
from scidl.scaling.measure import comm_spec
from scidl.scaling.predict import StepProfile, predict_point

C = LinkCost(alpha=1e-5, beta=1e-9, gamma=1e-10)
TOPO = Topology(1, C, C)
# a conv/MLP-like model: three weight matrices and their biases (backward order)
SHAPES = [[10], [10, 512], [512], [512, 512], [512], [512, 784]]
NUMEL = sum(math.prod(s) for s in SHAPES)


def _profile(shapes=None):
    nbytes = 4.0 * NUMEL
    return StepProfile(compute_s=0.01, grad_bytes=nbytes, bucket_bytes=[nbytes],
                       bucket_shapes=[shapes] if shapes else None)


def _hw(**kw):
    base = dict(name="t", devices_per_node=1, intra=dict(alpha=1e-5, beta=1e-9),
                inter=dict(alpha=1e-5, beta=1e-9), overlap=1.0)
    return Hardware.model_validate({**base, **kw})


def test_powersgd_sends_fewer_bytes_than_dense_and_predicts_less_comm():
    ps = Compression("powersgd")  # rank 4
    dense = Compression()
    shapes = [tuple(s) for s in SHAPES]
    # P: 512·4 + 512·4 + 10·4, Q: 784·4 + 512·4 + 512·4; biases exact (1034 values)
    first, second = 4 * (1034 + 4 * (512 + 512 + 10)), 4 * 4 * (784 + 512 + 512)
    assert ps.bytes_sent(NUMEL, 8, shapes) == ring_allreduce_bytes(first, 8) + \
        ring_allreduce_bytes(second, 8)
    assert ps.bytes_sent(NUMEL, 8, shapes) < dense.bytes_sent(NUMEL, 8, shapes) / 20
    t_ps = gradient_comm_time(4.0 * NUMEL, 8, TOPO, "ring", ps, shapes)
    assert t_ps < gradient_comm_time(4.0 * NUMEL, 8, TOPO, "ring", dense, shapes) / 5
    hw = _hw()
    got = predict_point(_profile(SHAPES), hw, 8, comp=ps)["comm_s"]
    assert got == pytest.approx(
        gradient_comm_time(4.0 * NUMEL, 8, hw.topology(8), "ring", ps, shapes))
    assert got < predict_point(_profile(SHAPES), hw, 8, comp=dense)["comm_s"] / 5
    # a higher rank sends more
    assert Compression("powersgd", options=(("rank", 16),)).bytes_sent(NUMEL, 8, shapes) > \
        ps.bytes_sent(NUMEL, 8, shapes)


def test_grouped_regroups_at_its_group_size():
    # 4 MiB of gradients: DDP's one 25 MiB bucket vs grouped's 1 MiB groups (4 allreduces)
    shapes = [[1024, 256]] * 4  # 1 MiB each
    prof = StepProfile(compute_s=0.01, grad_bytes=4 * 2**20, bucket_bytes=[4 * 2**20],
                       bucket_shapes=[shapes])
    hw = _hw()
    dense = predict_point(prof, hw, 8, comp=Compression())
    grouped = predict_point(prof, hw, 8, comp=parse_comm("grouped:1")[0])
    assert (dense["buckets"], grouped["buckets"]) == (1, 4)
    # same bytes, three more latency terms 2(p−1)α each
    assert grouped["comm_s"] - dense["comm_s"] == pytest.approx(3 * 2 * 7 * 1e-5)


def test_lag_hides_communication_behind_the_next_step():
    prof = _profile(SHAPES)
    hw = _hw(overlap=1.0)
    slow = _hw(overlap=1.0, intra=dict(alpha=1e-5, beta=5e-8), inter=dict(alpha=1e-5, beta=5e-8))
    dense = predict_point(prof, slow, 8, comp=Compression())
    lag = predict_point(prof, slow, 8, comp=parse_comm("lag")[0])
    assert lag["comm_s"] == pytest.approx(dense["comm_s"])  # the inner strategy's bytes
    assert dense["exposed_comm_s"] > 0.05
    assert lag["exposed_comm_s"] < dense["exposed_comm_s"] - 0.005
    # lag wraps its inner strategy's traffic
    lag_ps = parse_comm("lag:powersgd")[0]
    ps = Compression("powersgd")
    assert predict_point(prof, hw, 8, comp=lag_ps)["comm_s"] == pytest.approx(
        predict_point(prof, hw, 8, comp=ps)["comm_s"])


def test_hierarchical_implies_two_level_and_bf16_halves():
    comp, alg = parse_comm("hierarchical")
    assert alg == "two-level"
    topo = Topology(4, C, LinkCost(1e-4, 1e-8))
    assert gradient_comm_time(1e8, 16, topo, "ring", comp) == pytest.approx(
        allreduce_cost(1e8, 16, topo, "two-level"))
    bf16 = Compression("bf16")
    assert bf16.bytes_sent(NUMEL, 8) == Compression("fp16").bytes_sent(NUMEL, 8) \
        == Compression().bytes_sent(NUMEL, 8) // 2


def test_hierarchical_waits_on_each_of_its_phases():
    hier = Compression("hierarchical")
    assert hier.syncs(NUMEL, 8, per_node=2) == 3  # reduce-scatter, allreduce, allgather
    assert hier.syncs(NUMEL, 4, per_node=4) == 2  # one node: no allreduce across nodes
    assert hier.syncs(NUMEL, 8, per_node=1) == 1  # one rank per node: the allreduce alone
    assert hier.syncs(NUMEL, 1, per_node=1) == 0
    # comm.ranks_per_node (declared nodes) wins over the machine's
    assert Compression("hierarchical", options=(("ranks_per_node", 4),)).syncs(NUMEL, 8, 1) == 3
    # every other strategy: its plan's collectives, whatever the placement
    for spec in ("dense", "fp16", "topk:0.01", "powersgd:4"):
        comp, _ = parse_comm(spec)
        assert comp.syncs(NUMEL, 8, per_node=2) == len(comp.plan(NUMEL, 8)), spec


@pytest.mark.parametrize("comm", [
    {"strategy": "dense"}, {"strategy": "fp16"}, {"strategy": "bf16"},
    {"strategy": "hierarchical"}, {"strategy": "grouped", "group_mb": 2.0},
    {"strategy": "powersgd", "rank": 8}, {"strategy": "topk", "density": 0.05},
    {"strategy": "topk", "density": 0.05, "value_dtype": "fp16"},
    {"strategy": "lag", "lag_inner": "powersgd", "rank": 2},
])
def test_comm_spec_round_trips_the_wire_settings(comm):
    cfg = RunConfig.model_validate({"comm": comm})
    spec = comm_spec(cfg)
    back = parse_comm(spec)[0].config
    for key in comm:
        assert getattr(back, key) == getattr(cfg.comm, key), spec
    assert spec_of(back) == spec


def test_specs_name_settings_and_reject_bad_ones():
    assert comm_spec(RunConfig.model_validate({"comm": {"strategy": "powersgd"}})) == "powersgd:4"
    assert parse_comm("powersgd:8")[0].config.rank == 8
    assert parse_comm("lag:fp16")[0].config.lag_inner == "fp16"
    assert parse_comm("topk:0.1:value_dtype=fp16")[0].config.value_dtype == "fp16"
    for bad, msg in (("powersgd:0", "comm.rank"), ("dense:3", "dense takes"),
                     ("lag:nope", "unknown comm.strategy"), ("powersgdd", "did you mean powersgd"),
                     ("topk:0.1:zap=1", "zap")):
        with pytest.raises(KeyError, match=msg):
            parse_comm(bad)


def test_every_strategy_describes_its_wire_traffic():
    from scidl.comm import get_strategy_class, strategy_names

    for name in strategy_names():
        cls = get_strategy_class(name)
        cfg = CommConfig(strategy=name)
        assert cls.wire_bytes(cfg, 10_000, 1) == 0  # nothing to send alone
        assert cls.wire_bytes(cfg, 10_000, 4) > 0
