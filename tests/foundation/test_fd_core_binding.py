"""Local processes bound to cores of their own (``dist.bind_cores``).

Each rank's compute thread is bound to its run of cores once the process group is up;
the group's communication threads, started before, stay free to run anywhere.
"""

from __future__ import annotations

import os
import threading

import pytest

from scidl.runtime.launch import run_distributed
from scidl.runtime.torch_settings import binding_line, bound_to, choose_cores

needs_affinity = pytest.mark.skipif(not hasattr(os, "sched_getaffinity"),
                                    reason="no CPU affinity API on this OS")


def test_auto_binds_only_when_the_ranks_fill_the_cores():
    assert [choose_cores("auto", r, 2, 1, {0, 1}) for r in range(2)] == [(0,), (1,)]
    assert [choose_cores("auto", r, 2, 2, [7, 4, 5, 6]) for r in range(2)] == [(4, 5), (6, 7)]
    assert choose_cores("auto", 0, 2, 1, {0, 1, 2, 3}) is None  # a busy machine's fewer threads
    assert choose_cores("auto", 0, 4, 1, {0, 1}) is None  # more processes than cores


def test_true_binds_whenever_there_are_several_processes_and_wraps_round():
    assert choose_cores(True, 1, 2, 1, {0, 1, 2, 3}) == (1,)
    assert [choose_cores(True, r, 3, 1, {0, 1}) for r in range(3)] == [(0,), (1,), (0,)]
    assert choose_cores(True, 1, 2, 3, {0, 1, 2, 3}) == (0, 1, 3)  # cores 3, 4→0, 5→1


def test_never_one_process_a_launcher_bound_one_or_false():
    assert choose_cores(True, 0, 1, 2, {0, 1}) is None
    assert choose_cores(True, 0, 2, 1, {0, 1}, own_cores=True) is None  # e.g. srun's binding
    assert choose_cores(False, 0, 2, 1, {0, 1}) is None


def test_binding_line_says_what_was_done():
    assert binding_line("auto", 2, (0,)) == (
        "cores: each of 2 processes bound to 1 core of its own (rank 0: 0)")
    assert binding_line("auto", 4, None) == "cores: left to the OS (dist.bind_cores=auto)"
    assert binding_line(False, 2, None) == "cores: left to the OS (dist.bind_cores=false)"


@needs_affinity
def test_bound_to_binds_the_calling_thread_and_its_new_threads_then_restores():
    before = os.sched_getaffinity(0)
    core = min(before)
    seen: list[set[int]] = []
    with bound_to([core]):
        inside = os.sched_getaffinity(0)
        t = threading.Thread(target=lambda: seen.append(os.sched_getaffinity(0)))
        t.start()
        t.join()
    assert inside == {core} and seen == [{core}]
    assert os.sched_getaffinity(0) == before
    with bound_to(None):
        assert os.sched_getaffinity(0) == before


def _affinities(rank: int, world: int) -> dict[str, object]:
    """This rank's compute-thread affinity and every other thread's."""
    main = threading.get_native_id()
    others = []
    for tid in os.listdir("/proc/self/task"):
        if int(tid) != main:
            others.append(sorted(os.sched_getaffinity(int(tid))))
    return {"main": sorted(os.sched_getaffinity(0)), "others": others}


@needs_affinity
@pytest.mark.timeout(120)
def test_each_rank_computes_on_its_own_core_and_communicates_anywhere():
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("needs two usable cores")
    out = run_distributed(_affinities, 2, timeout=90, bind_cores=True)
    assert [o["main"] for o in out] == [[cores[0]], [cores[1]]]
    for o in out:  # the process group's threads, started before the binding, keep all cores
        assert cores in o["others"]
    free = run_distributed(_affinities, 2, timeout=90, bind_cores=False)
    assert all(o["main"] == cores for o in free)
