"""``digits``: the data split, the networks, and the task's two loss forms."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from scidl.workloads import BuildContext
from scidl.workloads.digits import Digits, DigitsConfig
from scidl.workloads.digits.data import load_digits_arrays
from scidl.workloads.digits.nets import digits_cnn


def test_split_is_stratified_scaled_and_fixed():
    Xtr, ytr, Xte, yte = load_digits_arrays(0.2)
    assert Xtr.shape[1:] == (1, 8, 8) and len(Xtr) + len(Xte) == 1797
    assert 0.0 <= Xtr.min() and Xtr.max() <= 1.0
    assert set(np.unique(yte)) == set(range(10))
    np.testing.assert_array_equal(load_digits_arrays(0.2)[3], yte)


def test_cnn_maps_images_to_ten_logits():
    net = digits_cnn([4, 8], [16], "relu", 0.0)
    assert net(torch.zeros(3, 1, 8, 8)).shape == (3, 10)


def test_task_criterion_is_cross_entropy_and_agrees_with_loss():
    task = Digits().build(DigitsConfig(hidden=[16]), BuildContext(seed=0))
    x, y = task.train_data.tensors
    x, y = x[:32], y[:32]
    assert task.criterion is nn.functional.cross_entropy
    torch.testing.assert_close(task.criterion(task.model(x), y), task.loss(task.model, (x, y)))
    assert not hasattr(task, "loss_fn")
    assert task.headline in task.evaluate(task.model, task.val_data)
