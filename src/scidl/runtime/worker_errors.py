"""Errors raised inside worker processes reach the user as one line.

A process started by the elastic agent that fails with a user error (a bad config, an
unusable checkpoint) or ends the job for a stalled rank leaves a tagged message in the
agent's error file for that process (``TORCHELASTIC_ERROR_FILE``) and exits with a known
status, instead of printing a traceback. The launching process reads the message back from
torch's ``ChildFailedError`` (:func:`report_worker_errors`) and raises it as one exception
whose text the CLI prints as one line; the agent's own log records about that exit (a
traceback of its own) are held back. Any other failure keeps its traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn, TypeVar

USER_ERROR_EXIT = 2
USER_ERROR_TAG = "scidl user error: "
_AGENT_LOGGERS = ("torch.distributed.elastic.multiprocessing.api", "torch.multiprocessing.spawn")

T = TypeVar("T")


def write_error_file(message: str) -> bool:
    """Leave ``message`` in this worker's agent error file; False when there is none."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return False
    try:
        Path(path).write_text(json.dumps({"message": message, "timestamp": int(time.time())}))
    except OSError:
        return False
    return True


def exit_with_user_error(err: BaseException) -> NoReturn:
    """In a worker: leave the one-line message of ``err`` for the launcher, exit 2."""
    write_error_file(USER_ERROR_TAG + str(err))
    raise SystemExit(USER_ERROR_EXIT)


def tagged_message(err: BaseException, exitcode: int, tag: str) -> str | None:
    """The message a worker that exited with ``exitcode`` left under ``tag`` (None: none)."""
    for failure in getattr(err, "failures", {}).values():
        msg = failure.message
        if failure.exitcode == exitcode and isinstance(msg, str) and msg.startswith(tag):
            return msg[len(tag):]
    return None


class AgentLogFilter(logging.Filter):
    """Holds back the agent's log records about a worker that exited with one of ``codes``
    (a traceback of the agent's own) and the 'Terminating process' warnings before them;
    other records pass (held ones are released with the next one)."""

    def __init__(self, codes: tuple[int, ...]) -> None:
        super().__init__()
        self.codes = codes
        self.held: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if getattr(exc, "exit_code", None) in self.codes:
            self.held.clear()
            return False
        if record.getMessage().startswith("Terminating process"):
            self.held.append(record)
            return False
        self.release()
        return True

    def release(self) -> None:
        held, self.held = self.held, []
        for rec in held:
            _emit(rec)


def _emit(record: logging.LogRecord) -> None:
    """Hand a held record to the handlers its logger would have used."""
    logger: logging.Logger | None = logging.getLogger(record.name)
    while logger is not None:
        for h in logger.handlers:
            if record.levelno >= h.level:
                h.handle(record)
        logger = logger.parent if logger.propagate else None


@contextlib.contextmanager
def _filtered_agent_logs(codes: tuple[int, ...]) -> Iterator[AgentLogFilter]:
    filt = AgentLogFilter(codes)
    loggers = [logging.getLogger(n) for n in _AGENT_LOGGERS]
    for lg in loggers:
        lg.addFilter(filt)
    try:
        yield filt
    finally:
        for lg in loggers:
            lg.removeFilter(filt)


def report_worker_errors(launch: Callable[[], T]) -> T:
    """Run ``launch()``; a worker's user error comes back as one ConfigError, a stalled
    rank as one StallError; any other failure is re-raised as it was."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    from scidl.config import ConfigError
    from scidl.runtime.watchdog import STALL_EXIT, STALL_TAG, StallError

    with _filtered_agent_logs((USER_ERROR_EXIT, STALL_EXIT)) as filt:
        try:
            return launch()
        except ChildFailedError as e:
            stall = tagged_message(e, STALL_EXIT, STALL_TAG)
            if stall is not None:
                raise StallError(stall) from None
            msg = tagged_message(e, USER_ERROR_EXIT, USER_ERROR_TAG)
            if msg is None:
                filt.release()
                raise
            raise ConfigError(msg) from None
