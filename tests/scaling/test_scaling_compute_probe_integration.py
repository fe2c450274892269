"""The compute probe sees time-sharing: p ranks pinned to one core measure ≈ p× on a quiet core."""

import os

import pytest

from scidl.scaling.collectives import measure_compute_slowdown


@pytest.mark.timeout(120)
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs os.sched_setaffinity (Linux)")
def test_ranks_sharing_one_core_measure_the_time_sharing():
    """Old defect: each rank timed its own matmuls from its own start, so a rank the
    scheduler started late hid its wait (4 ranks on 2 cores measured ×1.06)."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})  # the probe's processes inherit one core
    try:
        slow = measure_compute_slowdown([4], n=160, inner=24, rounds=6, timeout=100)
    finally:
        os.sched_setaffinity(0, before)
    # 4 on a quiet core: ×4; with L other busy processes on that core the share each
    # count gets changes the ratio to (L + 4) / (L + 1): still ≥ 1.5 up to L = 5
    assert 1.45 < slow[4] < 7.0, slow  # above 4: each allreduce waits for scheduler slices


def test_each_count_runs_in_a_group_of_its_own_size(monkeypatch):
    """Old defect: every count ran in one group of max(p) ranks; the idle ranks waiting in
    their collective took cores (2 busy of 4 measured ×1.7 on 2 quiet cores)."""
    import scidl.runtime.launch as launch

    calls = []

    def fake(fn, world, n, inner, rounds, counts, timeout):
        calls.append((world, tuple(counts), rounds))
        return [{world: [0.01 * world]}] * world

    monkeypatch.setattr(launch, "run_distributed", fake)
    slow = measure_compute_slowdown([2, 4], rounds=6, blocks=2)
    assert {(w, c) for w, c, _ in calls} == {(1, (1,)), (2, (2,)), (4, (4,))}
    assert [w for w, _, _ in calls] == [1, 2, 4, 1, 2, 4]  # counts take turns block by block
    assert all(r == 3 for _, _, r in calls)  # steps per block
    assert slow == {2: 2.0, 4: 4.0}


def test_probe_step_is_one_rank_alone_and_restores_the_threads():
    import torch

    from scidl.scaling.collectives import measure_probe_step

    before = torch.get_num_threads()
    w = measure_probe_step(n=32, inner=2, rounds=2, blocks=2)
    assert 0 < w < 1.0
    # the fastest of 4 single steps (a quiet core's step on a busy machine)
    assert 0 < measure_probe_step(n=32, inner=2, rounds=4, blocks=4, fastest=True) < 1.0
    assert torch.get_num_threads() == before
