"""Run a search: create or load the study, start local workers, show progress, report.

``scidl search`` without ``--join`` is the *driver*: it creates the study (settings stored
in it), then runs one worker in-process (``--workers 1``) or starts ``W`` worker processes
(``python -m scidl search --join ...``, exactly what a Slurm task would run), prints a
live progress line from the storage, and writes the outputs when the budget is used.

Workers get the storage URL (which may hold a database password) in the environment
variable ``SCIDL_SEARCH_STORAGE``, not on their command line, where ``ps`` shows it to
every user of the machine. A worker that dies (killed, crashed) is named in one line
(``worker 1 (pid 4242) was killed by SIGKILL``) in ``SearchResult.summary["failed_workers"]``
and on stderr, and ``scidl search`` then exits non-zero even when the other workers
finished its trials.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from scidl.search.base import get_searcher
from scidl.search.objective import resolve_objective
from scidl.search.report import progress_line, write_report
from scidl.search.settings import SETTINGS_ATTR, SearchSettings
from scidl.search.storage import STORAGE_ENV, normalize_url, open_storage, redact, study_exists
from scidl.search.worker import WorkerStats, load_settings, work


class SearchError(ValueError):
    """A user error in how a search was asked for (message says what to do)."""


@dataclass
class SearchResult:
    study: optuna.Study
    settings: SearchSettings
    summary: dict[str, Any]
    out: Path


def create_or_load(
    storage: BaseStorage, url: str, name: str, settings: SearchSettings | None,
    resume: bool, join: bool, budget: int | None = None,
) -> tuple[optuna.Study, SearchSettings]:
    """Create a new study (default), load one (``resume``), or either (``join``)."""
    exists = study_exists(storage, name)
    if exists:
        study = optuna.load_study(study_name=name, storage=storage)
        if not (resume or join):
            raise SearchError(
                f"study {name!r} already exists in {redact(url)} with {len(study.trials)} "
                "trials; pass --resume to continue it, --join to add a worker, or --study NEW"
            )
        stored = load_settings(study)
        if budget is not None and budget != stored.trials:
            stored = stored.model_copy(update={"trials": budget})  # extend (or cut) the budget
            study.set_user_attr(SETTINGS_ATTR, stored.to_json())
        return study, stored
    if resume:
        raise SearchError(f"cannot resume: no study {name!r} in {redact(url)}")
    if settings is None:
        raise SearchError(f"no study {name!r} in {redact(url)} yet; give WORKLOAD and --strategy")
    searcher = get_searcher(settings.strategy)
    study = optuna.create_study(
        study_name=name, storage=storage, directions=searcher.directions(settings),  # type: ignore[arg-type]
        load_if_exists=True,  # several joining workers may create it at the same moment
    )
    if SETTINGS_ATTR not in study.user_attrs:
        study.set_user_attr(SETTINGS_ATTR, settings.to_json())
    return study, load_settings(study)


class _Progress:
    """Prints ``progress_line`` every ``every`` s from a thread (one line, rewritten on a TTY)."""

    def __init__(self, study: optuna.Study, settings: SearchSettings, every: float = 2.0) -> None:
        self.study, self.settings, self.every = study, settings, every
        self.tty = sys.stderr.isatty()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._last = ""
        self.t0 = time.time()

    def show(self, final: bool = False) -> None:
        try:
            line = progress_line(self.study.get_trials(deepcopy=False), self.settings, time.time() - self.t0)
        except Exception:  # noqa: BLE001 - a storage hiccup must not stop the search
            return
        if line != self._last or final:
            end = "\n" if final or not self.tty else ""
            print(("\r" if self.tty else "") + line, end=end, file=sys.stderr, flush=True)
            self._last = line

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.show()

    def __enter__(self) -> _Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.show(final=True)


def worker_command(name: str, index: int) -> list[str]:
    """Command line of spawned worker ``index`` (no storage URL: that goes in the env)."""
    return [sys.executable, "-m", "scidl", "search", "--join", "--study", name,
            "--worker-index", str(index), "--no-report", "--quiet"]


def _spawn_workers(url: str, name: str, workers: int, out: Path) -> list[subprocess.Popen[bytes]]:
    logs = out / "workers"
    logs.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // workers)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           STORAGE_ENV: url}
    procs = []
    for i in range(workers):
        with open(logs / f"worker_{i}.log", "ab") as log:
            procs.append(subprocess.Popen(worker_command(name, i), stdout=log,
                                          stderr=subprocess.STDOUT, env=env))
    return procs


def how_it_ended(code: int) -> str:
    """``was killed by SIGKILL`` / ``exited with status 2`` from a ``Popen.returncode``."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def failed_worker_lines(procs: list[subprocess.Popen[bytes]], logs: Path) -> list[str]:
    """One line per worker that did not exit 0, naming it and how it ended."""
    return [f"worker {i} (pid {p.pid}) {how_it_ended(p.returncode)}; log: {logs / f'worker_{i}.log'}"
            for i, p in enumerate(procs) if p.returncode]


def run_search(
    storage: str, study_name: str, settings: SearchSettings | None = None, workers: int = 1,
    resume: bool = False, join: bool = False, worker_index: int | None = None,
    report: bool = True, quiet: bool = False, budget: int | None = None, spawn: bool = False,
) -> SearchResult:
    """Run (or join, or resume) a search; returns the study, settings and report summary.

    ``workers`` > 1 (or ``spawn``) starts that many ``scidl search --join`` processes;
    otherwise this process is the single worker. ``join`` runs one worker here on a
    study that may already exist; ``resume`` continues an existing study; ``budget``
    changes the trial budget of an existing study.
    """
    url = normalize_url(storage)
    store = open_storage(url)
    study, settings = create_or_load(store, url, study_name, settings, resume, join, budget)
    resolve_objective(settings.objective)  # an unregistered name fails here, before any worker
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    stats: list[WorkerStats] = []
    failed: list[str] = []
    progress = _Progress(study, settings) if not quiet else None
    try:
        if progress:
            progress.__enter__()
        if (workers > 1 or spawn) and not join:
            procs = _spawn_workers(url, study_name, workers, out)
            try:
                for p in procs:
                    p.wait()
            finally:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
                        p.wait()
            failed = failed_worker_lines(procs, out / "workers")
        else:
            stats.append(work(store, study_name, index=0 if worker_index is None and not join else worker_index))
    finally:
        if progress:
            progress.__exit__()
    wall = time.time() - t0
    for line in failed:
        print(f"scidl search: {line}", file=sys.stderr)
    summary: dict[str, Any] = {"wall_s": wall, "workers": workers if not join else 1,
                               "failed_workers": failed}
    if report:
        summary.update(write_report(study, settings, out, workers=summary["workers"],
                                    window=(t0, time.time())))
    summary["states"] = _count_states(study)
    return SearchResult(study, settings, summary, out)


def _count_states(study: optuna.Study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def describe_objective(settings: SearchSettings) -> SearchSettings:
    """Fill ``metric``, ``direction`` and ``n_train`` from the objective's base config."""
    from scidl.search.objective import load_objective, metric_direction

    headline, higher, n_train = load_objective(settings).describe()
    metric = settings.metric or headline
    maximize = metric_direction(metric, headline, higher)
    return settings.model_copy(update={
        "metric": metric, "direction": "maximize" if maximize else "minimize", "n_train": n_train,
    })


__all__ = ["SearchError", "SearchResult", "create_or_load", "describe_objective", "run_search",
           "TrialState"]
