"""`scidl predict` with a profile measured on several processes (a recorded profile).

A multi-process profile carries measured communication: predict keeps one rank's compute,
says so, does not count the slowdown of N busy ranks twice, and shows the measured step
beside the prediction at N.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from scidl.cli import main
from scidl.scaling.hardware import load_hardware
from scidl.scaling.predict import StepProfile, measured_comparison, per_rank_profile, predict_curve
from scidl.scaling.profile import load_profile

RECORDED = {  # a profile of a 4-process run, as `scidl predict` stores it in prediction.json
    "compute_s": 0.02, "grad_bytes": 4.0e6, "samples_per_step": 32, "measured_here": True,
    "measured_ranks": 4, "measured_step_s": 0.03, "measured_comm_s": 0.012,
    "measured_exposed_comm_s": 0.01, "source": "runs/x",
}


def _local_hw(slowdown: dict[int, float]):
    hw = load_hardware("summit")
    return hw.model_copy(update={"measured_here": True, "compute_slowdown": slowdown,
                                 "name": "here"})


def test_one_process_profile_is_unchanged():
    prof = StepProfile(compute_s=0.02, grad_bytes=4e6)
    out, notes = per_rank_profile(prof, load_hardware("summit"))
    assert out == prof and notes == []


def test_multi_process_profile_uses_compute_and_says_so():
    prof = StepProfile.model_validate(RECORDED)
    out, notes = per_rank_profile(prof, load_hardware("summit"))
    assert out.compute_s == 0.02  # another machine's slowdown says nothing about this run
    assert "measured on 4 processes" in notes[0]
    assert "0.012 s communication" in notes[1] and "not reused" in notes[1]


def test_slowdown_of_busy_ranks_not_counted_twice():
    hw = _local_hw({4: 2.0})
    out, notes = per_rank_profile(StepProfile.model_validate(RECORDED), hw)
    assert out.compute_s == 0.01 and "x2.00" in notes[0]
    curve = predict_curve(out, hw, [1, 4])
    assert abs(curve[1]["compute_s"] - 0.02) < 1e-12  # the measured per-rank compute at p = 4
    m = measured_comparison(out, curve)
    assert m is not None and m["ranks"] == 4 and m["measured_step_s"] == 0.03
    assert measured_comparison(out, curve[:1]) is None  # p = 4 not predicted


def test_profile_from_multi_process_run_folder(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"workload": "digits", "train": {}}))
    (run / "summary.json").write_text(json.dumps({"world_size": 2, "batch_size_per_rank": 16}))
    (run / "profile.json").write_text(json.dumps({"param_bytes": [4000, 8000]}))
    rows = [{"step": i, "step_time_s": 0.05, "comm_s": 0.02, "comm_exposed_s": 0.01}
            for i in range(5)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    prof = load_profile(run)
    assert prof.measured_ranks == 2
    assert (prof.measured_step_s, prof.measured_comm_s) == (0.05, 0.02)
    assert abs(prof.compute_s - 0.04) < 1e-12


def test_predict_command_with_recorded_profile(tmp_path, capsys):
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(RECORDED))
    out = tmp_path / "pred"
    rc = main(["predict", "--profile", str(path), "--hardware", "summit", "--ranks", "1,2,4",
               "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    assert "measured at p = 4: step 0.03 s" in text
    assert "note: profile measured on 4 processes" in text
    data = json.loads((Path(out) / "prediction.json").read_text())
    assert data["profile"]["measured_ranks"] == 4
    assert next(iter(data["measured"].values()))["measured_comm_s"] == 0.012


def test_strong_scaling_keeps_the_measured_runs_global_batch():
    hw = load_hardware("summit")
    out, notes = per_rank_profile(StepProfile.model_validate(RECORDED), hw, "strong")
    assert out.samples_per_step == 4 * 32 and abs(out.compute_s - 0.08) < 1e-12
    assert "global batch" in notes[-1]
    curve = predict_curve(out, hw, [1, 4], mode="strong")
    assert abs(curve[1]["compute_s"] - 0.02) < 1e-12  # p = 4 is the measured run's compute


def test_strong_scaling_without_a_batch_curve_says_compute_is_proportional():
    hw = load_hardware("summit")
    one = StepProfile(compute_s=0.02, grad_bytes=4e6, samples_per_step=32)
    _, notes = per_rank_profile(one, hw, "strong")
    assert len(notes) == 1 and "proportional to the local batch" in notes[0]
    # with a measured curve there is nothing to say, nor for weak scaling
    curved = one.model_copy(update={"batch_curve": [(8.0, 0.01), (32.0, 0.02)]})
    assert per_rank_profile(curved, hw, "strong")[1] == []
    assert per_rank_profile(one, hw, "weak")[1] == []
    # a multi-process profile: the note comes before the global-batch one
    _, notes = per_rank_profile(StepProfile.model_validate(RECORDED), hw, "strong")
    assert "proportional to the local batch" in notes[-2] and "global batch" in notes[-1]
