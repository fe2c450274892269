"""The hardware file of a virtual cluster carries the measured compute slowdown of p
busy ranks (the virtual nodes share this machine's cores), and the cost model applies it."""

from __future__ import annotations

import pytest

from scidl.cluster.bench import cluster_hardware, cluster_probe_counts
from scidl.cluster.spec import ClusterSpec
from scidl.scaling.hardware import Hardware
from scidl.scaling.predict import StepProfile, predict_point

FIT = {"alpha": 1e-4, "beta": 1e-8, "gamma": 0.0, "n": 6, "rel_rms": 0.05}


def test_probe_counts_cover_every_doubling_and_the_node_count():
    assert cluster_probe_counts(2) == [2]
    assert cluster_probe_counts(8) == [2, 4, 8]
    assert cluster_probe_counts(6) == [2, 4, 6]


def test_cluster_hardware_carries_the_slowdown_into_the_prediction():
    # before: a virtual cluster's hardware file had no compute_slowdown, so 8 ranks on
    # 2 shared cores were predicted to compute as fast as one rank alone
    spec = ClusterSpec(name="pvt", nodes=8, link_bits=10**9)
    hw = Hardware.model_validate(cluster_hardware(spec, FIT, 1e9, {2: 1.1, 4: 2.0, 8: 4.2}))
    assert hw.measured_here and hw.compute_slowdown == {2: 1.1, 4: 2.0, 8: 4.2}
    prof = StepProfile(compute_s=0.02, grad_bytes=0.0, measured_here=True)
    assert predict_point(prof, hw, 8)["compute_s"] == pytest.approx(0.02 * 4.2)
    assert predict_point(prof, hw, 4)["compute_s"] == pytest.approx(0.02 * 2.0)
    assert predict_point(prof, hw, 1)["compute_s"] == pytest.approx(0.02)
    # without a probe the old file still loads (no slowdown)
    assert Hardware.model_validate(cluster_hardware(spec, FIT, 1e9)).compute_slowdown == {}


def test_measured_slowdown_is_the_slowest_rank_so_no_straggler_on_top():
    # compute_slowdown[p] is the slowest of p busy ranks (the probe's max per round): the
    # straggler term added σ·E[max of p] on top of it, counting the same wait twice
    spec = ClusterSpec(name="pvt", nodes=4, link_bits=10**9)
    hw = Hardware.model_validate(cluster_hardware(spec, FIT, 1e9, {2: 1.2}))
    prof = StepProfile(compute_s=0.1, grad_bytes=0.0, measured_here=True, step_cv=0.2)
    at2 = predict_point(prof, hw, 2)
    assert at2["straggler_s"] == 0.0 and at2["step_s"] == pytest.approx(0.12)
    # a count the probe did not measure: σ = 0.2·0.1 s, E[max of 4] = Φ⁻¹(3.625/4.25) = 1.0491 (Blom)
    at4 = predict_point(prof, hw, 4)
    assert at4["straggler_s"] == pytest.approx(0.02 * 1.0491, rel=1e-3)


def test_cluster_hardware_carries_the_shapers_burst():
    from scidl.cluster.spec import tbf_args, tbf_burst_bytes

    for bits in (10**8, 10**9):
        hw = Hardware.model_validate(cluster_hardware(ClusterSpec(name="pvt", nodes=2,
                                                                  link_bits=bits), FIT, 1e9))
        assert hw.inter is not None and hw.inter.burst_bytes == tbf_burst_bytes(bits)
        assert tbf_args(bits)[4] == str(tbf_burst_bytes(bits))  # the bucket tc is given
    assert tbf_burst_bytes(10**8) == 65536 and tbf_burst_bytes(10**9) == 500000
