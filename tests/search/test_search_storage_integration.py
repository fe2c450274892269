"""Crash safety on SQLite, journal and PostgreSQL: a worker process is killed mid-trial,
no finished trial is lost, the running one is failed and re-queued, the study resumes.

The PostgreSQL cases need a server: ``export SCIDL_TEST_POSTGRES_URL="$(scripts/ci_postgres.sh)"``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from scidl.search.heartbeat import RETRY_OF
from scidl.search.runner import create_or_load, describe_objective, run_search
from scidl.search.settings import SearchSettings
from scidl.search.storage import STORAGE_ENV, delete_study_if_exists, normalize_url, open_storage
from scidl.search.toy import TOY_SPACE


def _settings(tmp_path, trials, seconds):
    return describe_objective(SearchSettings(
        workload="toy", strategy="random", trials=trials, space=TOY_SPACE,
        out=str(tmp_path / "out"), objective="toy",
        objective_args={"seconds": seconds, "steps": 3}, heartbeat_s=0.3, grace_s=1.5,
    ))


def _worker(url, name, index):
    cmd = [sys.executable, "-m", "scidl", "search", "--join", "--study", name,
           "--worker-index", str(index), "--no-report", "--quiet"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, STORAGE_ENV: url})


def _states(study):
    return [t.state.name for t in study.get_trials(deepcopy=False)]


@pytest.mark.timeout(240)
def test_killed_worker_loses_nothing_and_study_resumes(tmp_path, storage_url):
    name = f"kill-{uuid.uuid4().hex[:8]}"
    url = normalize_url(storage_url)
    storage = open_storage(url)
    study, _ = create_or_load(storage, url, name, _settings(tmp_path, 5, 1.0), False, False)
    proc = _worker(url, name, 0)
    try:
        deadline = time.time() + 150
        while time.time() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            proc.send_signal(signal.SIGSTOP)  # freeze, then look: the state cannot move
            trials = study.get_trials(deepcopy=False)
            running = [t for t in trials if t.state.name == "RUNNING"]
            complete = [t for t in trials if t.state.name == "COMPLETE"]
            if len(complete) >= 2 and running and running[0].params:  # mid-trial
                break
            proc.send_signal(signal.SIGCONT)
            time.sleep(0.2)
        else:
            pytest.fail(f"worker made no progress: {_states(study)}")
        proc.send_signal(signal.SIGKILL)  # mid-trial: no chance to clean up
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    before = {t.number: t.values for t in study.get_trials(deepcopy=False)
              if t.state.name == "COMPLETE"}
    killed = next(t for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING")

    res = run_search(url, name, None, resume=True, quiet=True)  # a fresh worker continues
    trials = res.study.get_trials(deepcopy=False)
    after = {t.number: t.values for t in trials if t.state.name == "COMPLETE"}
    assert all(after.get(n) == v for n, v in before.items()), "a finished trial was lost"
    assert trials[killed.number].state.name == "FAIL"
    retry = [t for t in trials if t.user_attrs.get(RETRY_OF) == killed.number]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE"
    assert killed.params and killed.params.items() <= retry[0].params.items()  # same parameters
    assert len(after) == 5  # the budget counts the re-queued copy, not the killed attempt
    assert (tmp_path / "out" / "trials.csv").exists()
    if storage_url.startswith("postgresql"):
        delete_study_if_exists(storage, name)


@pytest.mark.timeout(240)
def test_two_local_workers_share_one_journal_study(tmp_path):
    url = "journal:" + str(tmp_path / "study.log")
    res = run_search(url, "two", _settings(tmp_path, 8, 0.6), workers=2, quiet=True)
    trials = res.study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert 8 <= len(done) <= 9 and len(done) == len(trials)  # at most one racing extra trial
    assert len({t.user_attrs["worker"] for t in done}) == 2  # both workers ran trials
    assert res.summary["utilisation"] is not None and 0 < res.summary["utilisation"] <= 1.0
    assert len({tuple(sorted(t.params.items())) for t in done}) == len(done)  # seeds differ
