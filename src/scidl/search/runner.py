"""Run a search: create or load the study, start local workers, show progress, report.

``scidl search`` without ``--join`` is the *driver*: it creates the study (settings stored
in it), then runs one worker in-process (``--workers 1``) or starts ``W`` worker processes
(``python -m scidl search --join ...``, exactly what a Slurm task would run), prints a
live progress line from the storage, and writes the outputs when the budget is used.
"""

from __future__ import annotations

import os
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

from scidl.search.base import get_strategy
from scidl.search.report import progress_line, write_report
from scidl.search.settings import SETTINGS_ATTR, SearchSettings
from scidl.search.storage import normalize_url, open_storage, redact, study_exists
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
    strategy = get_strategy(settings.strategy)
    study = optuna.create_study(
        study_name=name, storage=storage, directions=strategy.directions(settings),  # type: ignore[arg-type]
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


def _spawn_workers(url: str, name: str, workers: int, out: Path) -> list[subprocess.Popen[bytes]]:
    logs = out / "workers"
    logs.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // workers)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    procs = []
    for i in range(workers):
        cmd = [sys.executable, "-m", "scidl", "search", "--join", "--storage", url, "--study",
               name, "--worker-index", str(i), "--no-report", "--quiet"]
        with open(logs / f"worker_{i}.log", "ab") as log:
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env))
    return procs


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
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    stats: list[WorkerStats] = []
    progress = _Progress(study, settings) if not quiet else None
    try:
        if progress:
            progress.__enter__()
        if (workers > 1 or spawn) and not join:
            procs = _spawn_workers(url, study_name, workers, out)
            try:
                codes = [p.wait() for p in procs]
            finally:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
            if any(codes):
                print(f"scidl search: worker exit codes {codes}; logs in {out / 'workers'}",
                      file=sys.stderr)
        else:
            stats.append(work(store, study_name, index=0 if worker_index is None and not join else worker_index))
    finally:
        if progress:
            progress.__exit__()
    wall = time.time() - t0
    summary: dict[str, Any] = {"wall_s": wall, "workers": workers if not join else 1}
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
