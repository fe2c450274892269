"""Metrics rows to their destinations (:class:`MetricsLogger`), and reading them back.

``metrics.jsonl`` keeps the trainer's flat keys (``loss``, ``comm_s``, ``eval/rel_l2``).
TensorBoard gets the same values under grouped tags (:func:`tb_tag`): ``train/…`` for the
optimisation (loss, lr, step time, throughput), ``comm/…`` for gradient communication and
``eval/…`` for evaluations, so its dashboard shows three sections rather than one long
list. The destinations themselves are the classes of :mod:`scidl.train.loggers`
(``metrics.jsonl``, TensorBoard, MLflow, CSV, and any registered there).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scidl.runtime.files import atomic_write_text

if TYPE_CHECKING:
    from scidl.train.loggers import Logger

NOT_PLOTTED = ("step", "epoch")


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/Inf
    if hasattr(v, "item"):
        return _clean(v.item())
    return v


def tb_tag(key: str) -> str:
    """TensorBoard tag of a ``metrics.jsonl`` key.

    ``eval/rel_l2`` stays (already grouped), ``comm_bytes_sent`` → ``comm/bytes_sent``,
    ``comm_s`` → ``comm/s``, anything else → ``train/<key>`` (``train/loss``, ``train/lr``).
    """
    if "/" in key:
        return key
    if key.startswith("comm_"):
        return f"comm/{key[len('comm_'):]}"
    return f"train/{key}"


def flat_hparams(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"optim.lr": 0.001, ...}`` with values TensorBoard accepts.

    Numbers, strings and booleans stay; anything else (None, lists) becomes its string.
    """
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flat_hparams(v, f"{name}."))
        elif isinstance(v, (bool, int, float, str)):
            out[name] = v
        else:
            out[name] = str(v)
    return out


def read_config(run_dir: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


class MetricsLogger:
    """The run's loggers behind one ``log``/``close`` (rank 0).

    ``log(row)`` turns tensors into numbers and NaN/Inf into strings once, then hands the
    row to each logger (``metrics.jsonl`` first). ``close(summary)`` closes them all, the
    run's summary given when it finished (None when it failed).

    Args:
        run_dir: the run folder.
        tensorboard: also write TensorBoard events (when ``loggers`` is not given).
        loggers: the destinations (default: ``metrics.jsonl`` and, if asked, TensorBoard).
    """

    def __init__(self, run_dir: Path, tensorboard: bool = True,
                 loggers: Sequence[Logger] | None = None) -> None:
        from scidl.train.loggers.jsonl import JsonlLogger

        self.run_dir = run_dir
        self.path = run_dir / "metrics.jsonl"
        if loggers is None:
            loggers = [JsonlLogger(run_dir)]
            if tensorboard:
                from scidl.train.loggers.tensorboard import TensorBoardLogger

                loggers.append(TensorBoardLogger(run_dir))
        self.loggers = list(loggers)

    def log(self, row: Mapping[str, Any]) -> None:
        clean = {k: _clean(v) for k, v in row.items()}
        for lg in self.loggers:
            lg.log(clean)

    def close(self, summary: Mapping[str, Any] | None = None) -> None:
        for lg in self.loggers:
            lg.close(summary)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Rows of a ``metrics.jsonl``; a torn last line (crash mid-write) is ignored."""
    rows: list[dict[str, Any]] = []
    if not path.is_file():
        return rows
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep only rows with ``step <= last_step`` (resume from a checkpoint at that step)."""
    rows = [r for r in read_metrics(path) if int(r.get("step", 0)) <= last_step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
