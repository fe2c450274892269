"""Time to first result: wall time from a fresh ``scidl train`` process to its first
progress line and to its summary, for the demo and for the bring-your-own-model example.

Each command is started as a new process (stdout a pipe, so progress comes as plain
lines, one per ``log.every_s``), and every output line is time-stamped as it arrives.
Recorded per command: the run folder line, each start-up phase line, the first progress
line and the summary (``NAME: metric = ...``), in seconds from the start of the process,
plus the machine's load average before and after. Writes
benchmarks/results/first_result.json (render it into docs/benchmarks.md with
``python scripts/render_docs.py``).

    python benchmarks/first_result.py [--root /tmp/scidl-first-result]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "first_result.json"

#: (label, arguments after ``scidl train``): the README's commands, with their defaults
COMMANDS: dict[str, list[str]] = {
    "demo (make demo)": ["burgers", "--nproc", "2"],
    "your own model (examples/byo_model.py)": [
        "examples/byo_model.py:make_task", "--nproc", "2", "--epochs", "20", "optim.lr=3e-3"],
}


def timed_lines(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[list[tuple[float, str]], int]:
    """Run ``cmd``; every stdout/stderr line with its arrival time (s since the start)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=cwd)
    assert proc.stdout is not None
    lines = [(time.perf_counter() - t0, ln.rstrip("\n")) for ln in proc.stdout]
    return lines, proc.wait()


def milestones(lines: list[tuple[float, str]]) -> dict[str, Any]:
    """Seconds to the run folder, each start-up phase, the first progress line, the summary."""
    def first(pred: Any) -> float | None:
        return next((round(t, 2) for t, ln in lines if pred(ln)), None)

    return {
        "run_folder_s": first(lambda ln: ln.startswith("run folder: ")),
        "phases_s": {ln: round(t, 2) for t, ln in lines if ln.endswith("…")},
        "first_progress_s": first(lambda ln: ln.startswith("step ")),
        "summary_s": first(lambda ln: " = " in ln and " after " in ln and "process(es)" in ln),
        "summary": next((ln for _, ln in lines if " after " in ln and "process(es)" in ln), None),
    }


def versions() -> dict[str, str]:
    import torch

    import scidl

    return {"python": sys.version.split()[0], "torch": torch.__version__, "scidl": scidl.__version__}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=None, help="log.root of the runs (default: a temp folder)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    root = args.root or tempfile.mkdtemp(prefix="scidl-first-result-")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    results: dict[str, Any] = {}
    load_before = os.getloadavg()
    for label, rest in COMMANDS.items():
        cmd = [sys.executable, "-m", "scidl", "train", *rest, f"log.root={root}"]
        load = os.getloadavg()
        lines, rc = timed_lines(cmd, env, ROOT)
        if rc != 0:
            print("\n".join(ln for _, ln in lines[-20:]), file=sys.stderr)
            raise SystemExit(f"{label}: exit status {rc}")
        results[label] = {"command": "scidl train " + " ".join(rest), **milestones(lines),
                          "load_avg_before": [round(x, 2) for x in load]}
        print(f"{label}: first progress {results[label]['first_progress_s']} s, "
              f"summary {results[label]['summary_s']} s", flush=True)
    out = {
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "hardware": {"cpus": os.cpu_count(), "affinity": len(os.sched_getaffinity(0))},
        "versions": versions(),
        "load_avg": {"before": [round(x, 2) for x in load_before],
                     "after": [round(x, 2) for x in os.getloadavg()]},
        "results": results,
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
