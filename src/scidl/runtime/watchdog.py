"""Stall watchdog: a rank that stops making progress is named, and the job ends.

Every rank runs one daemon thread. Each beat it writes its own heartbeat file
``<run_dir>/.heartbeat/rank_<r>`` (pid, host, a beat counter and the last finished step)
and reads every other rank's. A rank whose file has not changed for ``timeout_s``
(measured on the reader's own monotonic clock, so clocks of different hosts never need
to agree) is stalled: stopped (SIGSTOP), frozen, or on a host that went away. The lowest
rank that is not stalled prints one line::

    scidl: error: rank 1 made no progress for 120 s (stalled at step 37)

kills the stalled process when it runs on the same host (a stopped process would
otherwise wait for SIGKILL), and exits with :data:`STALL_EXIT`. The launcher (the elastic
agent, torchrun, srun) sees a failed rank and ends the job, or restarts it under
``--max-restarts``.

The thread only touches local files: no collective and no store call, so it cannot wait
on the rank it watches, and every error it meets is ignored (it never brings a healthy
run down by itself).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scidl.runtime.files import atomic_write_text

STALL_EXIT = 75
HEARTBEAT_DIR = ".heartbeat"
STALL_TAG = "scidl stall: "  # marks the message a stall leaves in the agent's error file


class StallError(RuntimeError):
    """A rank stopped making progress and the job was ended (the message names the rank)."""


def report_stall(line: str) -> None:
    """Make the stall line reach the user once.

    Under an elastic agent (``scidl train --nproc N``, torchrun) the line goes into this
    process's error file, which the launcher reads and prints (SciDL's as one line, without
    the agent's traceback); otherwise it goes to stderr.
    """
    from scidl.runtime.worker_errors import write_error_file

    if write_error_file(STALL_TAG + line):
        return
    print(f"scidl: error: {line}", file=sys.stderr, flush=True)


@dataclass
class _Seen:
    content: str
    since: float  # reader's monotonic clock when ``content`` was first seen


def heartbeat_path(run_dir: Path, rank: int) -> Path:
    return run_dir / HEARTBEAT_DIR / f"rank_{rank}"


def parse_heartbeat(text: str) -> dict[str, str]:
    """``"pid=12 host=h beat=3 step=7"`` → ``{"pid": "12", ...}`` (bad fields dropped)."""
    return dict(kv.split("=", 1) for kv in text.split() if "=" in kv)


def stalled_ranks(seen: dict[int, _Seen], now: float, timeout_s: float) -> list[int]:
    """Ranks whose heartbeat has not changed for ``timeout_s`` seconds (finished ones excepted)."""
    return sorted(r for r, s in seen.items()
                  if now - s.since >= timeout_s and "done" not in parse_heartbeat(s.content))


def stall_message(rank: int, seconds: float, step: str) -> str:
    return f"rank {rank} made no progress for {seconds:g} s (stalled at step {step})"


class StallWatchdog:
    """One rank's heartbeat writer and checker (see the module docstring).

    ``step()`` returns this rank's last finished step; ``on_stall(line)`` is called once,
    by the reporting rank, instead of exiting (for tests).
    """

    def __init__(self, run_dir: Path, rank: int, world_size: int, timeout_s: float,
                 step: Callable[[], int] = lambda: 0,
                 on_stall: Callable[[str], None] | None = None) -> None:
        self.run_dir, self.rank, self.world = run_dir, rank, world_size
        self.timeout_s = timeout_s
        self.interval = min(max(timeout_s / 6, 0.05), 5.0)
        self.step = step
        self.on_stall = on_stall
        self._beat = 0
        self._seen: dict[int, _Seen] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scidl-stall-watchdog", daemon=True)
        self._host = socket.gethostname()

    # ------------------------------------------------------------------ thread

    def start(self) -> StallWatchdog:
        self._write()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval * 4)
        try:  # "done": a finished rank is never reported by ranks still finishing
            self._write(done=True)
        except OSError:
            pass

    def __enter__(self) -> StallWatchdog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._write()
                if self.check(time.monotonic()):
                    return
            except Exception:  # a watchdog must never be the thing that fails
                continue

    # ------------------------------------------------------------------ pieces

    def _write(self, done: bool = False) -> None:
        self._beat += 1
        path = heartbeat_path(self.run_dir, self.rank)
        atomic_write_text(path, f"pid={os.getpid()} host={self._host} beat={self._beat} "
                                f"step={self.step()}{' done=1' if done else ''}\n", durable=False)

    def _read(self, rank: int) -> str:
        try:
            return heartbeat_path(self.run_dir, rank).read_text()
        except OSError:
            return ""

    def check(self, now: float) -> bool:
        """Read every rank's heartbeat; report and act on a stall. True once reported."""
        for r in range(self.world):
            text = self._read(r)
            old = self._seen.get(r)
            if old is None or old.content != text:
                self._seen[r] = _Seen(text, now)
        stalled = [r for r in stalled_ranks(self._seen, now, self.timeout_s) if r != self.rank]
        if not stalled:
            return False
        healthy = [r for r in range(self.world) if r not in stalled]
        if healthy and healthy[0] != self.rank:  # the lowest healthy rank reports
            return False
        r = stalled[0]
        info = parse_heartbeat(self._seen[r].content)
        line = stall_message(r, self.timeout_s, info.get("step", "?"))
        if self.on_stall is not None:
            self.on_stall(line)
            return True
        report_stall(line)
        _kill_after_exit([parse_heartbeat(self._seen[s].content) for s in stalled], self._host)
        os._exit(STALL_EXIT)


KILL_DELAY_S = 1.0
"""How long after this rank's exit its stalled peers are killed: the launcher polls its
workers every 0.1 s and names the first exit it sees, which must be this rank's."""


def _local_pids(infos: list[dict[str, str]], host: str) -> list[int]:
    return [int(i["pid"]) for i in infos if i.get("host") == host and i.get("pid", "").isdigit()]


def _kill_after_exit(infos: list[dict[str, str]], host: str) -> None:
    """SIGKILL the stalled ranks on this host (a stopped process ignores SIGTERM until
    resumed) :data:`KILL_DELAY_S` after this process exits, from a forked child that only
    sleeps and signals. Killing them first let the launcher see a rank killed by a signal
    before this rank's stall report, and name that instead."""
    pids = _local_pids(infos, host)
    if not pids or os.fork() != 0:
        return
    try:  # the child: no locks, no I/O, just the delayed signals
        time.sleep(KILL_DELAY_S)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    finally:
        os._exit(0)
