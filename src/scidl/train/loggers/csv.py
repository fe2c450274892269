"""``metrics.csv``: the rows as one table, for spreadsheets (``log.loggers=[csv]``)."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scidl.runtime.files import atomic_write_text


class CsvLogger:
    """Writes ``RUN_DIR/metrics.csv`` at the end of the run from ``metrics.jsonl`` (so a
    resumed run's table holds every row): one column per key seen in any row (evaluation
    rows add ``eval/*`` columns), empty where a row has no value."""

    def __init__(self, run_dir: Path, cfg: Any = None) -> None:
        self.run_dir = run_dir
        self.path = run_dir / "metrics.csv"

    def log(self, row: Mapping[str, Any]) -> None:
        return None  # metrics.jsonl holds the rows; the table is written at close

    def close(self, summary: Mapping[str, Any] | None = None) -> None:
        from scidl.train.logging import read_metrics

        rows = read_metrics(self.run_dir / "metrics.jsonl")
        columns: dict[str, None] = {}
        for row in rows:
            columns.update(dict.fromkeys(row))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path, buf.getvalue())
