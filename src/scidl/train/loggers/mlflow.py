"""MLflow tracking (``log.mlflow``): parameters, metrics, the summary and the run's files.

``log.mlflow=true`` keeps an embedded store beside the run folders, no server: an
SQLite database ``LOG_ROOT/mlflow.db`` (MLflow's recommended local backend) and the
artifacts under ``LOG_ROOT/mlartifacts``; ``mlflow ui --backend-store-uri
sqlite:///LOG_ROOT/mlflow.db`` browses every run logged there. Any other value is a
tracking URI (``http://host:5000``, ``sqlite:///path/db``, ``databricks``…).

One MLflow run per SciDL run folder, in the experiment ``log.mlflow_experiment``
(default: the workload's name), named after the folder; the config goes in as
parameters (``optim.lr``…), every logged row as metrics at its step, the summary's
numbers as ``summary/*`` metrics, and ``config.yaml``, ``summary.json``, ``comm.json`` and
the pictures as artifacts. ``RUN_DIR/mlflow.json`` records the run's id, so
``--resume`` continues the same MLflow run.

Metrics are sent from a background thread in batches, so the training loop never waits
for the store; a store that fails is reported once and the run goes on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import re
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scidl.config import ConfigError
from scidl.runtime.files import atomic_write_text
from scidl.train.logging import NOT_PLOTTED, flat_hparams

if TYPE_CHECKING:
    from scidl.config import RunConfig

STATE_FILE = "mlflow.json"
BATCH = 1000  # MLflow's limit of metrics per log_batch call
PARAM_BATCH = 100  # and of parameters
CLOSE_TIMEOUT_S = 60.0


def tracking_uri(value: bool | str, log_root: str | Path) -> str:
    """The tracking URI of ``log.mlflow`` (True: the SQLite store under ``log.root``)."""
    if value is True:
        return "sqlite:///" + str((Path(log_root) / "mlflow.db").resolve())
    return str(value)


def artifact_location(log_root: str | Path) -> str:
    """Where the embedded store keeps artifacts (``LOG_ROOT/mlartifacts``)."""
    return (Path(log_root) / "mlartifacts").resolve().as_uri()


def metric_key(key: str) -> str:
    """A metrics-row key as an MLflow metric name (letters, digits, ``_ - . / space``)."""
    return re.sub(r"[^\w\-./ ]", "_", key)


def row_metrics(row: Mapping[str, Any]) -> list[tuple[str, float, int]]:
    """``(name, value, step)`` of every number in a row (``step``/``epoch`` excluded)."""
    step = int(row.get("step", 0))
    return [(metric_key(k), float(v), step) for k, v in row.items()
            if k not in NOT_PLOTTED and isinstance(v, (int, float)) and not isinstance(v, bool)]


def summary_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """The summary's numbers as ``summary/*`` metrics, with the best and final headline."""
    out = {f"summary/{k}": float(v) for k, v in summary.items()
           if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for which in ("best", "final"):
        part = summary.get(which)
        if isinstance(part, Mapping) and isinstance(part.get("value"), (int, float)):
            out[metric_key(f"summary/{which}_{part.get('metric')}")] = float(part["value"])
    return out


def _client(uri: str) -> Any:
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")  # a dead server: seconds, not minutes
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ConfigError("log.mlflow needs the mlflow package: pip install 'scidl[tracking]'") from None
    return MlflowClient(tracking_uri=uri)


@contextlib.contextmanager
def _quiet_store() -> Iterator[None]:
    """MLflow's INFO lines (creating the database tables) are not the run's output."""
    log = logging.getLogger("mlflow")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


def _experiment(client: Any, name: str, artifacts: str | None) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    return str(client.create_experiment(name, artifact_location=artifacts))


def read_state(run_dir: Path) -> dict[str, Any] | None:
    """``RUN_DIR/mlflow.json`` (tracking URI and run id), or None."""
    try:
        data = json.loads((run_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "run_id" in data else None


class MlflowLogger:
    """One MLflow run for one SciDL run folder (rank 0)."""

    def __init__(self, run_dir: Path, cfg: RunConfig) -> None:
        self.run_dir = run_dir
        self.uri = tracking_uri(cfg.log.mlflow, cfg.log.root)
        self.client = _client(self.uri)
        self.failed: str | None = None
        try:
            with _quiet_store():
                self.run_id = self._open(cfg)
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001 - the store's own errors, named in one line
            raise ConfigError(f"log.mlflow: cannot open a run at {self.uri}: "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
        self._queue: queue.Queue[list[Any] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._send, name="scidl-mlflow", daemon=True)
        self._thread.start()

    def _open(self, cfg: RunConfig) -> str:
        state = read_state(self.run_dir)
        if state is not None and state.get("tracking_uri") == self.uri:  # --resume
            self.client.update_run(state["run_id"], status="RUNNING")
            return str(state["run_id"])
        from scidl import __version__

        local = cfg.log.mlflow is True
        exp = _experiment(self.client, cfg.log.mlflow_experiment or cfg.workload_label(),
                          artifact_location(cfg.log.root) if local else None)
        run = self.client.create_run(exp, run_name=self.run_dir.name, tags={
            "scidl.run_dir": str(self.run_dir.resolve()), "scidl.workload": cfg.workload_label(),
            "scidl.version": str(__version__), "scidl.world_size": str(cfg.dist.nproc)})
        run_id = str(run.info.run_id)
        atomic_write_text(self.run_dir / STATE_FILE, json.dumps(
            {"tracking_uri": self.uri, "run_id": run_id, "experiment_id": exp}) + "\n")
        self._log_params(run_id, flat_hparams(cfg.model_dump(mode="json")))
        return run_id

    def _log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k[:250], str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), PARAM_BATCH):
            self.client.log_batch(run_id, params=items[i:i + PARAM_BATCH])

    def log(self, row: Mapping[str, Any]) -> None:
        if self.failed is None:
            stamp = int(time.time() * 1000)
            self._queue.put([(k, v, stamp, s) for k, v, s in row_metrics(row)])

    def _send(self) -> None:
        """Background thread: batches of queued metrics to the store until ``None``."""
        from mlflow.entities import Metric

        done = False
        while not done:
            items = [self._queue.get()]
            while len(items) < BATCH:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            done = items[-1] is None
            metrics = [Metric(k, v, stamp, s) for part in items if part for k, v, stamp, s in part]
            if metrics and self.failed is None:
                try:
                    for i in range(0, len(metrics), BATCH):
                        self.client.log_batch(self.run_id, metrics=metrics[i:i + BATCH])
                except Exception as e:  # noqa: BLE001 - tracking must not end training
                    self.failed = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"

    def close(self, summary: Mapping[str, Any] | None = None) -> None:
        self._queue.put(None)
        self._thread.join(CLOSE_TIMEOUT_S)
        if self._thread.is_alive():
            self.failed = self.failed or f"the store did not answer within {CLOSE_TIMEOUT_S:.0f} s"
        if self.failed is None:
            try:
                if summary is not None:
                    self.log_numbers(summary_metrics(summary), int(summary.get("steps") or 0))
                config = self.run_dir / "config.yaml"
                if config.is_file():
                    self.client.log_artifact(self.run_id, str(config))
                self.client.set_terminated(self.run_id, "FINISHED" if summary is not None else "FAILED")
            except Exception as e:  # noqa: BLE001
                self.failed = f"{type(e).__name__}: {e}"
        if self.failed is not None:
            warnings.warn(f"log.mlflow: metrics not fully recorded at {self.uri}: {self.failed}",
                          stacklevel=2)

    def log_numbers(self, values: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(k, v, stamp, step) for k, v in values.items()]
        for i in range(0, len(metrics), BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + BATCH])


def attach_files(run_dir: Path, files: Iterable[tuple[Path, str | None]]) -> None:
    """Add files of a finished run folder (summary, pictures) to its MLflow run as
    artifacts: ``(path, folder in the artifacts or None)`` each."""
    state = read_state(run_dir)
    if state is None:
        return
    try:
        client = _client(state["tracking_uri"])
        for path, folder in files:
            if Path(path).is_file():
                client.log_artifact(state["run_id"], str(path), folder)
    except Exception as e:  # noqa: BLE001 - tracking must not fail a finished run
        warnings.warn(f"log.mlflow: files not recorded at {state['tracking_uri']}: {e}", stacklevel=2)
