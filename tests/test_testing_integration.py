import pytest
import torch
import torch.distributed as dist

from scidl.testing import run_distributed


def _sum_ranks(rank, world, folder):
    import atexit
    from pathlib import Path

    # a child ends without the interpreter's teardown (the parent waited for its collection
    # of torch's objects), but its atexit handlers still run
    atexit.register(Path(folder, f"exit-{rank}").write_text, "ran")
    t = torch.tensor([float(rank + 1)])
    dist.all_reduce(t)
    return t.item()


def _boom(rank, world):
    raise ValueError("boom")


@pytest.mark.timeout(120)
def test_run_distributed_allreduce(tmp_path):
    assert run_distributed(_sum_ranks, 2, str(tmp_path)) == [3.0, 3.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exit-0", "exit-1"]


@pytest.mark.timeout(120)
def test_run_distributed_reports_failure():
    with pytest.raises(RuntimeError, match="boom"):
        run_distributed(_boom, 2)


def test_testing_reexports_the_product_launcher():
    from scidl.runtime import launch

    assert run_distributed is launch.run_distributed


def test_library_does_not_import_the_test_helpers():
    import pathlib

    import scidl

    root = pathlib.Path(scidl.__file__).parent
    users = [str(p.relative_to(root)) for p in root.rglob("*.py")
             if p.name != "testing.py" and "scidl.testing" in p.read_text()]
    assert users == []


@pytest.mark.timeout(120)
def test_run_distributed_times_out_on_a_hung_rank():
    with pytest.raises(TimeoutError, match="did not finish"):
        run_distributed(_hang, 2, timeout=3)


def _hang(rank, world):
    import time

    if rank == 1:
        time.sleep(60)
    return rank


def _vanish(rank, world):
    import os

    os._exit(3)  # dies without reporting anything (as a process killed by the OS)


@pytest.mark.timeout(120)
def test_run_distributed_fails_fast_when_a_rank_exits_without_a_result():
    import time

    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match=r"exited without a result: \[0, 1\]"):
        run_distributed(_vanish, 2, timeout=90)
    assert time.monotonic() - t0 < 30  # not the 90 s timeout
