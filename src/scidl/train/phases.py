"""What a run is doing before its first step: one short line per start-up phase.

Starting a multi-process run takes tens of seconds on a small machine (spawning the
processes and importing torch in each, building the workload's data and reference,
wrapping the model in DDP, the first step). Rank 0 says which phase it is in::

    starting 2 processes…
    building burgers (8000 collocation points)…
    setting up model and optimizer…
    first step…

Outside a terminal (batch logs, pipes) each phase is a plain line. In a terminal the
current phase is a rich spinner and the finished ones stay as lines; the last phase
hands over to the progress bar. Nothing is shown with ``--quiet`` or on other ranks.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

STARTING = "starting {n} processes…"
SETUP = "setting up model and optimizer…"
FIRST_STEP = "first step…"


def building_line(label: str, note: str = "") -> str:
    """``building burgers (reference solution, …)…``; the note in brackets when given."""
    return f"building {label} ({note})…" if note else f"building {label}…"


class Phases:
    """``show(text)`` when a phase begins; ``close()`` before the progress bar starts.

    ``enabled``: rank 0 and not ``--quiet``. ``stream`` (stdout by default) decides
    between a spinner (a terminal) and plain lines.
    """

    def __init__(self, enabled: bool, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self._status: Any = None
        self._console: Any = None
        self._current: str | None = None

    def show(self, text: str) -> None:
        if not self.enabled:
            return
        if not self.tty:
            print(text, file=self.stream, flush=True)
            return
        if self._status is None:
            from rich.console import Console

            self._console = Console(file=self.stream)
            self._status = self._console.status(text)
            self._status.start()
        else:
            self._console.print(f"[dim]{self._current}[/dim]")  # the finished phase stays
            self._status.update(text)
        self._current = text

    def close(self) -> None:
        """Stop the spinner (the finished phase stays as a line)."""
        if self._status is not None:
            self._status.stop()
            self._console.print(f"[dim]{self._current}[/dim]")
            self._status = None

    def __enter__(self) -> Phases:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
