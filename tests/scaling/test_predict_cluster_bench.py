"""The pure parts of benchmarks/predict_cluster.py: measured step (median after the
warm-up), the relative error and its summary, the prediction of a row from stored
profile and hardware, and the docs block rendered from the JSON."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location(
        "predict_cluster_benchmark", ROOT / "benchmarks" / "predict_cluster.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


PROFILE = {"compute_s": 0.02, "grad_bytes": 4_000_000.0, "bucket_bytes": [4_000_000.0],
           "backward_fraction": 0.5, "samples_per_step": 64, "measured_here": True,
           "step_cv": 0.0}
# a link without a token bucket (burst 0), so the hand-computed cases stay simple
HW = {"name": "cluster-pv", "devices_per_node": 1, "overlap": 0.0, "algorithm": "ring",
      "intra": {"alpha": 0.0, "beta": 1e-8, "burst_bytes": 0},
      "inter": {"alpha": 0.0, "beta": 1e-8, "burst_bytes": 0},
      "compute_slowdown": {2: 1.5}, "measured_here": True}


def test_a_stored_file_without_a_burst_gets_its_shapers_bucket():
    b = _bench()
    old = {**HW, "inter": {"alpha": 0.0, "beta": 1e-8}, "intra": {"alpha": 0.0, "beta": 1e-8}}
    assert b.with_burst(old, "1gbit")["inter"]["burst_bytes"] == 500_000
    assert b.with_burst(old, "100mbit")["intra"]["burst_bytes"] == 65536
    assert b.with_burst(HW, "1gbit")["inter"]["burst_bytes"] == 0  # a file's own value stays
    # the 2-node dense row of test_predict_row_hand_computed: 0.07 s, less the bucket's
    # 500 kB at 1e-8 s/B = 5 ms (the 20 ms of compute refill it)
    d = {"profile": PROFILE, "hardware": {"1gbit": old},
         "rows": [{"link": "1gbit", "link_bits": 10**9, "nodes": 2, "comm": "dense",
                   "measured_s": 0.065, "measured_min_s": 0.06, "measured_max_s": 0.07}]}
    b.repredict(d)
    assert d["rows"][0]["predicted_s"] == pytest.approx(0.065)
    assert d["rows"][0]["predicted"]["burst_s"] == pytest.approx(0.005)


def test_measured_step_drops_warmup_and_takes_median():
    b = _bench()
    rows = [{"step_time_s": t} for t in (9.0, 9.0, 1.0, 3.0, 2.0)] + [{"loss": 1.0}]
    m = b.measured_step(rows, warmup=2)
    assert m == {"step_s": 2.0, "step_min_s": 1.0, "step_max_s": 3.0, "steps": 3}
    with pytest.raises(ValueError):
        b.measured_step(rows[:2], warmup=2)


def test_error_and_summary():
    b = _bench()
    assert b.rel_error(1.1, 1.0) == pytest.approx(0.1)
    assert b.rel_error(0.5, 1.0) == pytest.approx(-0.5)
    rows = [{"link": "1gbit", "nodes": n, "comm": "dense", "error": e}
            for n, e in ((2, 0.05), (4, -0.30), (8, 0.10))]
    s = b.summarize(rows)
    assert s["median_abs_error"] == pytest.approx(0.10)
    assert s["worst_abs_error"] == pytest.approx(0.30)
    assert s["worst"] == {"link": "1gbit", "nodes": 4, "comm": "dense", "ranks_per_node": 1}
    assert (s["within_10pct"], s["within_20pct"]) == (2, 2)


def test_predict_row_hand_computed():
    b = _bench()
    # ring at p = 2 on one 4 MB bucket: 2·(1/2)·4e6 bytes·1e-8 s/B = 0.04 s, no overlap;
    # compute 0.02 s × the measured slowdown 1.5 of 2 busy ranks = 0.03 s
    pred = b.predict_row(PROFILE, HW, 2, "dense")
    assert pred["compute_s"] == pytest.approx(0.03)
    assert pred["exposed_comm_s"] == pytest.approx(0.04)
    assert pred["step_s"] == pytest.approx(0.07)
    # fp16 sends half the bytes
    assert b.predict_row(PROFILE, HW, 2, "fp16")["exposed_comm_s"] == pytest.approx(0.02)


def test_repredict_and_render_quote_the_json():
    b = _bench()
    d = {"overrides": ["task.hidden=[8]"], "steps": 6, "warmup": 2, "date": "2026-12-02",
         "cpus": 2, "load_before": 1.5, "load_after": 2.5, "profile": PROFILE,
         "hardware": {"1gbit": HW},
         "rows": [{"link": "1gbit", "link_bits": 10**9, "nodes": 2, "comm": "dense",
                   "measured_s": 0.08, "measured_min_s": 0.075, "measured_max_s": 0.09}]}
    b.repredict(d)
    row = d["rows"][0]
    assert row["predicted_s"] == pytest.approx(0.07)
    assert row["error"] == pytest.approx(-0.125)
    assert d["summary"]["median_abs_error"] == pytest.approx(0.125)
    text = b.render(d)
    assert "| 1gbit | 2 | dense | 0.070 | 0.080 [0.075–0.090] | 1 | -12% |" in text
    assert "Median |error| 12.5% over 1 rows" in text
    assert "load average 1.5 before and 2.5 after" in text
    assert "p = 2: ×1.50" in text


SHARING = {"cores": 2, "probe_step_s": 0.002}


def test_sync_count_is_the_strategys_collectives_per_step():
    b = _bench()
    assert b.sync_count(PROFILE, HW, 2, "dense") == 1  # one bucket, one allreduce
    assert b.sync_count(PROFILE, HW, 2, "topk:0.01") == 2  # counts, then values+indices
    two = {**PROFILE, "bucket_bytes": [2_000_000.0, 2_000_000.0]}
    assert b.sync_count(two, HW, 2, "fp16") == 2  # one allreduce per bucket
    # hierarchical: one allreduce with one rank per node; reduce-scatter in the node,
    # allreduce across, allgather in the node with two
    assert b.sync_count(PROFILE, HW, 2, "hierarchical") == 1
    assert b.sync_count(PROFILE, HW, 2, "hierarchical", ranks_per_node=2) == 3


def test_predict_row_with_the_contention_model_hand_computed():
    b = _bench()
    # probe: x1.5 for 2 ranks on 2 cores, steps of w = 2 ms: δ(2) = 0.5 x 2 ms = 1 ms per
    # collective; dense has one per step over 20 ms of compute: 1 + 1/20 = 1.05
    pred = b.predict_row(PROFILE, HW, 2, "dense", SHARING)
    assert pred["slowdown"] == pytest.approx(1.05)
    assert pred["compute_s"] == pytest.approx(0.021)
    assert pred["step_s"] == pytest.approx(0.061)
    # 4 ranks probed at x3.0: sharing 4/2 = 2, δ(4) = (3 - 2) x 2 ms = 2 ms; top-k's two
    # collectives over 20 ms: 2 + 2 x 2/20 = 2.2
    hw4 = {**HW, "compute_slowdown": {2: 1.5, 4: 3.0}}
    assert b.contention_factor(PROFILE, hw4, 4, "topk:0.01", SHARING) == pytest.approx(2.2)
    # without the calibration: the probe's factor as measured
    assert b.predict_row(PROFILE, hw4, 4, "dense")["slowdown"] == pytest.approx(3.0)


def test_contention_factor_counts_the_strategys_own_computation():
    b = _bench()
    prof = {**PROFILE, "codec_fraction": {"topk:0.01": 1.0}}
    hw4 = {**HW, "compute_slowdown": {4: 3.0}}
    # compute 20 ms + codec 20 ms = 40 ms alone; 2 + 2 x 2 ms / 40 ms = 2.1
    assert b.contention_factor(prof, hw4, 4, "topk:0.01", SHARING) == pytest.approx(2.1)


def test_repredict_uses_the_stored_contention_calibration():
    b = _bench()
    d = {"profile": PROFILE, "hardware": {"1gbit": HW}, "contention": {"1gbit": SHARING},
         "rows": [{"link": "1gbit", "link_bits": 10**9, "nodes": 2, "comm": "dense",
                   "measured_s": 0.061, "measured_min_s": 0.06, "measured_max_s": 0.07}]}
    b.repredict(d)
    assert d["rows"][0]["predicted_s"] == pytest.approx(0.061)
    assert d["rows"][0]["error"] == pytest.approx(0.0, abs=1e-12)
    d.update({"overrides": ["task.hidden=[8]"], "steps": 6, "warmup": 2, "date": "2026-12-02",
              "cpus": 2, "load_before": 1.5, "load_after": 2.5})
    d["contention"]["1gbit"] = {**SHARING, "load": 1.2}
    text = b.render(d)
    assert "| 1gbit | 2 | dense | 0.061 | 0.061 [0.060–0.070] | 1 | +0% | ×1.05 | 0.021 |" in text
    assert "1gbit: 2.00 ms on 2 cores, load 1.2" in text


def test_repredict_refits_the_link_from_the_stored_timings():
    from scidl.scaling.collectives import model_coefficients

    b = _bench()
    # timings of a 125 MB/s link whose first 500 KB per rank pass at 400 MB/s
    rows = []
    for n in (2**16, 2**18, 2**20, 2**22):
        for op in ("allreduce", "allgather"):
            ka, kb, _ = model_coefficients(op, 2, n)
            wire = kb / 4e8 if kb <= 5e5 else 5e5 / 4e8 + (kb - 5e5) / 125e6
            rows.append({"op": op, "ranks": 2, "bytes": n, "time_s": ka * 1e-4 + wire})
    d = {"profile": PROFILE, "hardware": {"1gbit": HW}, "calibration_rows": {"1gbit": rows},
         "rows": [{"link": "1gbit", "link_bits": 10**9, "nodes": 2, "comm": "dense",
                   "measured_s": 0.06, "measured_min_s": 0.06, "measured_max_s": 0.06}]}
    b.repredict(d)
    inter = d["hardware"]["1gbit"]["inter"]
    # allreduce's cost per byte (β + γ/2): the sustained rate, not the burst's
    assert 1 / (inter["beta"] + inter["gamma"] / 2) == pytest.approx(125e6, rel=0.03)
    assert "marginal fit of 8 timings" in inter["note"]
    # 4 MB allreduce on 2 ranks at the sustained rate: ≈ 32 ms + 2α, not the burst's
    assert d["rows"][0]["predicted"]["comm_s"] == pytest.approx(0.032, rel=0.05)


def test_repeats_take_their_median_and_keep_their_spread():
    b = _bench()
    reps = [{"step_s": s, "step_min_s": s - 0.01, "step_max_s": s + 0.01, "steps": 12,
             "load_before": lb, "load_after": lb + 1, "wall_s": 10.0}
            for s, lb in ((0.08, 1.0), (0.06, 2.0), (0.07, 3.0))]
    m = b.aggregate_repeats(reps)
    assert m["measured_s"] == pytest.approx(0.07)
    assert (m["repeat_lo_s"], m["repeat_hi_s"]) == (0.06, 0.08)
    assert m["repeat_spread"] == pytest.approx(0.01 / 0.07)  # half the range, relative
    assert (m["measured_min_s"], m["measured_max_s"]) == pytest.approx((0.05, 0.09))
    assert (m["timed_steps"], m["load_before"], m["load_after"], m["wall_s"]) == (36, 1.0, 4.0, 30.0)
    with pytest.raises(ValueError):
        b.aggregate_repeats([])
    # a stored row from before repeats is its one run
    old = {"measured_s": 0.05, "measured_min_s": 0.04, "measured_max_s": 0.06, "timed_steps": 12}
    assert [r["step_s"] for r in b.row_repeats(old)] == [0.05]
    assert b.aggregate_repeats(b.row_repeats(old))["repeat_spread"] == 0.0


def test_runs_interleave_the_strategies_and_reverse_each_repeat():
    b = _bench()
    assert b.interleaved(["a", "b", "c"], 2) == [(0, "a"), (0, "b"), (0, "c"),
                                                  (1, "c"), (1, "b"), (1, "a")]
    assert b.interleaved(["a"], 1) == [(0, "a")]


def test_repredict_reads_the_repeats_and_render_shows_their_spread():
    b = _bench()
    reps = [{"step_s": s, "step_min_s": s, "step_max_s": s, "steps": 12} for s in (0.08, 0.06)]
    d = {"overrides": ["task.hidden=[8]"], "steps": 6, "warmup": 2, "date": "2026-12-02",
         "cpus": 2, "load_before": 1.5, "load_after": 2.5, "profile": PROFILE,
         "hardware": {"1gbit": HW},
         "rows": [{"link": "1gbit", "link_bits": 10**9, "nodes": 2, "comm": "dense",
                   "repeats": reps}]}
    b.repredict(d)
    row = d["rows"][0]
    assert row["measured_s"] == pytest.approx(0.07)  # the median of the repeats
    assert row["error"] == pytest.approx(0.0, abs=1e-12)
    assert d["summary"]["median_repeat_spread"] == pytest.approx(0.01 / 0.07)
    text = b.render(d)
    assert "| 0.070 [0.060–0.080] | 2: ±14% | +0% |" in text
    assert "within ±14.3% of their median" in text


PROBE = {"slowdown": {2: 1.5}, "range": {2: [1.25, 2.0]}, "probe_step_s": 0.002, "cores": 2,
         "groups": 2, "blocks": 8, "load": 0.3}


def test_one_compute_probe_is_shared_by_every_links_hardware_file():
    b = _bench()
    # each link's file with its own probe (a noisy one read x2.2), the sweep's one probe
    # replaces both: the slowdown does not depend on the link rate
    hw100 = {**HW, "compute_slowdown": {2: 2.2}}
    hw1g = {**HW, "compute_slowdown": {2: 1.1}}
    shared = b.with_probe(hw100, PROBE)
    assert shared["compute_slowdown"] == {2: 1.5}
    assert shared["compute_slowdown_range"] == {2: [1.25, 2.0]}
    assert (shared["probe_step_s"], shared["concurrent_devices"]) == (0.002, 2)
    assert b.with_probe(hw100, None) is hw100  # a file from before: unchanged
    rows = [{"link": k, "link_bits": bits, "nodes": 2, "comm": "dense", "measured_s": 0.061,
             "measured_min_s": 0.06, "measured_max_s": 0.07}
            for k, bits in (("100mbit", 10**8), ("1gbit", 10**9))]
    d = {"profile": PROFILE, "hardware": {"100mbit": hw100, "1gbit": hw1g},
         "compute_probe": PROBE, "rows": rows}
    b.repredict(d)
    # δ(2) = (1.5 − 1) × 2 ms = 1 ms over 20 ms of compute: ×1.05 on both links
    assert [r["predicted"]["slowdown"] for r in d["rows"]] == pytest.approx([1.05, 1.05])
    assert b.sharing_of(d, "1gbit") == {"cores": 2, "probe_step_s": 0.002}
    d.update({"overrides": ["task.hidden=[8]"], "steps": 6, "warmup": 2, "date": "2026-12-02",
              "cpus": 2, "load_before": 1.5, "load_after": 2.5})
    assert "p = 2: ×1.50 [1.25–2.00]; one-rank probe step w = 2.00 ms" in b.render(d)


def test_the_probes_spread_widens_the_predicted_band():
    b = _bench()
    hw = b.with_probe(HW, PROBE)
    pred = b.predict_row(PROFILE, hw, 2, "dense", b.sharing_of({"compute_probe": PROBE}, "x"))
    assert pred["step_s"] == pytest.approx(0.061)
    # quartiles x1.25 and x2.0: δ = 0.5 ms and 2 ms, slowdown 1.025 and 1.1 of 20 ms
    assert pred["step_lo_s"] == pytest.approx(0.061 - 0.025 * 0.02)
    assert pred["step_hi_s"] == pytest.approx(0.061 + 0.05 * 0.02)
    assert b._band(pred) == "0.061 [0.060–0.062]"
    # without a measured spread there is no band from it
    plain = b.predict_row(PROFILE, HW, 2, "dense", {"cores": 2, "probe_step_s": 0.002})
    assert plain["step_lo_s"] == plain["step_hi_s"] == pytest.approx(0.061)


def test_repredict_floors_small_collectives_at_every_node_count():
    # a link whose fit reads α = 0, with small allreduces measured at 2 and 8 nodes:
    # PowerSGD's two small allreduces per step cost what was measured, not ~0
    b = _bench()
    cal = [{"op": "allreduce", "ranks": 2, "bytes": n, "time_s": 2e-3 + n * 1e-8,
            "time_s_mean": 3e-3 + n * 1e-8} for n in (1024, 65536, 2**20, 2**22)]
    small8 = [{"op": "allreduce", "ranks": 8, "bytes": n, "time_s": 0.02, "time_s_mean": 0.025}
              for n in (1024, 65536)]
    d = {"profile": PROFILE, "hardware": {"1gbit": HW}, "calibration_rows": {"1gbit": cal},
         "latency_rows": {"1gbit": {"8": small8}},
         "rows": [{"link": "1gbit", "link_bits": 10**9, "nodes": p, "comm": "powersgd:4",
                   "measured_s": 0.1, "measured_min_s": 0.1, "measured_max_s": 0.1}
                  for p in (2, 8)]}
    b.repredict(d)
    table = d["hardware"]["1gbit"]["inter"]["op_latency"]["allreduce"]
    assert sorted(int(p) for p in table) == [2, 8]
    two, eight = (r["predicted"]["comm_s"] for r in d["rows"])
    # one bucket: two allreduces per step (P and Q), each at least the measured mean
    assert two >= 2 * 3e-3
    assert eight == pytest.approx(2 * 0.025, rel=1e-6)


def test_links_are_calibrated_on_a_ring_of_at_least_three_nodes():
    b = _bench()
    assert b.calibration_nodes([2, 4, 8]) == 4
    assert b.calibration_nodes([8, 3, 2]) == 3
    assert b.calibration_nodes([2]) == 2  # nothing larger: the fewest


def test_machine_drift_scales_the_profiles_compute():
    b = _bench()
    d = {"reference": {"profile": 0.010, "1gbit/4": 0.008}}
    assert b.drift(d, "1gbit", 4) == pytest.approx(0.8)
    assert b.drift(d, "1gbit", 8) == 1.0  # not measured: as profiled
    assert b.drift({}, "1gbit", 4) == 1.0  # a file from before
    prof = {**PROFILE, "batch_curve": [[32, 0.012], [64, 0.02]]}
    out = b.drifted_profile(prof, 0.8)
    assert out["compute_s"] == pytest.approx(0.016)
    assert out["batch_curve"] == [[32, pytest.approx(0.0096)], [64, pytest.approx(0.016)]]
    assert b.drifted_profile(prof, 1.0) is prof
    # the row's prediction follows: a rank alone, no link cost (one node), compute only
    hw = {**HW, "compute_slowdown": {}}
    d2 = {"profile": PROFILE, "hardware": {"1gbit": hw}, "reference": {"profile": 0.01, "1gbit/1": 0.005},
          "rows": [{"link": "1gbit", "link_bits": 10**9, "nodes": 1, "comm": "dense",
                    "measured_s": 0.01, "measured_min_s": 0.01, "measured_max_s": 0.01}]}
    b.repredict(d2)
    assert d2["rows"][0]["predicted"]["compute_s"] == pytest.approx(0.01)  # 0.02 × 0.5
    assert "Machine drift" in b.render({**d2, "overrides": [], "steps": 16, "warmup": 4,
                                        "date": "2026-12-03", "cpus": 2, "load_before": 0.1,
                                        "load_after": 0.2})


def test_a_calibration_without_float16_is_taken_again():
    b = _bench()
    rows = [{"op": op, "ranks": 4, "bytes": 1024, "time_s": 0.001}
            for op in ("allreduce", "allgather")]
    d = {"calibration_rows": {"1gbit": rows}}
    assert b.missing_ops(d, "1gbit") == ["allreduce:float16"]
    d["calibration_rows"]["1gbit"] = [*rows, {**rows[0], "op": "allreduce:float16"}]
    assert b.missing_ops(d, "1gbit") == []
    assert b.missing_ops({}, "100mbit") == list(b.CALIBRATION_OPS)


def test_the_cores_own_rates_enter_every_links_levels():
    b = _bench()
    # loopback timings of allreduce at 2 and 4 ranks: 1 MB more costs 1 ms and 2 ms
    rows = [{"op": "allreduce", "ranks": p, "bytes": n, "time_s": t}
            for p, pts in ((2, ((1e6, 0.002), (2e6, 0.003))), (4, ((1e6, 0.003), (2e6, 0.005))))
            for n, t in pts]
    from scidl.scaling.collectives import cores_rates

    table = cores_rates(rows)
    # the ring's beta term: 2(p-1)/p bytes per byte of the message
    assert table["allreduce"][2] == pytest.approx(1e-3 / (2 * 1 / 2 * 1e6))
    assert table["allreduce"][4] == pytest.approx(2e-3 / (2 * 3 / 4 * 1e6))
    hw = b.with_cores(HW, rows)
    assert hw["inter"]["cores_beta"] == table and hw["intra"]["cores_beta"] == table
    assert b.with_cores(HW, None) is HW


# loopback timings (cores_rows): allreduce at 2 ranks 1e-10 s/B of the ring's beta term
# (1 MB more costs 2·(1/2)·1e6·1e-10 = 0.1 ms), at 4 ranks 2e-10 (0.3 ms), α = 0
LOOPBACK = [{"op": "allreduce", "ranks": p, "bytes": n, "time_s": t}
            for p, pts in ((2, ((1e6, 1e-4), (2e6, 2e-4))), (4, ((1e6, 3e-4), (2e6, 6e-4))))
            for n, t in pts]


def test_two_ranks_per_node_price_the_node_level_at_the_cores_rates():
    b = _bench()
    hw = {**HW, "compute_slowdown": {2: 1.5, 4: 2.0}}
    level = b.node_level(LOOPBACK, 2)
    assert level["alpha"] == pytest.approx(0.0, abs=1e-12)
    assert level["op_beta"]["allreduce"] == pytest.approx(1e-10)
    assert level["op_beta_ranks"] == 2
    out = b.with_ranks_per_node(hw, 2, LOOPBACK)
    assert out["devices_per_node"] == 2 and out["inter"] == hw["inter"]
    assert b.with_ranks_per_node(hw, 1, LOOPBACK) is hw
    # 2 nodes × 2 ranks, one 4 MB bucket, no overlap; compute 0.02 × 2.0 (4 busy ranks)
    # hierarchical: ring inside the node at the cores' rate with 4 ranks busy (2e-10):
    #   2·(1/2)·4e6·2e-10 = 0.8 ms; across the nodes each rank's half, both ranks on the
    #   node's one link (β·2): 2·(1/2)·2e6·2e-8 = 40 ms
    hier = b.predict_row(PROFILE, hw, 2, "hierarchical", None, 2, LOOPBACK)
    assert hier["compute_s"] == pytest.approx(0.04)
    assert hier["comm_s"] == pytest.approx(0.0408)
    assert hier["step_s"] == pytest.approx(0.0808)
    # dense: one ring of 4 ranks, each step waits for the slower of its hops (the link):
    # 2·(3/4)·4e6·1e-8 = 60 ms, as 4 nodes of one rank each
    dense = b.predict_row(PROFILE, hw, 2, "dense", None, 2, LOOPBACK)
    assert dense["comm_s"] == pytest.approx(0.06)
    assert dense["comm_s"] == pytest.approx(b.predict_row(PROFILE, hw, 4, "dense")["comm_s"])
    with pytest.raises(ValueError, match="no loopback timings at 8 ranks"):
        b.node_level(LOOPBACK, 8)
    with pytest.raises(ValueError, match="cores_rows"):
        b.with_ranks_per_node(hw, 2, None)


def test_blocks_rows_and_the_table_tell_ranks_per_node_apart():
    b = _bench()
    assert b.blocks([2, 4], [2, 1]) == [(1, 4), (1, 2), (2, 4), (2, 2)]
    assert b.block_key("1gbit", 2) == "1gbit/2" and b.block_key("1gbit", 2, 2) == "1gbit/2x2"
    assert b._block("1gbit/2x2") == ("1gbit", 2, 2) and b._block("100mbit/8") == ("100mbit", 8, 1)
    assert b.drift({"reference": {"profile": 0.01, "1gbit/2x2": 0.02}}, "1gbit", 2, 2) == 2.0
    hw = {**HW, "compute_slowdown": {2: 1.5, 4: 2.0}}
    row = {"link": "1gbit", "link_bits": 10**9, "comm": "hierarchical", "measured_s": 0.08,
           "measured_min_s": 0.075, "measured_max_s": 0.09}
    d = {"overrides": [], "steps": 6, "warmup": 2, "date": "2026-12-04", "cpus": 2,
         "load_before": 1.0, "load_after": 1.0, "profile": PROFILE, "hardware": {"1gbit": hw},
         "cores_rows": LOOPBACK,
         "rows": [{**row, "nodes": 2, "ranks_per_node": 2}, {**row, "nodes": 2}]}
    b.repredict(d)
    two, one = d["rows"]
    assert two["predicted_s"] == pytest.approx(0.0808)  # the hand-computed case above
    assert one["predicted_s"] == pytest.approx(0.03 + 0.04)  # 2 nodes of one rank
    assert b._row(d, "1gbit", 2, "hierarchical", 2) is two
    assert b._row(d, "1gbit", 2, "hierarchical") is one
    text = b.render(d)
    assert "| 1gbit | 2 × 2 | hierarchical | 0.081 |" in text
    assert "| 1gbit | 2 | hierarchical | 0.070 |" in text
    assert "unless the nodes column says nodes × ranks per node" in text
