"""A stopped rank is named within ``dist.stall_timeout_s`` and the job ends non-zero."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from scidl.runtime.watchdog import StallWatchdog, heartbeat_path, parse_heartbeat


def test_watchdog_reports_the_rank_whose_heartbeat_stops(tmp_path):
    lines: list[str] = []
    dogs = [StallWatchdog(tmp_path, r, 3, timeout_s=0.6, step=lambda r=r: 10 + r,
                          on_stall=lines.append) for r in range(3)]
    for d in dogs:
        d._write()
    t = 100.0
    for d in dogs:
        assert not d.check(t)
    dogs[0]._write()  # ranks 0 and 2 keep beating, rank 1 stops
    dogs[2]._write()
    assert not dogs[0].check(t + 0.4) and not dogs[2].check(t + 0.4)
    dogs[0]._write()
    dogs[2]._write()
    assert dogs[0].check(t + 0.7)  # the lowest healthy rank reports
    assert not dogs[2].check(t + 0.7)  # the others stay quiet: one line
    assert lines == ["rank 1 made no progress for 0.6 s (stalled at step 11)"]


def test_finished_rank_is_not_a_stall(tmp_path):
    lines: list[str] = []
    a = StallWatchdog(tmp_path, 0, 2, timeout_s=0.2, on_stall=lines.append)
    b = StallWatchdog(tmp_path, 1, 2, timeout_s=0.2, on_stall=lines.append)
    a._write()
    b._write(done=True)
    assert not a.check(0.0) and not a.check(5.0) and lines == []
    assert parse_heartbeat(heartbeat_path(tmp_path, 1).read_text())["done"] == "1"


def _wait_for_step(path, proc, deadline):
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            info = parse_heartbeat(path.read_text())
            if int(info.get("step", 0)) > 0:
                return info
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"rank 1 never started training: {proc.poll()=}")


@pytest.mark.timeout(240)
def test_sigstop_of_one_rank_ends_the_job_naming_it(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "scidl", "train", "admissions", "--nproc", "2", "--quiet",
         "--run-dir", str(run_dir), "--max-steps", "1000000", "log.tensorboard=false",
         "train.batch_size=16", "checkpoint.every_steps=0", "checkpoint.final=false",
         "dist.stall_timeout_s=5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid = None
    try:
        info = _wait_for_step(heartbeat_path(run_dir, 1), proc, time.monotonic() + 150)
        pid = int(info["pid"])
        os.kill(pid, signal.SIGSTOP)
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=60)
        elapsed = time.monotonic() - t0
    finally:
        if pid is not None:
            for sig in (signal.SIGKILL, signal.SIGCONT):
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, err[-3000:]
    assert err.count("scidl: error: rank 1 made no progress for 5 s (stalled at step ") == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert elapsed < 45


def test_torchrun_restarts_on_a_shared_store_are_warned_about():
    from scidl.runtime.dist import shared_store_warning
    from scidl.runtime.launch import launch_config

    shared = {"TORCHELASTIC_USE_AGENT_STORE": "True", "TORCHELASTIC_MAX_RESTARTS": "2"}
    assert "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1" in shared_store_warning(shared)
    assert shared_store_warning({**shared, "TORCHELASTIC_MAX_RESTARTS": "0"}) is None
    assert shared_store_warning({**shared, "TORCHELASTIC_USE_AGENT_STORE": "False"}) is None
    assert launch_config(2, 1).max_restarts == 1


def test_launcher_turns_store_sharing_off_only_during_the_launch(monkeypatch):
    import torch.distributed.launcher.api as lapi

    from scidl.runtime import launch

    seen = {}

    def fake_launch(config, fn):
        def go(*args):
            seen["env"] = os.environ.get(launch.NO_SHARED_STORE)
            return {0: fn(*args)}
        return go

    monkeypatch.setattr(lapi, "elastic_launch", fake_launch)
    monkeypatch.delenv(launch.NO_SHARED_STORE, raising=False)
    assert launch.elastic_run(lambda x: x + 1, (1,), 2, 0) == {0: 2}
    assert seen["env"] == "1" and launch.NO_SHARED_STORE not in os.environ


def test_stalled_peers_are_killed_only_after_the_reporting_rank_has_exited():
    # killing first let the launcher see a peer killed by a signal before the stall report
    # of the rank that found it, and print the agent's traceback instead of the one line
    from scidl.runtime.watchdog import KILL_DELAY_S, _kill_after_exit

    host = socket.gethostname()
    victim = subprocess.Popen(["sleep", "60"])
    try:
        t0 = time.monotonic()
        _kill_after_exit([{"host": host, "pid": str(victim.pid)}, {"host": "elsewhere", "pid": "1"}],
                         host)
        assert time.monotonic() - t0 < KILL_DELAY_S / 2 and victim.poll() is None
        assert victim.wait(timeout=10) == -signal.SIGKILL
        assert time.monotonic() - t0 >= KILL_DELAY_S * 0.9
    finally:
        victim.kill()
