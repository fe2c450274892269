"""Progress on rank 0: a rich bar in a terminal, plain lines in a batch log or a pipe.

In a terminal the bar shows the step, elapsed and remaining time, the loss, the latest
evaluation of the headline metric and the throughput. When stdout is not a terminal
(Slurm/PBS logs, ``| tee``), a line such as::

    step 120/3000 (4%) loss 1.2e-02 rel_l2 0.0412 1234 samples/s lr 1.0e-03 ETA 5m12s

is printed every ``log.every_s`` seconds and once at the end.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO


def progress_fields(row: Mapping[str, Any], headline: str) -> dict[str, float]:
    """What the bar shows after a step: the training loss and, once evaluated, the
    headline metric (``eval_<name>`` when the headline is itself called ``loss``)."""
    out = {"loss": float(row["loss"])}
    value = row.get(f"eval/{headline}")
    if value is not None:
        out[f"eval_{headline}" if headline in out else headline] = float(value)
    return out


def format_duration(seconds: float) -> str:
    """``42s``, ``5m12s``, ``2h05m``; ``?`` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _value(name: str, v: float) -> str:
    return f"{v:.1e}" if name == "loss" else f"{v:.3g}"


def format_progress_line(
    step: int, total: int, fields: Mapping[str, float],
    samples_per_s: float | None = None, lr: float | None = None, eta_s: float | None = None,
) -> str:
    """One plain progress line: step/total (percent), the fields (loss first, then the
    latest eval metric), throughput, learning rate and time left; unknown parts left out."""
    pct = int(100 * step / total) if total > 0 else 100
    parts = [f"step {step}/{total} ({pct}%)"]
    parts += [f"{k} {_value(k, v)}" for k, v in fields.items()]
    if samples_per_s is not None and math.isfinite(samples_per_s):
        parts.append(f"{samples_per_s:.0f} samples/s")
    if lr is not None:
        parts.append(f"lr {lr:.1e}")
    if eta_s is not None:
        parts.append(f"ETA {format_duration(eta_s)}")
    return " ".join(parts)


def line_due(now: float, last: float, every_s: float) -> bool:
    """Whether a plain line is due ``now`` (``last``: when the previous one was printed)."""
    return every_s > 0 and now - last >= every_s


class Progress:
    """``update(step, fields, lr)`` after each step; ``close()`` at the end.

    ``enabled``: show anything at all (rank 0, not ``--quiet``). ``samples_per_step``:
    the global batch, for the throughput. ``stream`` (stdout by default) decides between
    the bar (a terminal) and plain lines every ``every_s`` seconds (0: none).
    """

    def __init__(self, total: int, enabled: bool, description: str = "train",
                 every_s: float = 30.0, samples_per_step: int | None = None,
                 stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream if stream is not None else sys.stdout
        tty = self.stream.isatty()
        self.enabled = enabled and tty
        self.lines = enabled and not tty and every_s > 0
        self.total = total
        self.every_s = every_s
        self.samples_per_step = samples_per_step
        self.clock = clock
        self._start: tuple[int, float] | None = None  # (step, time) of the first update
        self._last_line = -math.inf
        self._printed_step: int | None = None
        self._step = 0
        self._fields: dict[str, float] = {}
        self._lr: float | None = None
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

    def _rates(self, now: float) -> tuple[float | None, float | None]:
        """(samples/s, seconds left) from the steps since the first update."""
        if self._start is None:
            return None, None
        steps, dt = self._step - self._start[0], now - self._start[1]
        if steps <= 0 or dt <= 0:
            return None, None
        per_s = steps / dt
        sps = per_s * self.samples_per_step if self.samples_per_step else None
        return sps, (self.total - self._step) / per_s

    def update(self, step: int, fields: Mapping[str, float] | None = None,
               lr: float | None = None) -> None:
        now = self.clock()
        if self._start is None:
            self._start = (step, now)
        self._step = step
        # the loss is this step's; an eval metric stays until the next evaluation
        self._fields.update(fields or {})
        if lr is not None:
            self._lr = lr
        if self._bar is not None:
            sps, _ = self._rates(now)
            info = "  ".join(f"{k}={v:.4g}" for k, v in self._fields.items())
            if sps is not None:
                info += f"  {sps:.0f} samples/s"
            self._bar.update(self._task, completed=step, info=info)
        elif self.lines and self._moved() and line_due(now, self._last_line, self.every_s):
            self._print_line(now)

    def _moved(self) -> bool:
        """Something to show: fields, or steps since the first update (the loss may come
        later: the trainer averages it over ranks when it logs a row)."""
        return bool(self._fields) or (self._start is not None and self._step > self._start[0])

    def _print_line(self, now: float) -> None:
        sps, eta = self._rates(now)
        print(format_progress_line(self._step, self.total, self._fields, sps, self._lr, eta),
              file=self.stream, flush=True)
        self._last_line = now
        self._printed_step = self._step

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        if self.lines and self._moved() and self._printed_step != self._step:
            self._print_line(self.clock())  # the last step always gets a line
