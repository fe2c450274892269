"""``admissions``: the generated table, the metrics, and the task's two loss forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scidl.workloads import BuildContext
from scidl.workloads.admissions import Admissions, AdmissionsConfig
from scidl.workloads.admissions.data import FEATURES, make_admissions
from scidl.workloads.admissions.workload import regression_metrics


def test_table_is_seeded_standardised_and_clipped():
    X, y = make_admissions(400, 0.82, seed=3)
    X2, y2 = make_admissions(400, 0.82, seed=3)
    assert X.shape == (400, len(FEATURES)) and y.shape == (400,)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_allclose(X.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(X.std(0), 1, atol=1e-4)
    # float32 bounds: NumPy 1.x compares a float32 with a Python float in float64
    assert y.min() >= np.float32(0.34) and y.max() <= np.float32(0.97)
    assert abs(y.mean() - 0.72) < 0.03
    assert not np.array_equal(make_admissions(400, 0.82, seed=4)[1], y)


def test_regression_metrics_of_a_perfect_and_a_mean_prediction():
    y = torch.tensor([0.5, 0.7, 0.9])
    assert regression_metrics(y.clone(), y) == {"mse": 0.0, "r2": 1.0}
    assert regression_metrics(torch.full((3,), 0.7), y)["r2"] == pytest.approx(0.0, abs=1e-6)


def test_task_split_and_criterion_agree_with_loss():
    cfg = AdmissionsConfig(n_rows=50, val_fraction=0.2, hidden=[8])
    task = Admissions().build(cfg, BuildContext(seed=0))
    assert len(task.train_data) == 40 and len(task.val_data) == 10
    x, y = task.train_data.tensors
    torch.testing.assert_close(task.criterion(task.model(x), y), task.loss(task.model, (x, y)))
    assert not hasattr(task, "loss_fn")  # one name per loss form: loss(model, batch), criterion
    assert set(task.evaluate(task.model, task.val_data)) == {"mse", "r2"}
