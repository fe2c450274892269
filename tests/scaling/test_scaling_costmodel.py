"""Cost-model formulas against hand-computed values (Thakur, Rabenseifner & Gropp 2005)."""

from __future__ import annotations

import math

import pytest

from scidl.scaling.costmodel import (
    Compression,
    LinkCost,
    Topology,
    allreduce_bandwidth_bound_time,
    allreduce_cost,
    allreduce_lower_bound_bytes,
    compression_ratio,
    gradient_comm_time,
    parse_comm,
    rabenseifner_allreduce_time,
    recursive_doubling_allreduce_time,
    ring_allgather_time,
    ring_allreduce_time,
    ring_reduce_scatter_time,
    two_level_allreduce_time,
)
from scidl.scaling.predict import (
    StepProfile,
    exposed_comm,
    parse_ranks,
    predict_curve,
    split_buckets,
)

C = LinkCost(alpha=1e-5, beta=1e-9, gamma=1e-10)
N = 1e8  # bytes


def test_ring_allreduce_hand_computed():
    # p = 4: 2·3·1e-5 + 2·3/4·1e8·1e-9 + 3/4·1e8·1e-10 = 6e-5 + 0.15 + 0.0075
    assert ring_allreduce_time(N, 4, C) == pytest.approx(6e-5 + 0.15 + 0.0075)
    assert ring_allreduce_time(N, 1, C) == 0.0


def test_recursive_doubling_hand_computed():
    # p = 8: 3·(1e-5 + 0.1 + 0.01); p = 5 rounds up to 3 rounds
    assert recursive_doubling_allreduce_time(N, 8, C) == pytest.approx(3 * (1e-5 + 0.1 + 0.01))
    assert recursive_doubling_allreduce_time(N, 5, C) == pytest.approx(3 * (1e-5 + 0.1 + 0.01))


def test_rabenseifner_hand_computed():
    # p = 8: 2·3·1e-5 + 2·7/8·0.1 + 7/8·0.01
    want = 6e-5 + 0.175 + 0.00875
    assert rabenseifner_allreduce_time(N, 8, C) == pytest.approx(want)
    # same bandwidth term as ring, fewer latency terms
    assert rabenseifner_allreduce_time(1e3, 64, C) < ring_allreduce_time(1e3, 64, C)


def test_allgather_reduce_scatter_hand_computed():
    assert ring_allgather_time(N, 4, C) == pytest.approx(3e-5 + 0.075)
    assert ring_reduce_scatter_time(N, 4, C) == pytest.approx(3e-5 + 0.075 + 0.0075)
    # reduce-scatter + allgather = ring allreduce
    rs_ag = ring_reduce_scatter_time(N, 4, C) + ring_allgather_time(N, 4, C)
    assert rs_ag == pytest.approx(ring_allreduce_time(N, 4, C))


def test_lower_bound_and_bandwidth_bound():
    assert allreduce_lower_bound_bytes(N, 4) == pytest.approx(1.5e8)
    assert allreduce_lower_bound_bytes(N, 1) == 0.0
    assert allreduce_bandwidth_bound_time(N, 4, 1e-9) == pytest.approx(0.15)
    # no algorithm beats the bound
    for p in (2, 4, 8, 64):
        bound = allreduce_bandwidth_bound_time(N, p, C.beta)
        assert ring_allreduce_time(N, p, C) >= bound
        assert rabenseifner_allreduce_time(N, p, C) >= bound


def test_two_level_hand_computed():
    intra = LinkCost(1e-6, 1e-10, 0.0)
    inter = LinkCost(1e-5, 1e-9, 0.0)
    # g = 4, 8 nodes: ring(n, 4, intra) + ring(n/4, 8, inter)
    want = (6e-6 + 1.5 * N * 1e-10) + (14e-5 + 2 * 7 / 8 * (N / 4) * 1e-9)
    assert two_level_allreduce_time(N, 4, 8, intra, inter) == pytest.approx(want)


