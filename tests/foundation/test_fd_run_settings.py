"""An in-process ``scidl.run`` leaves torch's thread count and determinism flag as it found them.

Before, ``train_process`` called ``torch.set_num_threads`` and
``torch.use_deterministic_algorithms(True)`` and never undid them, so a notebook or a
script that trained once ran everything after it on the run's thread count and with
deterministic algorithms forced on (errors for CUDA ops without a deterministic kernel).
"""

from __future__ import annotations

import pytest
import torch

import scidl
from scidl.config import load_config
from scidl.runtime.torch_settings import choose_threads, threads_for_this_machine


@pytest.fixture
def caller_settings():
    """The caller's settings: 3 threads, deterministic algorithms off; reset afterwards."""
    torch.set_num_threads(3)
    torch.use_deterministic_algorithms(False)
    yield
    torch.use_deterministic_algorithms(False)


def _cfg(tmp_path, *extra):
    return load_config("admissions", overrides=[
        "log.tensorboard=false", "log.progress=false", "checkpoint.final=false",
        "train.max_steps=2", "dist.threads_per_proc=2", "train.deterministic=true",
        f"log.root={tmp_path}", *extra])


class _SeenSettings:
    """Trainer callback: the settings in force while the run trains."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, bool]] = []

    def on_step_end(self, trainer, row) -> None:
        self.seen.append((torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()))


@pytest.mark.timeout(120)
def test_run_restores_threads_and_determinism(tmp_path, caller_settings):
    seen = _SeenSettings()
    scidl.run(_cfg(tmp_path), callbacks=[seen])
    assert seen.seen and set(seen.seen) == {(2, True)}  # the run's settings while it trained
    assert torch.get_num_threads() == 3
    assert not torch.are_deterministic_algorithms_enabled()


def _failing_task(ctx):
    raise RuntimeError("no data")


@pytest.mark.timeout(60)
def test_run_restores_settings_when_it_raises(tmp_path, caller_settings):
    torch.use_deterministic_algorithms(True, warn_only=True)
    with pytest.raises(RuntimeError, match="no data"):
        scidl.run(_cfg(tmp_path, "train.deterministic=false"), task_factory=_failing_task)
    assert torch.get_num_threads() == 3
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()


def test_thread_count_configured_wins():
    c = choose_threads(4, 8, 16, 16, load=30.0)
    assert c.threads == 4 and c.line == "threads per process: 4 (dist.threads_per_proc)"


def test_thread_count_shares_usable_cores():
    assert choose_threads(None, 4, 16).threads == 4  # cores shared among local processes
    assert choose_threads(None, 32, 16).threads == 1  # never below 1
    # a lone process uses the cores it may run on (its affinity), not torch's default
    assert choose_threads(None, 1, 2, total_cores=64, load=0.0).threads == 2


def test_thread_count_lowered_on_a_loaded_machine():
    c = choose_threads(None, 2, 2, total_cores=2, load=9.3)
    assert c.threads == 1
    assert c.line == "threads per process: 1 (2 usable cores, 2 processes, load 9.3)"
    # 16 usable of 32 cores, 28 busy: 4 idle cores for one process
    assert choose_threads(None, 1, 16, total_cores=32, load=28.0).threads == 4
    assert choose_threads(None, 1, 16, total_cores=32, load=2.0).threads == 16
    assert choose_threads(None, 1, 8, total_cores=8, load=100.0).threads == 1
    assert choose_threads(None, 1, 1, total_cores=8, load=None).line == (
        "threads per process: 1 (1 usable core, 1 process)")


def test_thread_count_with_cores_of_its_own():
    # srun --cpus-per-task=8 bound each of 4 tasks on a 32-core node to 8 cores of its own
    c = choose_threads(None, 4, 8, total_cores=32, load=0.5, own_cores=True)
    assert c.threads == 8
    assert c.line == "threads per process: 8 (8 usable cores of its own, 4 processes, load 0.5)"
    # the node is busy: 12 idle cores shared by the 4 tasks
    assert choose_threads(None, 4, 8, total_cores=32, load=20.0, own_cores=True).threads == 3
    # the same 8 cores shared by 4 processes (one affinity for all, e.g. a container)
    assert choose_threads(None, 4, 8, total_cores=32, load=0.5).threads == 2


def test_thread_count_of_this_machine_respects_affinity():
    import os

    c = threads_for_this_machine(None, 1)
    assert 1 <= c.threads <= len(os.sched_getaffinity(0))
    assert c.line.startswith(f"threads per process: {c.threads} (")


def test_process_pinned_narrower_than_its_parent_has_own_cores():
    import os
    import subprocess
    import sys

    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("needs two usable cores")
    code = ("import os; from scidl.runtime.torch_settings import has_own_cores as h; "
            f"a = h(); os.sched_setaffinity(0, {{{cores[0]}}}); print(a, h())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out == ["False", "True"]  # same cores as its parent: shared; pinned: its own
