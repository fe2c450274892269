"""One search worker: ask a trial, run it with a heartbeat, tell the result; repeat.

Any number of workers, on any number of nodes, run :func:`work` on the same study. The
budget (``settings.trials``) is global: a worker stops when the study holds that many
trials (re-queued failures excepted) and none is still running anywhere. While another
worker's trial runs, a worker with nothing left to do waits: if that trial's worker dies,
the trial turns stale (no heartbeat for ``grace`` seconds, or its process is seen dead)
and the waiting worker runs its re-queued copy, so no trial is ever left RUNNING. Each finished trial stores as user attributes its
run config, final metrics, run folder, parameter count, latency, worker and wall time.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from scidl.search.base import Searcher, get_searcher
from scidl.search.heartbeat import OWNER, Heartbeat, budget_used, fail_stale_trials, owner_identity
from scidl.search.objective import Objective, Outcome, load_objective
from scidl.search.settings import SETTINGS_ATTR, SearchSettings
from scidl.search.space import SearchSpace, build_space


@dataclass
class WorkerStats:
    """What one worker did: trials by final state and busy seconds."""

    worker: str
    done: dict[str, int] = field(default_factory=dict)
    busy_s: float = 0.0
    wall_s: float = 0.0


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# Variables by which a launcher (torchrun, srun, mpirun) tells a process its rank. A search
# worker started by `srun -n 64 scidl search --join ...` is one of 64 *independent* workers:
# its trials must not think they are rank k of a 64-process training job.
_LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                "MASTER_PORT", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID",
                "SLURM_NTASKS_PER_NODE", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID",
                "MPI_LOCALNRANKS")


def launcher_index() -> int | None:
    """This worker's rank under srun/mpirun/torchrun, if any (used as its seed offset)."""
    for key in ("SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "RANK"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return None


@contextlib.contextmanager
def isolated_launch_env() -> Iterator[None]:
    """Hide launcher rank variables while trials run (restored afterwards)."""
    saved = {k: v for k, v in os.environ.items()
             if k in _LAUNCH_VARS or k.startswith("OMPI_COMM_WORLD_")}
    for k in saved:
        del os.environ[k]
    try:
        yield
    finally:
        os.environ.update(saved)


def load_settings(study: optuna.Study) -> SearchSettings:
    text = study.user_attrs.get(SETTINGS_ATTR)
    if text is None:
        raise KeyError(f"study {study.study_name!r} was not created by `scidl search` (no settings)")
    return SearchSettings.from_json(text)


def open_worker_study(
    storage: BaseStorage, name: str, searcher: Searcher, settings: SearchSettings,
    space: SearchSpace, seed: int,
) -> optuna.Study:
    return optuna.load_study(
        study_name=name, storage=storage,
        sampler=searcher.sampler(settings, space, seed), pruner=searcher.pruner(settings),
    )


def _outcome_attrs(outcome: Outcome, wall_s: float) -> dict[str, Any]:
    """User attributes of a finished trial (few keys: each is one storage write)."""
    result = {"value": outcome.value, "metrics": outcome.metrics, "n_params": int(outcome.n_params),
              "n_train": outcome.n_train, "latency_ms": outcome.latency_ms, "wall_s": wall_s}
    return {"result": result, "run_dir": outcome.run_dir, "config": outcome.config}


def _set_attrs(trial: optuna.Trial, attrs: dict[str, Any]) -> bool:
    """Write user attributes; False when the trial was finished by someone else meanwhile."""
    try:
        for key, val in attrs.items():
            trial.set_user_attr(key, val)
    except UpdateFinishedTrialError:
        return False
    return True


def run_trial(
    study: optuna.Study, storage: BaseStorage, settings: SearchSettings, searcher: Searcher,
    objective: Objective, space: SearchSpace, name: str,
) -> TrialState:
    """Ask, run under a heartbeat, tell; returns the trial's final state.

    Another worker may fail this trial as stale while it runs (a stall longer than the
    grace period): then every later write to it is refused. The worker neither crashes
    nor overwrites the failed trial: a completed result is kept as a new finished trial
    (``recovered_from`` = this trial's number), anything else is dropped (the re-queued
    copy runs instead).
    """
    trial = study.ask()  # claiming a re-queued trial is exclusive (storage.py)
    if not _set_attrs(trial, {"worker": name, OWNER: owner_identity()}):
        return TrialState.FAIL
    t0 = time.time()
    values: list[float] | None = None
    attrs: dict[str, Any] = {}
    state = TrialState.FAIL
    with Heartbeat(storage, trial._trial_id, settings.heartbeat_s):
        try:
            outcome = objective(trial, space)
            values = searcher.values(outcome, settings)
            attrs = _outcome_attrs(outcome, time.time() - t0)
            state = TrialState.COMPLETE
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except UpdateFinishedTrialError:
            pass  # failed as stale by another worker (a report was refused): its copy runs
        except Exception as e:  # noqa: BLE001 - a failing config must not stop the search
            attrs = {"error": f"{type(e).__name__}: {e}"[:1000],
                     "traceback": traceback.format_exc()[-4000:]}
    if _set_attrs(trial, attrs):
        try:
            study.tell(trial, values if state == TrialState.COMPLETE else None, state=state)
            return state
        except (UpdateFinishedTrialError, ValueError):
            # ValueError: "Cannot tell a FAIL trial" (failed before our tell began)
            if not storage.get_trial(trial._trial_id).state.is_finished():
                raise  # a genuine error in the values
    if state == TrialState.COMPLETE:  # keep the result as a new finished trial
        frozen = storage.get_trial(trial._trial_id)
        study.add_trial(optuna.trial.create_trial(
            params=frozen.params, distributions=frozen.distributions, values=values,
            user_attrs={**frozen.user_attrs, **attrs, "recovered_from": trial.number},
        ))
    return state


def poll_interval(settings: SearchSettings) -> float:
    """Seconds between looks at the study while other workers' trials are running."""
    return min(max(settings.heartbeat_s / 2, 0.1), 5.0)


def work(storage: BaseStorage, study_name: str, index: int | None = None) -> WorkerStats:
    """Run trials of ``study_name`` until the study's budget is used; return stats.

    Args:
        storage: an opened Optuna storage.
        study_name: a study created by :func:`scidl.search.runner.create_study`.
        index: this worker's index (sampler seed = settings.seed + index); ``None`` picks
            the launcher rank (``SLURM_PROCID``...) or a random one, so joining workers never
            share a random stream.
    """
    probe = optuna.load_study(study_name=study_name, storage=storage)
    settings = load_settings(probe)
    searcher = get_searcher(settings.strategy)
    space = build_space(settings.space)
    if index is None:
        index = launcher_index()
        index = int.from_bytes(os.urandom(3), "little") if index is None else index
    study = open_worker_study(storage, study_name, searcher, settings, space, settings.seed + index)
    objective = load_objective(settings)
    stats = WorkerStats(worker_name())
    t_start = time.time()
    with isolated_launch_env():
        while True:
            fail_stale_trials(study, storage, settings.grace, settings.max_retries)
            trials = study.get_trials(deepcopy=False)
            waiting = any(t.state == TrialState.WAITING for t in trials)  # re-queued: run them
            if not waiting and budget_used(trials) >= settings.trials:
                if not any(t.state == TrialState.RUNNING for t in trials):
                    break
                time.sleep(poll_interval(settings))  # in flight elsewhere: finishes or turns stale
                continue
            t0 = time.time()
            state = run_trial(study, storage, settings, searcher, objective, space, stats.worker)
            stats.busy_s += time.time() - t0
            stats.done[state.name] = stats.done.get(state.name, 0) + 1
    stats.wall_s = time.time() - t_start
    return stats
