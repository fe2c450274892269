"""Batch-efficiency helpers of the cost model against hand-computed cases."""

from __future__ import annotations

import pytest

from scidl.scaling.costmodel import (
    affine_batch_fit,
    affine_curve,
    compute_at_batch,
    curve_from_throughput,
    fixed_samples,
    fixed_share,
    transferred_curve,
)
from scidl.scaling.hardware import Hardware, Level
from scidl.scaling.predict import StepProfile, compute_time


def test_curve_from_throughput_hand_computed():
    # ResNet-50 on a P100 (TensorFlow benchmarks): 195 img/s at 32, 219 img/s at 64
    curve = curve_from_throughput({64: 219.0, 32: 195.0})
    assert curve == [(32.0, pytest.approx(32 / 195)), (64.0, pytest.approx(64 / 219))]


def test_affine_fit_and_fixed_share_hand_computed():
    # t(32) = 0.164103, t(64) = 0.292237: k = 0.128134/32 = 0.0040042, t0 = 0.035968
    t0, k = affine_batch_fit(curve_from_throughput({32: 195.0, 64: 219.0}))
    assert k == pytest.approx((64 / 219 - 32 / 195) / 32, rel=1e-12)
    assert t0 == pytest.approx(2 * 32 / 195 - 64 / 219, rel=1e-12)
    assert t0 == pytest.approx(0.035968, abs=1e-6)
    # share of the batch-32 step that does not shrink: t0 / t(32) = 2 - 2·195/219 = 0.21918
    assert fixed_share(curve_from_throughput({32: 195.0, 64: 219.0}), 32) == pytest.approx(
        2 - 2 * 195 / 219, rel=1e-9)
    assert 2 - 2 * 195 / 219 == pytest.approx(0.21918, abs=1e-5)
    # three collinear points: least squares returns the line exactly
    assert affine_batch_fit([(1, 3.0), (2, 5.0), (4, 9.0)]) == (pytest.approx(1.0), pytest.approx(2.0))
    with pytest.raises(ValueError):
        affine_batch_fit([(8, 1.0), (8, 2.0)])


def test_affine_curve_reads_back_its_share():
    pts = affine_curve(0.3, 32.0, 8.0)
    # t(8) = 0.3 + 0.7·8/32 = 0.475; t(32) = 1
    assert pts == [(8.0, pytest.approx(0.475)), (32.0, 1.0)]
    assert fixed_share(pts, 32) == pytest.approx(0.3)
    assert compute_at_batch(16, pts) == pytest.approx(0.3 + 0.7 * 0.5)
    for bad in ((1.0, 32.0, 8.0), (0.3, 32.0, 40.0), (-0.1, 32.0, None)):
        with pytest.raises(ValueError):
            affine_curve(*bad)


def test_fixed_samples_and_transferred_curve_hand_computed():
    # ResNet-50 on a P100: t0 = 64/195 − 64/219 = 64·24/(195·219), k = 5472/(32·195·219):
    # b½ = t0/k = 64·24·32/5472 = 512/57 = 8.98246 images
    curve = curve_from_throughput({32: 195.0, 64: 219.0})
    t0 = 2 * 32 / 195 - 64 / 219
    k = (64 / 219 - 32 / 195) / 32
    assert fixed_samples(curve) == pytest.approx(t0 / k, rel=1e-12)
    assert fixed_samples(curve) == pytest.approx(512 / 57, rel=1e-12)
    # the speed of the device cancels: the same curve 10x slower has the same b½
    assert fixed_samples([(b, 10 * t) for b, t in curve]) == pytest.approx(t0 / k)
    # carried to a device at batch 32 (time 1), read at 26: (b½ + 26)/(b½ + 32) = 0.85360
    pts = transferred_curve(curve, 32.0, 26.0)
    assert pts == [(26.0, pytest.approx((t0 / k + 26) / (t0 / k + 32))), (32.0, 1.0)]
    assert pts[0][1] == pytest.approx(0.85360, abs=1e-5)
    # its fixed share at 32 is ResNet-50's own on the P100: 2 − 2·195/219
    assert fixed_share(pts, 32) == pytest.approx(2 - 2 * 195 / 219, rel=1e-9)
    # a curve without a fixed part (time ∝ batch, or a negative intercept) carries none
    assert fixed_samples([(8, 1.0), (16, 2.0)]) == 0.0
    assert fixed_samples([(8, 1.0), (16, 2.5)]) == 0.0
    assert transferred_curve([(8, 1.0), (16, 2.0)], 16.0) == [(8.0, 0.5), (16.0, 1.0)]


def test_strong_scaling_compute_reads_the_curve():
    # strong scaling of a global batch of 64 over 2 ranks, fixed share 0.25 at batch 64:
    # per-rank compute = t(32)/t(64) = 0.25 + 0.75/2 = 0.625 of the one-rank step
    hw = Hardware(name="cpu", intra=Level(alpha=0, beta=0), measured_here=True)
    prof = StepProfile(compute_s=1.0, grad_bytes=0, samples_per_step=64,
                       batch_curve=affine_curve(0.25, 64.0, 32.0))
    assert compute_time(prof, hw, 2, "strong") == pytest.approx(0.625)
    # without a curve, compute shrinks with the batch: 0.5
    bare = prof.model_copy(update={"batch_curve": None})
    assert compute_time(bare, hw, 2, "strong") == pytest.approx(0.5)
