"""The shared FSDP groups of fsdp_runs.py: each started once per session, on first use."""

import fsdp_runs
import pytest

from scidl.testing import run_distributed


@pytest.fixture(scope="session")
def fsdp_four(tmp_path_factory):
    """(folder, rank results) of the 4-rank group."""
    root = tmp_path_factory.mktemp("fsdp4")
    return root, run_distributed(fsdp_runs.four_ranks, 4, str(root), timeout=300)


@pytest.fixture(scope="session")
def fsdp_two(tmp_path_factory, fsdp_four):
    """(folder, rank results) of the 2-rank group (it resumes the 4-rank checkpoints)."""
    root = tmp_path_factory.mktemp("fsdp2")
    return root, run_distributed(fsdp_runs.two_ranks, 2, str(root), str(fsdp_four[0]),
                                 timeout=300)
