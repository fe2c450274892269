"""The compute probe sees time-sharing: ranks pinned to one core must measure ≈ p×."""

import os

import pytest

from scidl.scaling.collectives import measure_compute_slowdown


@pytest.mark.timeout(120)
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs os.sched_setaffinity (Linux)")
def test_two_ranks_on_one_core_measure_about_twice_one():
    """Old defect: each rank timed its own matmuls from its own start, so a rank the
    scheduler started late hid its wait (4 ranks on 2 cores measured ×1.06)."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})  # the probe's processes inherit one core
    try:
        slow = measure_compute_slowdown([2], n=160, inner=6, rounds=8, timeout=100)
    finally:
        os.sched_setaffinity(0, before)
    assert 1.6 < slow[2] < 2.6, slow
