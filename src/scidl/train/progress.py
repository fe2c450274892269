"""A progress bar on rank 0 (rich), silent when not a TTY or when asked to be quiet."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any


def progress_fields(row: Mapping[str, Any], headline: str) -> dict[str, float]:
    """What the bar shows after a step: the training loss and, once evaluated, the
    headline metric (``eval_<name>`` when the headline is itself called ``loss``)."""
    out = {"loss": float(row["loss"])}
    value = row.get(f"eval/{headline}")
    if value is not None:
        out[f"eval_{headline}" if headline in out else headline] = float(value)
    return out


class Progress:
    """``update(step, fields)`` advances the bar; ``close()`` removes it."""

    def __init__(self, total: int, enabled: bool, description: str = "train") -> None:
        self.enabled = enabled and sys.stdout.isatty()
        self._bar: Any = None
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(description, total=total, info="")

    def update(self, step: int, fields: Mapping[str, float] | None = None) -> None:
        fields = fields or {}
        if self._bar is not None:
            info = "  ".join(f"{k}={v:.4g}" for k, v in fields.items())
            self._bar.update(self._task, completed=step, info=info)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
