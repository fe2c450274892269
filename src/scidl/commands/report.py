"""``scidl report``: regenerate plots and report.html for a train, scale or predict run."""

from __future__ import annotations

import argparse

NAME = "report"
HELP = "regenerate plots and a self-contained report.html for a run folder"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (train, scale or predict)")


def run(args: argparse.Namespace) -> int:
    from scidl.scaling.report import render_run

    path = render_run(args.run_dir)
    print(f"report: {path}")
    return 0
