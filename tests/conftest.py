"""Shared fixtures: restore env vars, never leak a process group, one thread per process;
a hard per-test time limit; the shared FSDP groups of tests/parallel."""

from __future__ import annotations

import faulthandler
import os

import pytest
import torch


@pytest.fixture(autouse=True)
def _restore_env_and_threads():
    env = dict(os.environ)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        pytest.fail("test leaked an initialised default process group")
    os.environ.clear()
    os.environ.update(env)
    torch.set_num_threads(threads)


HARD_LIMIT_GRACE_S = 60
"""How long after its pytest-timeout limit a test ends the run from C. pytest-timeout's
thread (and its signal handler) run Python, so a test blocked in C code that holds the
GIL (e.g. a deadlock in a torch destructor) is never interrupted by them; faulthandler's
timer is a C thread: it prints every thread's stack and exits."""


def pytest_sessionstart(session):
    # Output capture is suspended between pytest's set-up hooks and the tests: fd 2 is the
    # real stderr here, and a copy of it stays readable after _exit.
    session.config.hard_limit_file = os.fdopen(os.dup(2), "w")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    marker = item.get_closest_marker("timeout")
    limit = float(marker.args[0]) if marker and marker.args else float(
        item.config.getini("timeout") or 0)
    out = getattr(item.config, "hard_limit_file", None)
    if limit > 0 and out is not None:
        faulthandler.dump_traceback_later(limit + HARD_LIMIT_GRACE_S, exit=True, file=out)
    try:
        yield
    finally:
        if limit > 0 and out is not None:
            faulthandler.cancel_dump_traceback_later()


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU (none on this machine)")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


# The shared FSDP groups of tests/parallel/fsdp_runs.py, each started once per session on
# first use. (Here, not in a tests/parallel/conftest.py: a second module named conftest
# would shadow tests/cluster's, whose tests import helpers from it.)


@pytest.fixture(scope="session")
def fsdp_four(tmp_path_factory):
    """(folder, rank results) of the 4-rank group."""
    import fsdp_runs  # tests/parallel is on sys.path once its modules are collected

    from scidl.testing import run_distributed

    root = tmp_path_factory.mktemp("fsdp4")
    return root, run_distributed(fsdp_runs.four_ranks, 4, str(root), timeout=300)


@pytest.fixture(scope="session")
def fsdp_two(tmp_path_factory, fsdp_four):
    """(folder, rank results) of the 2-rank group (it resumes the 4-rank checkpoints)."""
    import fsdp_runs

    from scidl.testing import run_distributed

    root = tmp_path_factory.mktemp("fsdp2")
    return root, run_distributed(fsdp_runs.two_ranks, 2, str(root), str(fsdp_four[0]),
                                 timeout=300)