def test_topology_placement():
    topo = Topology(4, LinkCost(1e-6, 1e-10, 0.0), LinkCost(1e-5, 1e-9, 0.0))
    # one node: the intra level only, whatever the algorithm
    assert allreduce_cost(N, 4, topo, "ring") == pytest.approx(
        ring_allreduce_time(N, 4, topo.intra))
    assert allreduce_cost(N, 4, topo, "two-level") == pytest.approx(
        ring_allreduce_time(N, 4, topo.intra))
    # flat ring over 2 nodes: every step waits for the network hop
    assert allreduce_cost(N, 8, topo, "ring") == pytest.approx(
        ring_allreduce_time(N, 8, LinkCost(1e-5, 1e-9, 0.0)))
    # two-level: the g shards share the node's link (β·g on n/g) = inter ring on n
    two = allreduce_cost(N, 8, topo, "two-level")
    assert two == pytest.approx(
        ring_allreduce_time(N, 4, topo.intra) + ring_allreduce_time(N / 4, 2,
                                                                    LinkCost(1e-5, 4e-9, 0.0)))
    # Rabenseifner on 8 ranks, g = 4: rounds at distance 1, 2 intra, distance 4 inter (β·4)
    m = [N / 2, N / 4, N / 8]
    want = (2e-6 + 2 * m[0] * 1e-10) + (2e-6 + 2 * m[1] * 1e-10) + (2e-5 + 2 * m[2] * 4e-9)
    assert allreduce_cost(N, 8, topo, "rabenseifner") == pytest.approx(want)
    with pytest.raises(KeyError):
        allreduce_cost(N, 8, topo, "butterfly")


def test_compression():
    assert compression_ratio(Compression("fp16", value_bytes=2), 64) == 0.5
    d1 = Compression("topk", density=0.01)
    # p·d·(4+4)/(2·4) = p·d
    assert compression_ratio(d1, 8) == pytest.approx(0.08)
    assert compression_ratio(d1, 1000) == 1.0  # dense fallback past p·d = 1
    topo = Topology(1, C, C)
    dense = gradient_comm_time(N, 8, topo, "ring", Compression())
    half = gradient_comm_time(N, 8, topo, "ring", Compression("fp16", value_bytes=2))
    assert half < dense
    sparse = gradient_comm_time(N, 8, topo, "ring", d1)
    # topk's own protocol: the (count, finite) all-gather (16 bytes a rank), then the pairs
    assert sparse == pytest.approx(ring_allgather_time(8 * 16, 8, C)
                                   + ring_allgather_time(8 * 0.01 * N / 4 * 8, 8, C))
    assert sparse < dense / 5
    assert gradient_comm_time(N, 4096, topo, "ring", d1) == pytest.approx(
        allreduce_cost(N, 4096, topo, "ring"))


def test_parse_comm_and_ranks():
    assert parse_comm("dense") == (Compression(), None)
    assert parse_comm("hierarchical")[1] == "two-level"
    assert parse_comm("topk:0.05")[0].density == 0.05
    for bad in ("topk:2", "topk:x", "zip"):
        with pytest.raises(KeyError):
            parse_comm(bad)
    assert parse_ranks("1,2,4") == [1, 2, 4]
    assert parse_ranks("1,6,...,100") == [1, 6, 12, 24, 48, 96, 100]
    with pytest.raises(ValueError):
        parse_ranks("1,...")


def test_exposed_comm_hand_computed():
    # fwd 1, bwd 2, two equal buckets of cost 1.5: ready at 2 and 3;
    # finish = max(2,0)+1.5 = 3.5, then max(3, 3.5)+1.5 = 5 → exposed 2
    assert exposed_comm(1.0, 2.0, [1.5, 1.5], [10, 10], overlap=1.0) == pytest.approx(2.0)
    assert exposed_comm(1.0, 2.0, [1.5, 1.5], [10, 10], overlap=0.0) == pytest.approx(3.0)
    assert exposed_comm(1.0, 2.0, [0.1], [10], overlap=1.0) == pytest.approx(0.1)
    assert split_buckets(3 * 2**20, 2**20 * 1.5) == [2**20, 1.5 * 2**20, 0.5 * 2**20]


def test_predict_curve_weak_and_strong():
    from scidl.scaling.hardware import Hardware, Level

    hw = Hardware(name="t", devices_per_node=4, intra=Level(alpha=1e-5, beta=1e-10),
                  inter=Level(alpha=1e-5, beta=1e-9), overlap=0.0, measured_here=True)
    prof = StepProfile(compute_s=0.1, grad_bytes=1e8, samples_per_step=32)
    weak = predict_curve(prof, hw, [1, 4, 64], mode="weak")
    assert weak[0]["efficiency"] == pytest.approx(1.0)
    comm4 = ring_allreduce_time(2**20, 4, hw.intra.cost())  # first bucket 1 MiB, no overlap
    assert weak[1]["comm_s"] > comm4
    assert weak[1]["efficiency"] == pytest.approx(0.1 / (0.1 + weak[1]["comm_s"]))
    assert weak[2]["efficiency"] < weak[1]["efficiency"] < 1
    assert weak[2]["samples_per_s"] == pytest.approx(64 * 32 / weak[2]["step_s"])
    strong = predict_curve(prof, hw, [1, 4], mode="strong")
    assert strong[1]["compute_s"] == pytest.approx(0.025)
    assert strong[1]["efficiency"] == pytest.approx(0.1 / (4 * strong[1]["step_s"]))
    assert not math.isnan(strong[1]["samples_per_s"])
