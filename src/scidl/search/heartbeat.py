"""Crash safety: trial heartbeats, failing stale trials, re-queueing their parameters.

Every running trial gets a heartbeat (a wall-clock timestamp in the user attribute
``scidl_heartbeat``) written by a background thread of its worker every ``interval``
seconds. Any worker, before it asks for a new trial, fails every RUNNING trial whose last
beat is older than ``grace`` seconds (its worker was killed, or its node died) and
enqueues a copy of its parameters (``scidl_retry_of`` = the failed trial's number), up to
``max_retries`` times per original trial. Finished trials are never touched.

This is the same protocol as Optuna's RDB heartbeat (``heartbeat_interval``,
``fail_stale_trials``, ``RetryFailedTrialCallback``) but written through the public
storage API, so it works identically on SQLite, PostgreSQL *and* journal files, which
have no heartbeat support in Optuna. Like Optuna's, it assumes the nodes' clocks agree to
well within ``grace`` (NTP).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

HEARTBEAT = "scidl_heartbeat"
RETRY_OF = "scidl_retry_of"
ATTEMPT = "scidl_attempt"


class Heartbeat:
    """Context manager: beat for ``trial_id`` every ``interval`` s on a daemon thread."""

    def __init__(self, storage: BaseStorage, trial_id: int, interval: float) -> None:
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scidl-heartbeat", daemon=True)

    def beat(self) -> None:
        self.storage.set_trial_user_attr(self.trial_id, HEARTBEAT, time.time())

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except UpdateFinishedTrialError:
                return  # finished (or failed as stale by another worker): nothing to keep alive
            except Exception:  # noqa: BLE001 - a transient storage error must not kill training
                continue

    def __enter__(self) -> Heartbeat:
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=max(5.0, 2 * self.interval))


def last_beat(trial: FrozenTrial) -> float:
    """Timestamp of the trial's last sign of life (heartbeat, else its start)."""
    beat = trial.user_attrs.get(HEARTBEAT)
    if beat is not None:
        return float(beat)
    start = trial.datetime_start
    return start.timestamp() if start is not None else 0.0


def fail_stale_trials(
    study: optuna.Study, storage: BaseStorage, grace: float, max_retries: int,
    now: float | None = None,
) -> list[int]:
    """Fail RUNNING trials silent for more than ``grace`` s and re-queue them.

    Returns the numbers of the trials this call failed. Safe to call from many workers at
    once: only the worker whose state change succeeds re-queues.
    """
    now = time.time() if now is None else now
    failed: list[int] = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if now - last_beat(t) <= grace:
            continue
        try:
            if not storage.set_trial_state_values(t._trial_id, TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:
            continue  # it finished meanwhile, or another worker failed it first
        except Exception:  # noqa: BLE001 - lost a database race: the other worker handles it
            continue
        failed.append(t.number)
        attempt = int(t.user_attrs.get(ATTEMPT, 0))
        if attempt < max_retries:
            study.enqueue_trial(
                dict(t.params),
                user_attrs={RETRY_OF: t.number, ATTEMPT: attempt + 1},
            )
    return failed


def retried_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of trials that have a re-queued copy."""
    return {int(t.user_attrs[RETRY_OF]) for t in trials if RETRY_OF in t.user_attrs}


def budget_used(trials: list[FrozenTrial]) -> int:
    """Trials that count against the budget: all, except failed ones that were re-queued."""
    again = retried_numbers(trials)
    return sum(1 for t in trials if not (t.state == TrialState.FAIL and t.number in again))
