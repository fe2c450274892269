"""The step terms besides the collectives, each against a hand-computed case."""

from __future__ import annotations

import math

import pytest

from scidl.scaling.costmodel import (
    compute_at_batch,
    expected_max_z,
    interference_time,
    io_stall,
    io_time,
    straggler_time,
    timeline_ready_times,
)
from scidl.scaling.hardware import load_hardware
from scidl.scaling.predict import StepProfile, exposed_comm, predict_curve, predict_point


def test_expected_max_blom_hand_computed():
    # p = 2: Φ⁻¹(1.625/2.25) = Φ⁻¹(0.72222) = 0.5895 (exact E[max of 2] = 1/√π = 0.5642)
    assert expected_max_z(2) == pytest.approx(0.5895, abs=1e-4)
    assert expected_max_z(2) == pytest.approx(1 / math.sqrt(math.pi), rel=0.05)
    assert expected_max_z(1) == 0.0
    # grows with p, below the Gumbel bound √(2 ln p)
    assert expected_max_z(1000) == pytest.approx(3.2273, abs=1e-3)
    assert expected_max_z(1000) < math.sqrt(2 * math.log(1000))


def test_straggler_time_hand_computed():
    # σ = 10 ms, p = 2 → 0.01·0.5895
    assert straggler_time(2, 0.01) == pytest.approx(0.005895, abs=1e-6)
    assert straggler_time(1, 0.01) == 0.0
    assert straggler_time(1000, 0.0) == 0.0
    assert straggler_time(4096, 0.01) > straggler_time(64, 0.01)


def test_compute_at_batch_hand_computed():
    curve = [(8, 0.10), (32, 0.25)]
    assert compute_at_batch(16, curve) == pytest.approx(0.10 + 8 * 0.15 / 24)  # 0.15
    # below the curve: affine t0 + k·b through the two smallest points
    assert compute_at_batch(4, curve) == pytest.approx(0.10 - 4 * 0.15 / 24)  # 0.075
    # never below 5 % of the smallest measured time
    assert compute_at_batch(0.001, [(8, 0.10), (9, 1.0)]) == pytest.approx(0.005)
    assert compute_at_batch(64, curve) == pytest.approx(0.25 + 32 * 0.15 / 24)  # 0.45
    assert compute_at_batch(8, [(8, 0.2)]) == pytest.approx(0.2)


def test_interference_hand_computed():
    # backward 20 % slower for the 50 ms communication overlaps it → 10 ms
    assert interference_time(0.05, 0.2, 1.2) == pytest.approx(0.01)
    # overlap longer than backward: only the backward is slowed
    assert interference_time(0.5, 0.2, 1.2) == pytest.approx(0.04)
    assert interference_time(0.05, 0.2, 1.0) == 0.0


def test_io_hand_computed():
    # 1 MB per rank on 1000 ranks through 10 GB/s shared → 0.1 s > 10 ms alone
    assert io_time(0.01, 1e6, 1000, 1e10) == pytest.approx(0.1)
    assert io_time(0.01, 1e6, 2, 1e10) == pytest.approx(0.01)
    assert io_time(0.01, 1e6, 1000, None) == pytest.approx(0.01)
    # a prefetching loader stalls by what reading takes beyond compute
    assert io_stall(0.1, 0.08) == pytest.approx(0.02)
    assert io_stall(0.05, 0.08) == 0.0
    assert io_stall(0.05, 0.08, prefetch=False) == pytest.approx(0.05)


def test_timeline_ready_times_hand_computed():
    # uniform: ready by bytes; recorded: the given fractions of the backward pass
    assert timeline_ready_times(1.0, 2.0, None, [1, 3]) == pytest.approx([1.5, 3.0])
    assert timeline_ready_times(1.0, 2.0, [0.8, 1.0], [1, 3]) == pytest.approx([2.6, 3.0])


def test_recorded_timeline_exposes_more_than_uniform():
    # fwd 1, bwd 2; buckets [1, 1] bytes, each costs 1 s. Uniform: ready at 2, 3 →
    # finish 3, 4 → exposed 1. Recorded: both ready at the end (3) → finish 5 → exposed 2.
    assert exposed_comm(1.0, 2.0, [1.0, 1.0], [1, 1], 1.0) == pytest.approx(1.0)
    assert exposed_comm(1.0, 2.0, [1.0, 1.0], [1, 1], 1.0,
                        ready_fraction=[1.0, 1.0]) == pytest.approx(2.0)


def test_predict_point_adds_the_terms():
    hw = load_hardware("summit")
    base = StepProfile(compute_s=0.5, grad_bytes=4e8, samples_per_step=8)
    full = base.model_copy(update={"step_cv": 0.02, "interference": 1.1, "loader_s": 0.01})
    a = predict_point(base, hw, 1200)
    b = predict_point(full, hw, 1200)
    assert a["straggler_s"] == 0.0 and a["interference_s"] == 0.0
    assert b["straggler_s"] == pytest.approx(0.02 * 0.5 * expected_max_z(1200))
    hidden = b["comm_s"] - b["exposed_comm_s"]
    assert b["interference_s"] == pytest.approx(0.1 * min(hidden, 0.5 * full.backward_fraction))
    assert b["step_s"] == pytest.approx(a["step_s"] + b["straggler_s"] + b["interference_s"])
    assert b["step_lo_s"] < b["step_s"] < b["step_hi_s"]
    curve = predict_curve(full, hw, [1, 1200])
    assert curve[1]["efficiency_lo"] < curve[1]["efficiency"] < curve[1]["efficiency_hi"]


