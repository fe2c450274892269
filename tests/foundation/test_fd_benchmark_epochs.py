"""benchmarks/optim.py counts epochs from the optimizer step, with an evaluation every epoch."""

from pathlib import Path

import pytest

from scidl.testing import load_repo_script

ROOT = Path(__file__).resolve().parents[2]


def _optim_benchmark():
    return load_repo_script("benchmarks/optim.py")


def test_first_epoch_below_counts_epochs_from_the_step():
    ob = _optim_benchmark()
    # evaluations every 5 epochs of 8 steps: the target is met at epoch 10, not "evaluation 2"
    curve = [(40, 0.02), (80, 0.009), (120, 0.005)]
    assert ob.first_epoch_below(curve, 0.01, steps_per_epoch=8) == 10
    assert ob.first_epoch_below(curve, 0.001, steps_per_epoch=8) is None
    assert ob.first_epoch_below([(12, 0.009)], 0.01, steps_per_epoch=8) == 2  # mid-epoch 2
    assert ob.epochs_of(curve, 8) == [5.0, 10.0, 15.0]
    assert ob.epoch_times([1.0, 2.0, 3.0, 4.0, 5.0], 2) == [3.0, 7.0]  # whole epochs only


@pytest.mark.timeout(120)
def test_admissions_benchmark_evaluates_every_epoch_past_the_trainers_cap():
    ob = _optim_benchmark()
    out = ob.admissions(40, [0], 30, ["sgd"])  # the trainer itself evaluates <= ~20 times
    run = out["runs"]["sgd"][0]
    assert run["steps"] == 30 * run["steps_per_epoch"]
    assert run["eval_epochs"] == [float(e) for e in range(1, 31)]
    assert len(run["mse"]) == 30
    first = next((i + 1 for i, v in enumerate(run["mse"]) if v <= 0.01), None)
    assert run["epochs_to_0.01"] == first
    assert run["epoch_time_s"] == pytest.approx(run["steps_per_epoch"] * run["step_time_mean_s"])
    assert run["epoch_time_median_s"] > 0
