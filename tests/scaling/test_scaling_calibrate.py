"""One-node calibration (`scidl profile`) and `scidl predict --recommend`."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from scidl.scaling.calibrate import (
    BackwardTimeline,
    batch_bytes,
    measure_interference,
    robust_cv,
    run_optimizer,
    time_steps,
)
from scidl.scaling.hardware import load_hardware
from scidl.scaling.predict import StepProfile, recommend


def test_robust_cv_hand_computed():
    # median 1.0; |dev| = 0.1, 0, 0.1, 0, 5 → MAD 0.1 → 1.4826·0.1/1.0 (the 6.0 outlier
    # does not move it)
    assert robust_cv([0.9, 1.0, 1.1, 1.0, 6.0]) == pytest.approx(0.14826)
    assert robust_cv([1.0, 1.0]) == 0.0


def test_batch_bytes():
    assert batch_bytes((torch.zeros(4, 3), torch.zeros(4, dtype=torch.int64))) == 48 + 32
    assert batch_bytes({"x": torch.zeros(2)}) == 8


def _tiny() -> tuple[nn.Module, object]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(),
                          nn.Linear(64, 1))

    def loss(m: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        return m(batch).pow(2).mean()

    return model, loss


def _batches(n: int = 32):
    while True:
        yield torch.randn(n, 8)


def test_bucket_timeline_is_ordered_and_ends_at_the_backward_end():
    model, loss = _tiny()
    tl = BackwardTimeline(model)
    out = loss(model, torch.randn(16, 8))
    import time

    t0 = time.perf_counter()
    out.backward()
    t1 = time.perf_counter()
    # a cap of one layer's weights: several buckets, in backward order
    fr = tl.bucket_fractions(t0, t1, cap=64 * 64 * 4)
    tl.close()
    assert len(fr) >= 2
    assert all(0.0 <= f <= 1.0 for f in fr)
    assert fr == sorted(fr)


def test_time_steps_reports_every_part():
    model, loss = _tiny()
    r = time_steps(model, loss, _batches(), 4, cap=1e9)
    for k in ("loader_s", "fwd_s", "bwd_s", "opt_s", "compute_s", "step_cv", "in_bytes"):
        assert r[k] >= 0
    assert r["in_bytes"] == 32 * 8 * 4
    assert len(r["bucket_ready"]) == 1


def test_time_steps_steps_the_run_optimizer():
    # the profile used to time an SGD update whatever optim.name said: Adam's update
    # (two moment buffers per parameter) was missing from the compute it measured
    from scidl.config import load_config

    made = []

    def make(m):
        made.append(torch.optim.Adam(m.parameters(), lr=1e-3))
        return made[-1]

    model, loss = _tiny()
    time_steps(model, loss, _batches(), 3, make_optimizer=make)
    assert len(made) == 1 and made[0].state  # Adam stepped: it holds moment buffers
    cfg = load_config("digits", None, ["optim.name=adam"], None)
    opt = run_optimizer(cfg)(nn.Linear(2, 2))
    assert isinstance(opt, torch.optim.Adam)
    lbfgs = load_config("digits", None, ["optim.name=lbfgs"], None)
    assert run_optimizer(lbfgs) is None  # needs a closure: timed as plain SGD


@pytest.mark.timeout(120)
def test_interference_measured_against_a_concurrent_allreduce(monkeypatch):
    from scidl.scaling import calibrate

    torch.set_num_threads(1)
    model, loss = _tiny()
    close, exits = calibrate.ConcurrentAllreduce.close, []

    def close_and_record(self):
        close(self)
        exits.append(self.proc.exitcode)

    monkeypatch.setattr(calibrate.ConcurrentAllreduce, "close", close_and_record)
    alone, busy, slow = measure_interference(model, loss, _batches(), 4)
    assert alone > 0 and busy > 0
    assert slow >= 1.0
    # the partner saw the stop mark and ended by itself (not terminated after a 30 s wait,
    # as when close() came during an allreduce of the loop)
    assert exits == [0]


def test_recommend_ranks_and_explains():
    hw = load_hardware("horovod_p100_roce")
    prof = StepProfile(compute_s=0.3, grad_bytes=4 * 138e6, samples_per_step=64)
    ranked = recommend(prof, hw, 512, comms=("dense", "fp16", "topk:0.01"))
    effs = [r["efficiency"] for r in ranked]
    assert effs == sorted(effs, reverse=True)
    assert {r["ranks_per_node"] for r in ranked} == {1, 2, 4}
    # comm-bound VGG-like model on 25 Gbit/s: halving the bytes beats dense fp32
    best_fp16 = max(r["efficiency"] for r in ranked if r["comm"] == "fp16")
    best_dense = max(r["efficiency"] for r in ranked if r["comm"] == "dense")
    assert best_fp16 > best_dense
    assert all(r["reason"] for r in ranked)
    assert any("lossy" in r["reason"] for r in ranked if r["comm"].startswith("topk"))


@pytest.mark.timeout(300)
def test_profile_then_predict_recommend_cli(tmp_path, capsys):
    from scidl.cli import main
    from scidl.scaling.profile import load_profile

    out = tmp_path / "prof"
    rc = main(["profile", "digits", "--max-steps", "3", "--batches", "8,16", "--no-interference",
               "--comm", "topk:0.01", "--out", str(out), "train.batch_size=16",
               f"log.root={tmp_path}"])
    assert rc == 0
    prof = load_profile(out / "profile.yaml")
    # the strategy's own computation, relative to the plain step (top-k selection costs)
    assert set(prof.codec_fraction) == {"topk:0.01"} and prof.codec_fraction["topk:0.01"] >= 0
    assert prof.batch_curve and [b for b, _ in prof.batch_curve] == [8.0, 16.0]
    assert prof.step_cv is not None and prof.loader_s is not None and prof.bucket_ready
    pred = tmp_path / "pred"
    rc = main(["predict", "--profile", str(out / "profile.yaml"), "--hardware", "summit",
               "--ranks", "1,6,12", "--recommend", "--compute-s", "0.1", "--out", str(pred)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "E band" in text and "recommended at 12 ranks" in text
    data = json.loads((pred / "prediction.json").read_text())
    assert data["recommend"] and data["recommend"][0]["reason"]
    pt = data["curves"]["dense (two-level:rabenseifner)"][-1]
    assert pt["efficiency_lo"] <= pt["efficiency"] <= pt["efficiency_hi"]
    # this machine's spread does not travel to Summit, --compute-s or not
    assert pt["straggler_s"] == 0.0 and data["curves"]["dense (two-level:rabenseifner)"][0][
        "efficiency_lo"] == 1.0


def test_profile_bad_batches_is_one_line_error(tmp_path, capsys):
    from scidl.cli import main

    rc = main(["profile", "digits", "--batches", "a,b", "--out", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--batches" in err and "Traceback" not in err


def test_profile_bad_comm_is_one_line_error(tmp_path, capsys):
    from scidl.cli import main

    rc = main(["profile", "digits", "--comm", "nosuch", "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "nosuch" in err[0]


# ----------------------------------------------------------------------- codec time


def test_steady_step_hand_computed():
    from scidl.comm.config import CommConfig
    from scidl.scaling.calibrate import MIN_UNTIMED_STEPS, steady_step

    # 2 dense steps, then 25 %, 6.25 %, 1.5625 % for 5 steps each: 1 % from step 17
    ramp = CommConfig(strategy="topk", density=0.01, warmup_steps=2, density_warmup_steps=5)
    assert steady_step(ramp) == 2 + 15
    assert steady_step(CommConfig(strategy="powersgd", warmup_steps=10)) == 10
    assert steady_step(CommConfig(strategy="topk")) == MIN_UNTIMED_STEPS
    assert steady_step(CommConfig(strategy="topk_adam", adam_freeze_steps=40)) == 40
    assert steady_step(CommConfig(strategy="auto", auto_warmup_steps=5)) == 5
    # a density the first stage already reaches: no ramp
    assert steady_step(CommConfig(strategy="topk", density=0.5, warmup_steps=4,
                                  density_warmup_steps=5)) == 4


class _FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _stepper(clock: _FakeClock, seconds, seen: list):
    """A training step that takes ``seconds(k)`` on the fake clock at its k-th call."""
    calls = [0]

    def step(batch):
        seen.append(batch)
        clock.t += seconds(calls[0])
        calls[0] += 1
    return step


def test_codec_is_timed_past_each_strategy_warmup():
    # "slow" costs the dense step's 10 ms during its 6 warm-up steps, then 30 ms: its own
    # computation is 20 ms, 2.0 of the step. The old measurement timed every strategy from
    # its second step on (one warm-up step, no end_step): over 4 steps it saw only the
    # warm-up and reported 0.
    from scidl.scaling.calibrate import codec_fractions, interleaved_step_times

    clock = _FakeClock()
    seen: dict[str, list] = {"dense": [], "slow": []}
    steppers = {"dense": _stepper(clock, lambda k: 0.010, seen["dense"]),
                "slow": _stepper(clock, lambda k: 0.010 if k < 6 else 0.030, seen["slow"])}
    times = interleaved_step_times(steppers, {"dense": 3, "slow": 6}, 4, iter(range(100)),
                                   clock=clock)
    assert times["dense"] == pytest.approx([0.010] * 4)
    assert times["slow"] == pytest.approx([0.030] * 4)
    assert codec_fractions(times) == {"slow": pytest.approx(2.0)}
    # both timed over the same rounds, on the same batches: dense joined 3 rounds late
    assert seen["slow"] == list(range(10)) and seen["dense"] == list(range(3, 10))

    clock2 = _FakeClock()
    old = {"dense": _stepper(clock2, lambda k: 0.010, []),
           "slow": _stepper(clock2, lambda k: 0.010 if k < 6 else 0.030, [])}
    before = interleaved_step_times(old, {"dense": 1, "slow": 1}, 4, iter(range(100)),
                                    clock=clock2)
    assert codec_fractions(before) == {"slow": 0.0}


def test_codec_fraction_is_the_median_of_paired_ratios():
    from scidl.scaling.calibrate import codec_fractions

    # rounds where the machine was slow for both (x2) keep the ratio; one odd round does
    # not move the median; a strategy faster than dense counts 0
    times = {"dense": [0.01, 0.02, 0.01, 0.01], "a": [0.015, 0.03, 0.015, 0.05],
             "b": [0.009, 0.018, 0.009, 0.009]}
    assert codec_fractions(times) == {"a": pytest.approx(0.5), "b": 0.0}


@pytest.mark.timeout(180)
def test_codec_worker_steps_strategies_past_their_warmup():
    # a density warm-up of 2 steps per stage (25 %, 6.25 %, 1.5625 %, then 1 % from step
    # 6): the worker steps each strategy as the trainer does (end_step), so the timed
    # steps are past it; the old worker never advanced a strategy's step count
    from scidl.config import load_config
    from scidl.runtime.launch import run_distributed
    from scidl.scaling.calibrate import codec_fractions, codec_worker

    cfg = load_config("digits", None, ["train.batch_size=16"], None)
    spec = "topk:0.01:density_warmup_steps=2"
    res = run_distributed(codec_worker, 1, cfg.model_dump(mode="json"), [spec], 3,
                          timeout=150)[0]
    assert res["untimed"] == {"dense": 3, spec: 6}
    assert res["steps_run"] == {"dense": 3 + 3, spec: 6 + 3}
    assert {k: len(v) for k, v in res["times"].items()} == {"dense": 3, spec: 3}
    assert codec_fractions(res["times"])[spec] >= 0.0
