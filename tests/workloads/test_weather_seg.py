"""weather_seg: synthetic fields, IoU, threshold tuning, class weights, both networks."""

from __future__ import annotations

import math

import pytest
import torch

from scidl.workloads import BuildContext, get_workload
from scidl.workloads.weather_seg.data import (
    make_weather,
    per_class_iou,
    threshold_segment,
    tune_thresholds,
)
from scidl.workloads.weather_seg.nets import AtrousNet
from scidl.workloads.weather_seg.workload import WeatherSegConfig, class_weights


def test_per_class_iou_on_a_hand_example():
    label = torch.tensor([[0, 0, 1, 1], [2, 2, 2, 0]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 2, 0, 0]])
    iou = per_class_iou(pred, label, 3)
    # class 0: inter {0,7}=2, union {0,1,6,7}=4; class 1: 2/3; class 2: 2/3
    torch.testing.assert_close(iou, torch.tensor([0.5, 2 / 3, 2 / 3], dtype=torch.float64))
    assert math.isnan(float(per_class_iou(pred, label, 4)[3]))


def test_weather_data_is_seeded_imbalanced_and_physical():
    x, y = make_weather(24, 32, seed=3)
    x2, y2 = make_weather(24, 32, seed=3)
    torch.testing.assert_close(x, x2)
    assert torch.equal(y, y2)
    freq = torch.bincount(y.flatten(), minlength=3).double() / y.numel()
    assert freq[0] > 0.8 and 0.003 < freq[1] < 0.1 and 0.01 < freq[2] < 0.15
    # cyclones are pressure lows with strong winds; rivers are moist
    assert x[:, 0][y == 1].mean() < x[:, 0][y == 0].mean() - 0.5
    assert x[:, 2][y == 1].mean() > x[:, 2][y == 0].mean() + 0.5
    assert x[:, 1][y == 2].mean() > x[:, 1][y == 0].mean() + 0.5


def test_threshold_tuning_matches_brute_force():
    x, y = make_weather(16, 32, seed=1)
    th = tune_thresholds(x, y)
    riv = y == 2

    def iou(p):
        return float((p & riv).sum() / (p | riv).sum())

    tuned = iou((x[:, 1] > th[2]) & (x[:, 2] > th[3]))
    grid = torch.linspace(-5.0, 6.0, 111)[::5].tolist()
    brute = max(iou((x[:, 1] > a) & (x[:, 2] > b)) for a in grid for b in grid)
    assert tuned >= brute - 1e-9
    pred = threshold_segment(x, th)
    assert set(pred.unique().tolist()) <= {0, 1, 2}


def test_class_weights_balance_the_loss():
    y = torch.tensor([0] * 90 + [1] * 2 + [2] * 8)
    w = class_weights(y, 3, power=1.0)
    freq = torch.tensor([0.9, 0.02, 0.08])
    torch.testing.assert_close(w * freq, torch.full((3,), 1 / 3))  # inverse frequency
    torch.testing.assert_close(class_weights(y, 3, power=0.0), torch.ones(3))


def test_atrous_net_shapes_and_receptive_field():
    net = AtrousNet(3, 3, base=4)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)).requires_grad_()
    out = net(x)
    assert out.shape == (1, 3, 32, 32)
    out[0, 0, 16, 16].backward()
    reach = (x.grad.abs().sum((0, 1)) > 0).nonzero()
    # dilated convolutions + image pooling see far beyond a 3x3 stack
    assert int(reach[:, 0].max() - reach[:, 0].min()) >= 28


@pytest.mark.parametrize("arch", ["unet", "deeplab"])
def test_weather_tiny_config_trains(arch):
    cfg = WeatherSegConfig(size=16, n_train=16, n_val=8, base=4, arch=arch)
    torch.manual_seed(0)
    task = get_workload("weather_seg").build(cfg, BuildContext(seed=0))
    x, y = task.train_data.tensors
    opt = torch.optim.Adam(task.model.parameters(), 1e-2)
    first = float(task.loss(task.model, (x, y)).detach())
    for _ in range(25):
        opt.zero_grad()
        task.loss(task.model, (x, y)).backward()
        opt.step()
    assert float(task.loss(task.model, (x, y)).detach()) < 0.8 * first
    with torch.no_grad():
        ev = task.evaluate(task.model.eval(), task.val_data)
    assert {"iou_cyclone", "iou_river", "heuristic_iou_river", "event_miou"} <= set(ev)


def test_soft_dice_loss_scores_overlap():
    from scidl.workloads.weather_seg.losses import soft_dice_loss

    label = torch.tensor([[[0, 1, 1, 2], [0, 0, 2, 2]]])  # [1, 2, 4]
    perfect = 50.0 * torch.nn.functional.one_hot(label, 3).permute(0, 3, 1, 2).float()
    assert float(soft_dice_loss(perfect, label, (1, 2))) < 1e-6
    # uniform scores: p = 1/3 everywhere; class 1: 2 pixels, class 2: 3 pixels
    uniform = torch.zeros(1, 3, 2, 4)
    d1 = (2 * 2 / 3 + 1) / (8 / 3 + 2 + 1)
    d2 = (2 * 3 / 3 + 1) / (8 / 3 + 3 + 1)
    torch.testing.assert_close(soft_dice_loss(uniform, label, (1, 2)),
                               torch.tensor(1 - (d1 + d2) / 2))
    # an absent class predicted nowhere costs nothing; predicted everywhere it costs
    none = torch.zeros(1, 2, 4, dtype=torch.int64)
    background = torch.tensor([50.0, -50.0, -50.0])[None, :, None, None].expand(1, 3, 2, 4)
    assert float(soft_dice_loss(background, none, (1,))) < 1e-6
    wrong = torch.tensor([-50.0, 50.0, -50.0])[None, :, None, None].expand(1, 3, 2, 4)
    assert float(soft_dice_loss(wrong, none, (1,))) > 0.8
    # its gradient raises the true class's score where it is missing
    logits = uniform.clone().requires_grad_()
    soft_dice_loss(logits, label, (1, 2)).backward()
    assert float(logits.grad[0, 1, 0, 1]) < 0 and float(logits.grad[0, 1, 0, 0]) > 0


def test_dice_weight_zero_is_the_weighted_cross_entropy():
    from scidl.workloads.weather_seg.losses import segmentation_loss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, generator=g)
    label = torch.randint(0, 3, (2, 8, 8), generator=g)
    w = torch.tensor([0.5, 3.0, 2.0])
    plain = torch.nn.functional.cross_entropy(logits, label, weight=w)
    torch.testing.assert_close(segmentation_loss(logits, label, w, 0.0, (1, 2)), plain)
    assert float(segmentation_loss(logits, label, w, 1.0, (1, 2))) > float(plain)


def test_unet_depth_must_divide_the_grid():
    cfg = WeatherSegConfig(size=20, n_train=4, n_val=2, base=4, depth=3)
    with pytest.raises(ValueError, match="divisible by 2\\^depth"):
        get_workload("weather_seg").build(cfg, BuildContext(seed=0))
