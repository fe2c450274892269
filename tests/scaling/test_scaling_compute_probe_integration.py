"""The compute probe sees time-sharing: p ranks pinned to one core measure ≈ p× on a quiet core."""

import os

import pytest

from scidl.scaling.collectives import (
    measure_compute_slowdown,
    measure_compute_slowdown_stats,
    paired_ratios,
    robust_factor,
)


@pytest.mark.timeout(120)
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs os.sched_setaffinity (Linux)")
def test_ranks_sharing_one_core_measure_the_time_sharing():
    """Old defect: each rank timed its own matmuls from its own start, so a rank the
    scheduler started late hid its wait (4 ranks on 2 cores measured ×1.06)."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})  # the probe's processes inherit one core
    try:
        slow = measure_compute_slowdown([4], n=160, inner=24, rounds=6, blocks=3, groups=1,
                                        timeout=100)
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

    def fake(fn, world, n, inner, rounds, blocks, timeout):
        calls.append((world, rounds, blocks))
        res = {"busy": [0.01 * world] * blocks, "solo": [0.01] * (blocks + 1)}
        return [res] * world

    monkeypatch.setattr(launch, "run_distributed", fake)
    out = measure_compute_slowdown_stats([2, 4], rounds=6, blocks=3, groups=2)
    # no group of one: each busy block is paired with one-rank blocks inside its group
    assert [w for w, _, _ in calls] == [2, 4, 2, 4]  # counts take turns, group by group
    assert all((r, k) == (6, 3) for _, r, k in calls)
    assert out["slowdown"] == {2: 2.0, 4: 4.0}
    assert out["range"] == {2: [2.0, 2.0], 4: [4.0, 4.0]}
    assert len(out["ratios"][4]) == 6 and out["probe_step_s"] == 0.01
    assert measure_compute_slowdown([2], rounds=6, blocks=3) == {2: 2.0}


def test_busy_blocks_are_read_against_their_neighbouring_one_rank_blocks():
    # the machine slows by half for blocks 2-3 (both sides): the paired ratio stays x2
    assert paired_ratios([2.0, 3.0, 2.0], [1.0, 1.0, 2.0, 1.0]) == pytest.approx(
        [2.0, 2.0, 4 / 3])
    with pytest.raises(ValueError):
        paired_ratios([2.0], [1.0])


def test_a_few_blocks_slowed_by_a_load_spike_do_not_move_the_factor():
    """Old defect: the factor was a ratio of medians over three unpaired blocks, so a few
    seconds of someone else's load read x2.20 where the machine gave x1.11 minutes later."""
    ratios = [1.10, 1.12, 1.08, 1.11, 1.09, 1.13, 2.4, 2.3]  # 2 of 8 blocks in a spike
    r = robust_factor(ratios)
    assert r["factor"] == pytest.approx(1.115)
    assert r["lo"] == pytest.approx(1.0975) and r["n"] == 8
    assert r["hi"] > r["factor"]  # the spike widens the spread, not the factor
    assert robust_factor([1.3]) == {"factor": 1.3, "lo": 1.3, "hi": 1.3, "n": 1}
    with pytest.raises(ValueError):
        robust_factor([])


def test_probe_step_is_one_rank_alone_and_restores_the_threads():
    import torch

    from scidl.scaling.collectives import measure_probe_step

    before = torch.get_num_threads()
    w = measure_probe_step(n=32, inner=2, rounds=2, blocks=2)
    assert 0 < w < 1.0
    # the fastest of 4 single steps (a quiet core's step on a busy machine)
    assert 0 < measure_probe_step(n=32, inner=2, rounds=4, blocks=4, fastest=True) < 1.0
    assert torch.get_num_threads() == before