def test_strong_scaling_uses_the_batch_curve():
    hw = load_hardware("summit").model_copy(update={"inter": None})
    curve = [(2, 0.3), (8, 0.6), (32, 1.5)]
    prof = StepProfile(compute_s=1.5, grad_bytes=0, samples_per_step=32, batch_curve=curve)
    pt = predict_point(prof, hw, 4, mode="strong")
    # local batch 8 takes 0.6 of the 1.5 s at 32 → not 1.5/4 = 0.375
    assert pt["compute_s"] == pytest.approx(1.5 * 0.6 / 1.5)
    plain = predict_point(prof.model_copy(update={"batch_curve": None}), hw, 4, mode="strong")
    assert plain["compute_s"] == pytest.approx(0.375)


def test_hardware_noise_and_fs_contention():
    hw = load_hardware("summit").model_copy(update={"straggler_cv": 0.01, "fs_bandwidth": 1e9})
    prof = StepProfile(compute_s=0.1, grad_bytes=0, loader_s=0.001, input_bytes_per_step=1e6)
    pt = predict_point(prof, hw, 1000)
    assert pt["straggler_s"] == pytest.approx(0.001 * expected_max_z(1000))
    assert pt["io_stall_s"] == pytest.approx(1000 * 1e6 / 1e9 - 0.1)  # 0.9 s


def test_spread_measured_here_does_not_travel_to_a_preset():
    summit = load_hardware("summit").model_copy(update={"straggler_cv": 0.01})
    here = StepProfile(compute_s=0.1, grad_bytes=0, step_cv=0.5, interference=3.0,
                       measured_here=True)
    pt = predict_point(here, summit, 64)
    assert pt["straggler_s"] == pytest.approx(0.01 * pt["compute_s"] * expected_max_z(64))
    local = summit.model_copy(update={"measured_here": True})
    pt = predict_point(here, local, 64)
    assert pt["straggler_s"] == pytest.approx(0.5 * 0.1 * expected_max_z(64))


def test_codec_time_hand_computed():
    # the strategy's own computation: 50 % of a 20 ms compute at one rank, ×2 with the
    # measured slowdown of 4 busy ranks → 20 ms, added to the step; other strategies none
    from scidl.scaling.costmodel import parse_comm
    from scidl.scaling.hardware import Hardware
    from scidl.scaling.predict import codec_time

    hw = Hardware.model_validate({
        "name": "t", "overlap": 0.0, "intra": {"alpha": 0.0, "beta": 0.0},
        "compute_slowdown": {4: 2.0}, "measured_here": True})
    prof = StepProfile(compute_s=0.02, grad_bytes=4e6, measured_here=True,
                       codec_fraction={"topk:0.01": 0.5})
    topk, _ = parse_comm("topk:0.01")
    assert codec_time(prof, hw, 4, topk) == pytest.approx(0.02)
    assert codec_time(prof, hw, 1, topk) == 0.0
    assert codec_time(prof, hw, 4, parse_comm("fp16")[0]) == 0.0
    base = predict_point(prof.model_copy(update={"codec_fraction": None}), hw, 4, comp=topk)
    pt = predict_point(prof, hw, 4, comp=topk)
    assert pt["codec_s"] == pytest.approx(0.02)
    assert pt["step_s"] == pytest.approx(base["step_s"] + 0.02)
    # a profile measured here says nothing about a preset's machine: no codec term there
    summit = load_hardware("summit")
    assert predict_point(prof, summit, 4, comp=topk)["codec_s"] == 0.0


def test_burst_saving_hand_computed():
    from scidl.scaling.costmodel import burst_saving

    # a 64 KiB bucket at 12.5 MB/s holds 5.24 ms of traffic
    assert burst_saving(0.030, 65536 / 12.5e6, 0.020) == pytest.approx(65536 / 12.5e6)
    assert burst_saving(0.002, 0.005, 0.020) == 0.002  # a step smaller than the bucket
    assert burst_saving(0.030, 0.005, 0.001) == 0.001  # 1 ms of idle refills 1 ms
    assert burst_saving(0.0, 0.005, 0.020) == 0.0


def test_a_link_with_a_burst_charges_the_bucket_less():
    # 2 nodes, one rank each, ring allreduce of 4 MB: 2·(p−1)/p · 4e6 = 4e6 bytes per
    # link at β = 1e-7 s/B: 0.4 s on the wire; a 64 KiB bucket saves 65536·β = 6.55 ms
    from scidl.scaling.hardware import Hardware

    level = {"alpha": 1e-4, "beta": 1e-7}
    plain = Hardware(name="x", intra=level, inter=level, overlap=0.0)
    shaped = Hardware(name="x", intra=level, inter={**level, "burst_bytes": 65536}, overlap=0.0)
    prof = StepProfile(compute_s=0.05, grad_bytes=4e6, samples_per_step=8)
    a, b = predict_point(prof, plain, 2), predict_point(prof, shaped, 2)
    assert a["burst_s"] == 0.0 and b["burst_s"] == pytest.approx(65536 * 1e-7)
    assert a["step_s"] - b["step_s"] == pytest.approx(65536 * 1e-7)
    # inside one node nothing crosses the link
    assert predict_point(prof, shaped.model_copy(update={"devices_per_node": 2}), 2)["burst_s"] == 0.0
