"""Exclusive trial claims and dead workers' trials, on SQLite, journal and PostgreSQL.

* Two workers racing to claim one re-queued (WAITING) trial: exactly one wins, every time
  (Optuna's RDB claim reads with ``SELECT ... FOR UPDATE``, which SQLite ignores: before
  the compare-and-set update both workers won about a third of the rounds).
* Two workers racing to finish one running trial (its own ``tell`` against another
  worker failing it as stale): exactly one wins.
* A study resumed after its worker died during the last trial finishes every trial and
  leaves none RUNNING, whether the dead owner is seen dead at once (same machine) or only
  through its silent heartbeat (after the grace period).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid

import optuna
import pytest
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from scidl.search.heartbeat import HEARTBEAT, OWNER, RETRY_OF, owner_identity, owner_is_dead
from scidl.search.objective import register_objective
from scidl.search.runner import create_or_load, describe_objective, run_search
from scidl.search.settings import SearchSettings
from scidl.search.space import build_space
from scidl.search.storage import delete_study_if_exists, normalize_url, open_storage
from scidl.search.toy import TOY_SPACE, ToyObjective

ROUNDS = 40


def _race(calls):
    """Run the callables at the same moment on threads; return their results (or exceptions)."""
    barrier = threading.Barrier(len(calls))
    out = [None] * len(calls)

    def run(i):
        barrier.wait()
        try:
            out[i] = calls[i]()
        except Exception as e:  # noqa: BLE001 - the loser's exception is a result here
            out[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return out


@pytest.mark.timeout(240)
def test_two_workers_racing_for_one_trial_exactly_one_wins(storage_url):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = normalize_url(storage_url)
    name = f"race-{uuid.uuid4().hex[:8]}"
    # one storage object per worker, as two processes would have
    stores = [open_storage(url), open_storage(url)]
    study = optuna.create_study(study_name=name, storage=stores[0])
    try:
        for r in range(ROUNDS):
            study.enqueue_trial({"x": r})
            waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
            assert len(waiting) == 1
            tid = waiting[0]._trial_id
            claims = _race([lambda s=s, t=tid: s.set_trial_state_values(t, TrialState.RUNNING)
                            for s in stores])
            assert claims.count(True) == 1, f"round {r}: claims {claims}"
            assert all(c is True or c is False or isinstance(c, UpdateFinishedTrialError)
                       for c in claims), claims
            # the winner tells, another worker fails it as stale, at the same moment
            ends = _race([
                lambda t=tid: stores[0].set_trial_state_values(t, TrialState.COMPLETE, [1.0]),
                lambda t=tid: stores[1].set_trial_state_values(t, TrialState.FAIL),
            ])
            assert ends.count(True) == 1, f"round {r}: ends {ends}"
            assert sum(isinstance(e, UpdateFinishedTrialError) for e in ends) == 1, ends
            final = stores[0].get_trial(tid)
            won = TrialState.COMPLETE if ends[0] is True else TrialState.FAIL
            assert final.state == won
            assert final.values == ([1.0] if won == TrialState.COMPLETE else None)
    finally:
        if url.startswith("postgresql"):
            delete_study_if_exists(stores[0], name)


def _settings(tmp_path, trials, grace):
    return describe_objective(SearchSettings(
        workload="toy", strategy="random", trials=trials, space=TOY_SPACE,
        out=str(tmp_path / "out"), objective="toy", objective_args={"seconds": 0.05, "steps": 1},
        heartbeat_s=0.2, grace_s=grace,
    ))


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _study_with_a_dead_workers_last_trial(url, name, settings, owner):
    """A study with its whole budget asked: all trials done but the last, left RUNNING
    by a worker that died (fresh heartbeat, ``owner`` in its attributes)."""
    storage = open_storage(url)
    study, _ = create_or_load(storage, url, name, settings, False, False)
    space = build_space(settings.space)
    for _ in range(settings.trials - 1):
        t = study.ask()
        space.suggest(t)
        study.tell(t, 0.9)
    t = study.ask()
    space.suggest(t)
    t.set_user_attr(OWNER, owner)
    t.set_user_attr(HEARTBEAT, time.time())  # it beat a moment ago
    return storage, t.number


@pytest.mark.timeout(120)
def test_resume_runs_the_trial_of_a_dead_worker_at_once(tmp_path, storage_url):
    """Owner on this machine and dead: failed and re-queued without waiting for the grace."""
    url = normalize_url(storage_url)
    name = f"dead-{uuid.uuid4().hex[:8]}"
    settings = _settings(tmp_path, 3, grace=600.0)  # the heartbeat alone would take 10 min
    storage, killed = _study_with_a_dead_workers_last_trial(
        url, name, settings, owner_identity(_dead_pid()) | {"start": None})
    t0 = time.time()
    res = run_search(url, name, None, resume=True, quiet=True)
    assert time.time() - t0 < 60
    trials = res.study.get_trials(deepcopy=False)
    assert [t.state.name for t in trials].count("RUNNING") == 0
    assert trials[killed].state.name == "FAIL"
    retry = [t for t in trials if t.user_attrs.get(RETRY_OF) == killed]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE"
    assert retry[0].params == trials[killed].params
    assert res.summary["states"] == {"COMPLETE": 3, "FAIL": 1}
    if url.startswith("postgresql"):
        delete_study_if_exists(storage, name)


@pytest.mark.timeout(120)
def test_resume_waits_for_a_silent_trial_then_reruns_it(tmp_path):
    """Owner elsewhere (unknown): the resumed worker waits for the grace, then re-runs it."""
    url = normalize_url(str(tmp_path / "s.db"))
    settings = _settings(tmp_path, 2, grace=2.0)
    elsewhere = {"host": "node-17", "pid": 4242, "space": "other-boot:1", "start": 1}
    _, killed = _study_with_a_dead_workers_last_trial(url, "silent", settings, elsewhere)
    res = run_search(url, "silent", None, resume=True, quiet=True)
    trials = res.study.get_trials(deepcopy=False)
    assert res.summary["states"] == {"COMPLETE": 2, "FAIL": 1}
    assert trials[killed].state.name == "FAIL"
    assert [t.user_attrs.get(RETRY_OF) for t in trials].count(killed) == 1


def test_owner_is_dead_only_when_certain():
    me = owner_identity()
    assert not owner_is_dead(me)  # alive
    assert owner_is_dead(owner_identity(_dead_pid()) | {"start": None})  # exited
    assert owner_is_dead(me | {"start": me["start"] + 1})  # pid reused by a newer process
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    time.sleep(1.0)  # exited, not yet reaped: a zombie, as a killed worker is before its wait()
    try:
        assert owner_is_dead(owner_identity(zombie.pid))
    finally:
        zombie.wait()
    assert not owner_is_dead(me | {"space": "another-machine:1"})  # cannot tell: heartbeat decides
    assert not owner_is_dead(None) and not owner_is_dead({"pid": "x", "space": me["space"]})


class _TakenOver(ToyObjective):
    """Toy trial that another worker fails as stale while it runs (a long stall)."""

    def __init__(self, settings, then="return", **kw):
        super().__init__(settings, **kw)
        self.then = then

    def __call__(self, trial, space):
        out = super().__call__(trial, space)
        trial.study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        if self.then == "report":
            trial.report(0.5, 99)  # refused: the trial is finished
        return out


@pytest.mark.parametrize("then", ["return", "report"])
def test_worker_survives_its_trial_being_failed_as_stale(tmp_path, storage_url, then):
    """Before, the worker crashed with UpdateFinishedTrialError (or "Cannot tell a FAIL trial")."""
    register_objective("taken-over-test")(_TakenOver)
    url = normalize_url(storage_url)
    name = f"over-{uuid.uuid4().hex[:8]}"
    settings = describe_objective(SearchSettings(
        workload="toy", strategy="random", trials=1, space=TOY_SPACE, out=str(tmp_path / "out"),
        objective="taken-over-test", objective_args={"then": then, "steps": 1}, heartbeat_s=0.2))
    res = run_search(url, name, settings, quiet=True, report=False)
    trials = res.study.get_trials(deepcopy=False)
    assert trials[0].state.name == "FAIL"
    if then == "return":  # the finished result is kept, as a new trial
        assert len(trials) == 2 and trials[1].state.name == "COMPLETE"
        assert trials[1].user_attrs["recovered_from"] == 0
        assert trials[1].params == trials[0].params and "result" in trials[1].user_attrs
    else:
        assert len(trials) == 1
    if url.startswith("postgresql"):
        delete_study_if_exists(open_storage(url), name)
