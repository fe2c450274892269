"""Where the trainer's metrics rows go: one small class per destination.

A logger has two methods (:class:`Logger`): ``log(row)`` for each logged row (rank 0,
values already plain Python numbers, strings for NaN/Inf) and ``close(summary)`` at the
end of the run (``summary`` is the run's summary, or None when the run failed).
``metrics.jsonl`` and TensorBoard are built in and switched by ``log.tensorboard``;
``log.mlflow`` adds MLflow; ``log.loggers`` names more of them: a registered name
(``csv``), a ``module:attr`` path, or an entry point of the group ``scidl.loggers``
installed by another package. A logger class is built as ``cls(run_dir, cfg)``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from scidl.registry import Registry, RegistryError, load_path

if TYPE_CHECKING:
    from scidl.config import RunConfig

__all__ = ["LOGGERS", "Logger", "build_loggers", "check_loggers", "logger_class", "logger_names",
           "register_logger"]


@runtime_checkable
class Logger(Protocol):
    """A destination for metrics rows (used on rank 0 only)."""

    def log(self, row: Mapping[str, Any]) -> None:
        """One metrics row: ``step``, ``epoch``, ``loss``, ``lr``, ``comm_*``, ``eval/*``…"""

    def close(self, summary: Mapping[str, Any] | None = None) -> None:
        """End of the run: ``summary`` as in ``summary.json`` (None: the run failed)."""


LOGGERS: Registry[type[Logger]] = Registry("log.loggers", {
    "jsonl": "scidl.train.loggers.jsonl:JsonlLogger",
    "tensorboard": "scidl.train.loggers.tensorboard:TensorBoardLogger",
    "mlflow": "scidl.train.loggers.mlflow:MlflowLogger",
    "csv": "scidl.train.loggers.csv:CsvLogger",
}, group="scidl.loggers")


def register_logger(name: str, cls: type[Logger]) -> type[Logger]:
    """Make ``cls`` available as ``log.loggers=[name]``."""
    return LOGGERS.register(name, cls)


def logger_names(cfg: RunConfig) -> list[str]:
    """The loggers a run uses, in order, each once."""
    names = ["jsonl"]
    if cfg.log.tensorboard:
        names.append("tensorboard")
    if cfg.log.mlflow:
        names.append("mlflow")
    for name in cfg.log.loggers:
        if name not in names:
            names.append(name)
    return names


def logger_class(name: str) -> type[Logger]:
    """The class of a registered logger name or a ``module:attr`` path."""
    if name not in LOGGERS and ":" in name:
        try:
            return load_path(name)
        except Exception as e:
            raise RegistryError(f"log.loggers: cannot load {name!r}: {type(e).__name__}: {e}") from None
    return LOGGERS.get(name)


def check_loggers(cfg: RunConfig) -> None:
    """Every logger of the run can be built here (before any process starts)."""
    from scidl.config import ConfigError

    for name in logger_names(cfg):
        try:
            logger_class(name)
        except RegistryError as e:
            raise ConfigError(str(e)) from None
    if cfg.log.mlflow and importlib.util.find_spec("mlflow") is None:
        raise ConfigError("log.mlflow needs the mlflow package: pip install 'scidl[tracking]'")


def build_loggers(cfg: RunConfig, run_dir: Path) -> list[Logger]:
    """Instantiate the run's loggers (rank 0), ``metrics.jsonl`` first."""
    return [logger_class(name)(run_dir, cfg) for name in logger_names(cfg)]  # type: ignore[call-arg]
