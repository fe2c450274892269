"""Spawned search workers (``scidl search --workers 2``) as real processes.

* No worker's command line (``/proc/<pid>/cmdline``, what ``ps`` shows every user) holds
  the storage URL: it is handed over in ``SCIDL_SEARCH_STORAGE``.
* A worker killed with SIGKILL mid-trial makes ``scidl search`` exit non-zero with one
  line naming the worker and the signal, while the surviving worker re-runs its trial, so
  the study ends with every trial finished and none RUNNING.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from scidl.search.heartbeat import OWNER, RETRY_OF
from scidl.search.storage import STORAGE_ENV, normalize_url, open_storage

SECRET = "s3cret-Pa55word"


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(x) for x in text.split()]


def _running_owners(study) -> list[int]:
    return [t.user_attrs[OWNER]["pid"] for t in study.get_trials(deepcopy=False)
            if t.state.name == "RUNNING" and OWNER in t.user_attrs]


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
@pytest.mark.timeout(180)
def test_killed_worker_fails_the_search_and_no_cmdline_shows_the_storage(tmp_path):
    db = tmp_path / SECRET / "study.db"  # the URL's secret part; a password in real life
    url = normalize_url(str(db))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "scidl", "search", "toy", "--objective", "toy",
           "--objective-arg", "seconds=1.2", "--objective-arg", "steps=3", "--strategy", "random",
           "--trials", "3", "--workers", "2", "--study", "k", "--out", str(out),
           "--heartbeat", "0.3", "--grace", "2.0", "--quiet", "--no-report"]
    driver = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env={**os.environ, STORAGE_ENV: url})
    try:
        victim = None
        deadline = time.time() + 90
        while victim is None and time.time() < deadline:
            assert driver.poll() is None, driver.communicate()[1].decode()[-2000:]
            time.sleep(0.2)
            workers = _children(driver.pid)
            if len(workers) < 2 or not db.exists():
                continue
            for pid in workers:  # what `ps` shows: no storage URL on any command line
                line = _cmdline(pid)
                assert SECRET not in line and "sqlite" not in line, line
            assert SECRET not in _cmdline(driver.pid)
            try:
                study = optuna.load_study(study_name="k", storage=open_storage(url))
            except KeyError:
                continue
            candidate = next((p for p in _running_owners(study) if p in workers), None)
            if candidate is None:
                continue
            os.kill(candidate, signal.SIGSTOP)  # freeze, then look again: it cannot move now
            if candidate in _running_owners(study):
                victim = candidate
            else:
                os.kill(candidate, signal.SIGCONT)
        assert victim is not None, "no worker started a trial"
        os.kill(victim, signal.SIGKILL)  # mid-trial, no chance to clean up
        _, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.communicate()
    err = err.decode()
    assert driver.returncode != 0, err
    lines = [x for x in err.splitlines() if f"(pid {victim}) was killed by SIGKILL" in x]
    assert len(lines) == 1 and lines[0].startswith("scidl search: worker "), err
    assert "Traceback" not in err, err
    trials = optuna.load_study(study_name="k", storage=open_storage(url)).get_trials()
    states = [t.state.name for t in trials]
    assert "RUNNING" not in states and states.count("COMPLETE") >= 3, states
    killed = [t for t in trials if t.state.name == "FAIL"]
    assert len(killed) == 1 and killed[0].user_attrs[OWNER]["pid"] == victim
    assert [t.user_attrs.get(RETRY_OF) for t in trials].count(killed[0].number) == 1
