"""``scidl predict`` prices compute contention with the model of
scidl.scaling.contention when the hardware file holds its calibration (the probe's
one-rank step and the cores), against hand-computed cases; the link refit of
benchmarks/predict_cluster.py."""

from __future__ import annotations

import pytest

from scidl.scaling.collectives import contention_fields
from scidl.scaling.costmodel import parse_comm
from scidl.scaling.hardware import Hardware, load_hardware, save_hardware
from scidl.scaling.predict import StepProfile, contention, predict_curve, predict_point

PROFILE = StepProfile(compute_s=0.02, grad_bytes=4_000_000.0, bucket_bytes=[4_000_000.0],
                      backward_fraction=0.5, samples_per_step=64, measured_here=True,
                      step_cv=0.0)


def _hw(**kw) -> Hardware:
    base = {"name": "cluster-pv", "devices_per_node": 1, "overlap": 0.0,
            "intra": {"alpha": 0.0, "beta": 1e-8}, "inter": {"alpha": 0.0, "beta": 1e-8},
            "compute_slowdown": {2: 1.5, 4: 3.0}, "measured_here": True}
    return Hardware.model_validate({**base, **kw})


CAL = contention_fields(0.002, cores=2)


def test_contention_fields_are_the_model_calibration():
    assert CAL == {"probe_step_s": 0.002, "concurrent_devices": 2}


def test_predict_point_uses_the_contention_model():
    hw = _hw(**CAL)
    # 2 ranks on 2 cores, probe x1.5 on 2 ms steps: δ = 1 ms per collective; dense has
    # one per step over 20 ms of compute: 1 + 1/20 = 1.05
    pt = predict_point(PROFILE, hw, 2)
    assert pt["slowdown"] == pytest.approx(1.05)
    assert pt["compute_s"] == pytest.approx(0.021)
    # comm: 4 MB ring allreduce on 2 ranks at 1e-8 s/B = 0.04 s, not overlapped
    assert pt["step_s"] == pytest.approx(0.061)
    # 4 ranks probed x3.0: sharing 2, δ = 2 ms; top-k's two collectives: 2 + 2·2/20 = 2.2
    topk = predict_point(PROFILE, hw, 4, comp=parse_comm("topk:0.01")[0])
    assert topk["slowdown"] == pytest.approx(2.2)
    assert topk["compute_s"] == pytest.approx(0.044)
    # the measured factor itself when the file has no probe step
    assert predict_point(PROFILE, _hw(), 4)["slowdown"] == pytest.approx(3.0)
    assert contention(_hw(), 4, 0.02, 1) == pytest.approx(3.0)


def test_codec_computation_is_spread_and_slowed_alike():
    prof = PROFILE.model_copy(update={"codec_fraction": {"topk:0.01": 1.0}})
    pt = predict_point(prof, _hw(**CAL), 4, comp=parse_comm("topk:0.01")[0])
    # 20 + 20 ms alone between two collectives: 2 + 2·2/40 = 2.1, codec 20 ms × 2.1
    assert pt["slowdown"] == pytest.approx(2.1)
    assert pt["codec_s"] == pytest.approx(0.042)


def test_model_beyond_the_probed_counts_and_one_rank():
    hw = _hw(**CAL)
    # 8 ranks: sharing 4; δ(8) = δ(4)·8/4 = 4 ms; one collective over 20 ms: 4 + 0.2
    assert contention(hw, 8, 0.02, 1) == pytest.approx(4.2)
    assert contention(hw, 1, 0.02, 0) == 1.0
    curve = predict_curve(PROFILE, hw, [1, 2])
    assert curve[0]["efficiency"] == 1.0
    assert curve[1]["efficiency"] == pytest.approx(0.02 / 0.061)


def test_probe_step_round_trips_through_the_hardware_file(tmp_path):
    path = save_hardware(_hw(**CAL), tmp_path / "hw.yaml")
    hw = load_hardware(path)
    assert hw.probe_step_s == 0.002 and hw.concurrent_devices == 2
    assert predict_point(PROFILE, hw, 2)["slowdown"] == pytest.approx(1.05)
