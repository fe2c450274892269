"""The link fit keeps the sustained rate of a shaped link (token bucket) and reduces to
the plain α-β fit on a link without one: synthetic timings with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from scidl.scaling.collectives import _scaled_nnls, fit_alpha_beta_gamma, model_coefficients

SIZES = [2**k for k in range(16, 23, 2)]  # 64 KiB ... 4 MiB, factor 4 (as predict_cluster)


def _time(op: str, p: int, n: int, alpha: float, rate: float, burst: float, fast: float) -> float:
    """A ring collective over a token bucket: each rank's first ``burst`` bytes go at
    ``fast`` B/s, the rest at the sustained ``rate``; α per ring step."""
    k_alpha, k_beta, _ = model_coefficients(op, p, n)
    sent = k_beta  # bytes each rank sends
    wire = sent / fast if sent <= burst else burst / fast + (sent - burst) / rate
    return k_alpha * alpha + wire


def _rows(alpha, rate, burst, fast, ps=(4,), ops=("allreduce", "allgather"), noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    return [{"op": op, "ranks": p, "bytes": n,
             "time_s": _time(op, p, n, alpha, rate, burst, fast) * (1 + noise * rng.standard_normal())}
            for p in ps for n in SIZES for op in ops]


def test_token_bucket_fit_keeps_the_sustained_rate():
    # 1 Gbit/s sustained (125 MB/s), a 500 KB bucket passing at 400 MB/s, α = 0.5 ms
    rows = _rows(5e-4, 125e6, 5e5, 4e8)
    fit = fit_alpha_beta_gamma(rows)
    assert fit["method"] == "marginal"
    assert fit["bandwidth"] == pytest.approx(125e6, rel=0.03)
    # allreduce's per-byte cost (β + γ/2 per payload byte of its 2(p−1)/p): sustained too
    assert 1 / (fit["beta"] + fit["gamma"] / 2) == pytest.approx(125e6, rel=0.05)
    # a training step's 4.5 MB allreduce on 2 ranks: within 10 % of the curve
    t_true = _time("allreduce", 2, 4_500_000, 5e-4, 125e6, 5e5, 4e8)
    a, b, g = model_coefficients("allreduce", 2, 4_500_000)
    t_fit = a * fit["alpha"] + b * fit["beta"] + g * fit["gamma"]
    assert t_fit == pytest.approx(t_true, rel=0.10)
    # the one-stage fit of every size alike in relative terms reads the burst as bandwidth
    a_all = np.array([model_coefficients(r["op"], r["ranks"], r["bytes"]) for r in rows])
    t_all = np.array([r["time_s"] for r in rows])
    x = _scaled_nnls(a_all / t_all[:, None], np.ones_like(t_all))
    assert 1 / (x[1] + x[2] / 2) > 1.15 * 125e6  # the effective allreduce rate it claims


def test_token_bucket_alpha_from_small_messages():
    # the small messages (below the bucket) still give α: latency-bound collectives
    rows = _rows(1e-3, 125e6, 5e5, 4e8)
    fit = fit_alpha_beta_gamma(rows)
    t64k = _time("allgather", 4, 2**16, 1e-3, 125e6, 5e5, 4e8)
    a, b, g = model_coefficients("allgather", 4, 2**16)
    assert a * fit["alpha"] + b * fit["beta"] + g * fit["gamma"] == pytest.approx(t64k, rel=0.25)
    assert fit["alpha"] == pytest.approx(1e-3, rel=0.3)


def test_plain_alpha_beta_is_recovered_exactly():
    # no bucket (burst 0): the two-stage fit is the α-β(-γ) fit, every parameter exact
    rows = []
    for p in (2, 4, 8):
        for n in SIZES:
            for op in ("allreduce", "allgather", "reduce_scatter"):
                ka, kb, kg = model_coefficients(op, p, n)
                rows.append({"op": op, "ranks": p, "bytes": n,
                             "time_s": ka * 30e-6 + kb * 1e-9 + kg * 2e-10})
    fit = fit_alpha_beta_gamma(rows)
    assert fit["alpha"] == pytest.approx(30e-6, rel=1e-6)
    assert fit["beta"] == pytest.approx(1e-9, rel=1e-6)
    assert fit["gamma"] == pytest.approx(2e-10, rel=1e-5)
    assert fit["rel_rms"] < 1e-6
    # and the token-bucket formula with no bucket is the plain curve
    plain = fit_alpha_beta_gamma(_rows(2e-4, 1e8, 0.0, 1e12, noise=0.03))
    assert plain["bandwidth"] == pytest.approx(1e8, rel=0.05)
    assert plain["alpha"] == pytest.approx(2e-4, rel=0.25)


def test_one_size_per_series_falls_back_to_the_relative_fit():
    rows = [{"op": "allreduce", "ranks": p, "bytes": 2**20,
             "time_s": model_coefficients("allreduce", p, 2**20)[0] * 1e-4
             + model_coefficients("allreduce", p, 2**20)[1] * 1e-9} for p in (2, 4, 8)]
    fit = fit_alpha_beta_gamma(rows)
    assert fit["method"] == "relative"
    assert fit["beta"] == pytest.approx(1e-9, rel=1e-6)
    assert fit["alpha"] == pytest.approx(1e-4, rel=1e-6)


def test_each_op_gets_its_own_rate_where_the_backend_runs_them_unequally():
    # allreduce at 10 MB/s, allgather at 7 MB/s per byte of the ring model (as gloo's
    # allgather runs over a shaped link): one common β sits between the two and
    # misprices both; the per-op rates recover each exactly
    ar = [{"op": "allreduce", "ranks": 2, "bytes": n,
           "time_s": _time("allreduce", 2, n, 1e-4, 10e6, 0.0, 10e6)} for n in SIZES]
    ag = [{"op": "allgather", "ranks": 2, "bytes": n,
           "time_s": _time("allgather", 2, n, 1e-4, 7e6, 0.0, 7e6)} for n in SIZES]
    fit = fit_alpha_beta_gamma(ar + ag)
    assert fit["op_beta"]["allreduce"] == pytest.approx(1 / 10e6, rel=1e-9)
    assert fit["op_beta"]["allgather"] == pytest.approx(1 / 7e6, rel=1e-9)
    common = fit["beta"] + fit["gamma"] / 2  # what one β-γ fit charges an allreduce byte
    assert abs(common * 10e6 - 1) > 0.05  # off by the allgather rows' pull


def test_collective_cost_uses_the_ops_own_rate():
    from scidl.comm.wire import Collective
    from scidl.scaling.costmodel import LinkCost, Topology, collective_cost

    plain = LinkCost(0.0, 1e-8)
    own = LinkCost(0.0, 1e-8, 0.0, {"allgather": 3e-8})
    n, p = 1_000_000, 4
    cost = {name: {op: collective_cost(Collective(op, n), p, Topology(1, link, link), "ring")
                   for op in ("allreduce", "allgather")} for name, link in (("plain", plain), ("own", own))}
    assert cost["own"]["allreduce"] == cost["plain"]["allreduce"]  # no rate of its own: β
    assert cost["own"]["allgather"] == pytest.approx(3 * cost["plain"]["allgather"])
    # ring allgather of p·n output bytes: (p-1)/p·p·n bytes sent per rank at 3e-8 s/B
    assert cost["own"]["allgather"] == pytest.approx((p - 1) * n * 3e-8)


def test_small_collectives_keep_their_measured_mean_time():
    from scidl.scaling.collectives import fit_op_latency

    rows = [{"op": "allreduce", "ranks": 2, "bytes": 1024, "time_s": 4e-4, "time_s_mean": 9e-4},
            {"op": "allreduce", "ranks": 2, "bytes": 65536, "time_s": 2e-3},  # no mean: median
            {"op": "allreduce", "ranks": 2, "bytes": 262144, "time_s": 3e-3},  # too big
            {"op": "allgather", "ranks": 8, "bytes": 4096, "time_s": 1e-2, "time_s_mean": 1.3e-2},
            {"op": "allgather", "ranks": 1, "bytes": 4096, "time_s": 1e-5}]  # one rank: none
    assert fit_op_latency(rows) == {"allreduce": {2: [[1024.0, 9e-4], [65536.0, 2e-3]]},
                                    "allgather": {8: [[4096.0, 1.3e-2]]}}


def test_latency_floor_by_size_and_rank_count():
    from scidl.scaling.costmodel import latency_floor

    table = {2: [[1024, 1e-3], [16384, 2e-3], [65536, 1.5e-3]], 8: [[1024, 14e-3]]}
    # a step function of size at a measured count, never falling with size
    assert latency_floor(table, 2, 100) == 1e-3  # below the smallest size: the smallest's
    assert latency_floor(table, 2, 4096) == 1e-3
    assert latency_floor(table, 2, 20000) == 2e-3
    assert latency_floor(table, 2, 1e6) == 2e-3  # 64 KiB's 1.5 ms lifted to 16 KiB's 2 ms
    # between measured counts linear in p; beyond, scaled by (p - 1)/(p_m - 1)
    assert latency_floor(table, 4, 1024) == pytest.approx(1e-3 + (14e-3 - 1e-3) * 2 / 6)
    assert latency_floor(table, 16, 1024) == pytest.approx(14e-3 * 15 / 7)
    assert latency_floor({4: [[1024, 3e-3]]}, 2, 1024) == pytest.approx(1e-3)
    assert latency_floor(table, 1, 1024) == 0.0
    assert latency_floor({}, 4, 1024) == 0.0


def test_collective_cost_is_never_below_the_measured_small_collective():
    from scidl.comm.wire import Collective
    from scidl.scaling.costmodel import LinkCost, Topology, collective_cost

    floor = {"allreduce": {2: [[1024, 2e-3]]}}
    link = LinkCost(1e-5, 1e-8, 0.0, {}, floor)
    topo = Topology(1, link, link)
    small = collective_cost(Collective("allreduce", 40_000), 2, topo, "ring")
    assert small == 2e-3  # α-β: 2·1e-5 + 40 000·1e-8 = 0.42 ms, below the measured 2 ms
    big = collective_cost(Collective("allreduce", 4_000_000), 2, topo, "ring")
    assert big == pytest.approx(2 * 1e-5 + 4_000_000 * 1e-8)  # the α-β price is above it
    # an op without measurements keeps its α-β price
    ag = collective_cost(Collective("allgather", 1024), 2, topo, "ring")
    assert ag == pytest.approx(1e-5 + 1024 * 1e-8)


def test_ops_named_with_an_element_type_get_their_own_rate_outside_the_common_fit():
    from scidl.scaling.collectives import split_op

    assert split_op("allreduce") == ("allreduce", "float32")
    assert split_op("allreduce:float16") == ("allreduce", "float16")
    for bad in ("allreduce:int8", "broadcast", "broadcast:float16"):
        with pytest.raises(KeyError):
            split_op(bad)
    # float32 allreduce at 10 MB/s, allgather at 10 MB/s; float16 allreduce whose
    # reduction makes it run at 6 MB/s per byte of the ring model
    rows = _rows(1e-4, 10e6, 0.0, 10e6, ps=(2,))
    half = [{"op": "allreduce:float16", "ranks": 2, "bytes": n,
             "time_s": _time("allreduce", 2, n, 1e-4, 6e6, 0.0, 6e6),
             "time_s_mean": 0.01} for n in (1024, *SIZES)]
    plain, both = fit_alpha_beta_gamma(rows), fit_alpha_beta_gamma(rows + half)
    for key in ("alpha", "beta", "gamma"):  # the common fit describes float32 alone
        assert both[key] == plain[key]
    assert both["op_beta"]["allreduce:float16"] == pytest.approx(1 / 6e6, rel=1e-9)
    assert both["op_beta"]["allreduce"] == pytest.approx(1 / 10e6, rel=1e-9)
    assert both["op_latency"]["allreduce:float16"] == {2: [[1024.0, 0.01], [65536.0, 0.01]]}


def test_a_collectives_element_type_picks_its_rate_and_falls_back_to_the_bare_op():
    from scidl.comm.wire import Collective
    from scidl.scaling.costmodel import LinkCost, Topology, collective_cost, parse_comm

    n, p = 1_000_000, 2
    half = Collective("allreduce", n, dtype="float16")
    assert half.key == "allreduce:float16" and Collective("allreduce", n).key == "allreduce"
    bare = LinkCost(0.0, 1e-8, 0.0, {"allreduce": 2e-8})
    typed = LinkCost(0.0, 1e-8, 0.0, {"allreduce": 2e-8, "allreduce:float16": 5e-8},
                     {"allreduce:float16": {2: [[1024, 3e-3]]}})
    def cost(link, c):
        return collective_cost(c, p, Topology(1, link, link), "ring")
    # ring allreduce on 2 ranks sends n bytes per rank
    assert cost(bare, half) == pytest.approx(n * 2e-8)  # no float16 rate: the bare op's
    assert cost(typed, half) == pytest.approx(n * 5e-8)
    assert cost(typed, Collective("allreduce", n)) == pytest.approx(n * 2e-8)
    assert cost(typed, Collective("allreduce", 2048, dtype="float16")) == 3e-3  # its floor
    assert cost(typed, Collective("allreduce", 2048)) == pytest.approx(2048 * 2e-8)
    # the strategies name the type they put on the wire
    for spec, key in (("fp16", "allreduce:float16"), ("bf16", "allreduce:bfloat16"),
                      ("dense", "allreduce"), ("torch_fp16", "allreduce:float16")):
        comp, _ = parse_comm(spec)
        assert [c.key for c in comp.plan(1000, 4)] == [key], spec
