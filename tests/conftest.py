"""Shared fixtures: restore env vars, never leak a process group, one thread per process;
the shared FSDP groups of tests/parallel."""

from __future__ import annotations

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
