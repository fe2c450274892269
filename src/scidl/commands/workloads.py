"""``scidl workloads``: list the registered workloads with one-line descriptions."""

from __future__ import annotations

import argparse

NAME = "workloads"
HELP = "list registered workloads"


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from scidl.workloads import describe_workloads

    rows = describe_workloads()
    width = max(len(n) for n, _ in rows)
    for name, desc in rows:
        print(f"{name:<{width}}  {desc}")
    return 0
