"""``scidl config``: print the fully resolved run config of a workload as YAML."""

from __future__ import annotations

import argparse

NAME = "config"
HELP = "print the resolved default config of a workload as YAML (with overrides applied)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("workload", help="workload name, or your task factory as module:attr")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--config", "-c", help="YAML file to start from")


def run(args: argparse.Namespace) -> int:
    from scidl.config import load_config

    cfg = load_config(args.workload, args.config, args.overrides)
    print(cfg.to_yaml(), end="")
    return 0
