"""Metrics to files: ``metrics.jsonl`` (one JSON object per row) and TensorBoard events.

``metrics.jsonl`` keeps the trainer's flat keys (``loss``, ``comm_s``, ``eval/rel_l2``).
TensorBoard gets the same values under grouped tags (:func:`tb_tag`): ``train/…`` for the
optimisation (loss, lr, step time, throughput), ``comm/…`` for gradient communication and
``eval/…`` for evaluations, so its dashboard shows three sections rather than one long
list. The run's ``config.yaml`` is logged as hyperparameters (HParams dashboard) with the
last value of each evaluation metric and of the loss.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scidl.runtime.files import atomic_write_text

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


def _read_config(run_dir: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


class MetricsLogger:
    """Append-only metrics writer used on rank 0.

    ``log(row)`` appends one JSON line (flushed, so a crash loses at most the row being
    written) and mirrors every numeric value to TensorBoard under its grouped tag
    (:func:`tb_tag`). ``close()`` logs the run's config as hyperparameters.
    """

    def __init__(self, run_dir: Path, tensorboard: bool = True) -> None:
        self.run_dir = run_dir
        self.path = run_dir / "metrics.jsonl"
        self._file = open(self.path, "a", buffering=1)
        self._tb = None
        self._last: dict[str, float] = {}
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def log(self, row: dict[str, Any]) -> None:
        row = {k: _clean(v) for k, v in row.items()}
        self._file.write(json.dumps(row) + "\n")
        if self._tb is not None:
            step = int(row.get("step", 0))
            for k, v in row.items():
                if k not in NOT_PLOTTED and isinstance(v, (int, float)):
                    tag = tb_tag(k)
                    self._tb.add_scalar(tag, v, step)
                    if tag.startswith("eval/") or tag == "train/loss":
                        self._last[tag] = float(v)

    def _log_hparams(self) -> None:
        """The config as hyperparameters, against the last eval metrics and loss."""
        from torch.utils.tensorboard.summary import hparams

        params = flat_hparams(_read_config(self.run_dir))
        if self._tb is None or not params:
            return
        metrics = {k: v for k, v in self._last.items() if math.isfinite(v)}
        writer = self._tb._get_file_writer()
        for summary in hparams(params, metrics):
            writer.add_summary(summary)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._log_hparams()
            self._tb.flush()
            self._tb.close()


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
