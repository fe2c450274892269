"""``metrics.jsonl``: one JSON object per row, flushed line by line."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class JsonlLogger:
    """Appends rows to ``RUN_DIR/metrics.jsonl`` (a crash loses at most the row being
    written; a resumed run appends after the rows its checkpoint kept)."""

    def __init__(self, run_dir: Path, cfg: Any = None) -> None:
        self.path = run_dir / "metrics.jsonl"
        self._file = open(self.path, "a", buffering=1)

    def log(self, row: Mapping[str, Any]) -> None:
        self._file.write(json.dumps(dict(row)) + "\n")

    def close(self, summary: Mapping[str, Any] | None = None) -> None:
        self._file.close()
