"""Crash safety: trial heartbeats, failing stale trials, re-queueing their parameters.

Every running trial gets a heartbeat (a wall-clock timestamp in the user attribute
``scidl_heartbeat``) written by a background thread of its worker every ``interval``
seconds, and names its owner process (``scidl_owner``: host, pid, process start time and
the machine's boot id and PID namespace). Any worker, before it asks for a new trial,
fails every RUNNING trial that is *stale* -- its last beat is older than ``grace`` seconds
(its worker was killed, or its node died), or its owner process is known dead (same boot
and PID namespace as the looking worker, and that pid is gone, a zombie, or a newer
process) -- and enqueues a copy of its parameters (``scidl_retry_of`` = the failed
trial's number), up to ``max_retries`` times per original trial. Finished trials are
never touched; failing is a compare-and-set on the trial's state, so of several workers
that see the same stale trial exactly one fails and re-queues it.

This is the same protocol as Optuna's RDB heartbeat (``heartbeat_interval``,
``fail_stale_trials``, ``RetryFailedTrialCallback``) but written through the public
storage API, so it works identically on SQLite, PostgreSQL *and* journal files, which
have no heartbeat support in Optuna. Like Optuna's, it assumes the nodes' clocks agree to
well within ``grace`` (NTP).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

HEARTBEAT = "scidl_heartbeat"
RETRY_OF = "scidl_retry_of"
ATTEMPT = "scidl_attempt"
OWNER = "scidl_owner"


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks since boot) of ``pid`` from ``/proc``."""
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return None
    fields = text[text.rfind(")") + 2:].split()  # after "pid (comm) "; comm may hold spaces
    return fields[0], int(fields[19])


def process_space() -> str | None:
    """This machine boot's id plus this PID namespace (None where ``/proc`` lacks them).

    Two processes can check each other's pids only when these agree: other machines,
    reboots and other containers on the same machine all give a different value.
    """
    boot = _read("/proc/sys/kernel/random/boot_id")
    try:
        ns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
    return None if boot is None else f"{boot.strip()}:{ns}"


def owner_identity(pid: int | None = None) -> dict[str, Any]:
    """What identifies process ``pid`` (default: this one) as a trial's owner."""
    pid = os.getpid() if pid is None else pid
    stat = _proc_stat(pid)
    return {"host": socket.gethostname(), "pid": pid, "space": process_space(),
            "start": None if stat is None else stat[1]}


def owner_is_dead(owner: Any, space: str | None = None) -> bool:
    """True only when ``owner`` (an :func:`owner_identity`) is certainly no longer running.

    Unknown owners (another machine or container, no ``/proc``) are never called dead:
    for them the heartbeat decides.
    """
    space = process_space() if space is None else space
    if not isinstance(owner, dict) or space is None or owner.get("space") != space:
        return False
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    stat = _proc_stat(pid)
    if stat is None:
        return True  # no such process
    state, start = stat
    return state in ("Z", "X") or (owner.get("start") is not None and start != owner["start"])


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


def is_stale(trial: FrozenTrial, grace: float, now: float, space: str | None) -> bool:
    """A RUNNING trial silent for more than ``grace`` s, or whose owner is known dead."""
    return now - last_beat(trial) > grace or owner_is_dead(trial.user_attrs.get(OWNER), space)


def fail_stale_trials(
    study: optuna.Study, storage: BaseStorage, grace: float, max_retries: int,
    now: float | None = None,
) -> list[int]:
    """Fail stale RUNNING trials (:func:`is_stale`) and re-queue them.

    Returns the numbers of the trials this call failed. Safe to call from many workers at
    once: the state change is a compare-and-set, and only the worker that wins it
    re-queues.
    """
    now = time.time() if now is None else now
    space = process_space()
    failed: list[int] = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not is_stale(t, grace, now, space):
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
