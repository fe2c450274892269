"""``scidl search``: architecture / hyperparameter search as workers of one Optuna study."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

NAME = "search"
HELP = "search architectures/hyperparameters (greedy, evolution, bayes, random) on Optuna storage"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from scidl.commands.options import option

    option(p, "workload", nargs="?", choices_from="scidl.workloads.registry:WORKLOADS",
           help="workload or task factory module:attr (not needed with --join/--resume)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="run-config overrides for every trial (e.g. train.epochs=5 dist.nproc=2)")
    option(p, "--strategy", "-s", default="bayes", choices_from="scidl.search.base:SEARCHERS",
           help="search method (installed plugins add their own)")
    p.add_argument("--trials", "-n", type=int, help="trial budget of the whole study (default: 20)")
    p.add_argument("--workers", "-w", type=int, default=1, help="local worker processes")
    p.add_argument("--storage", help="SQLite path (default <out>/study.db), journal:PATH, "
                   "or postgresql://user:pass@host/db (default: $SCIDL_SEARCH_STORAGE; keep "
                   "database passwords there, not on the command line)")
    p.add_argument("--study", help="study name (default: WORKLOAD-STRATEGY)")
    p.add_argument("--join", action="store_true", help="run one worker on an existing/shared study")
    p.add_argument("--resume", action="store_true",
                   help="continue the existing study named by --study/--out (a flag: the "
                   "study's folder is --out, unlike `scidl train --resume RUN_DIR`)")
    p.add_argument("--space", help="YAML search space merged over the workload's "
                   "(default: the workload's search space)")
    p.add_argument("--config", "-c",
                   help="base run config YAML for every trial (default: the workload's defaults)")
    p.add_argument("--out", help="output folder (default: runs/search/STUDY)")
    p.add_argument("--metric", help="metric to optimise (default: the workload's headline)")
    p.add_argument("--direction", choices=["maximize", "minimize"],
                   help="of --metric (default: the metric's own)")
    option(p, "--sampler-seed", type=int, default=0, aliases=("--seed",),
           help="seed of the search's sampler (worker i: seed + i); each trial trains with "
           "the base config's train.seed (set it with train.seed=N)")
    p.add_argument("--sampler", choices=["tpe", "gp"], default="tpe", help="bayes: sampler")
    p.add_argument("--pruner", choices=["median", "sha", "none"], default="median", help="bayes: pruner")
    p.add_argument("--population", type=int, default=8, help="evolution: NSGA-II population")
    p.add_argument("--per-depth", type=int, default=4, help="greedy: trials per depth")
    p.add_argument("--tol", type=float, default=0.01, help="greedy: relative gain to go deeper")
    p.add_argument("--penalty", type=float, default=0.1, help="greedy: size-penalty weight λ")
    p.add_argument("--heartbeat", type=float, default=10.0, help="trial heartbeat interval (s)")
    p.add_argument("--grace", type=float,
                   help="a trial silent this long (s) is failed (default: 3x --heartbeat)")
    p.add_argument("--max-retries", type=int, default=1, help="re-queues of a crashed trial")
    p.add_argument("--objective", help=argparse.SUPPRESS)  # a registered objective name (toy, ...)
    p.add_argument("--objective-arg", action="append", default=[], help=argparse.SUPPRESS)
    p.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    p.add_argument("--no-report", action="store_true", help="do not write trials.csv/plots")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress line")


def _base_overrides(args: argparse.Namespace) -> dict[str, Any]:
    import yaml

    from scidl.config import ConfigError, _deep_merge, overrides_to_dict

    base: dict[str, Any] = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        base = yaml.safe_load(path.read_text()) or {}
        base.pop("workload", None)
        base.get("log", {}).pop("run_dir", None)
    return _deep_merge(base, overrides_to_dict(list(args.overrides)))


def _settings(args: argparse.Namespace, study: str, out: str) -> Any:
    from scidl.config import overrides_to_dict
    from scidl.search.runner import describe_objective
    from scidl.search.settings import SearchSettings
    from scidl.search.space import load_space

    space = load_space(args.workload, args.space) if not args.objective or args.space else None
    if space is None:
        from scidl.search.toy import TOY_SPACE

        space = TOY_SPACE
    fields: dict[str, Any] = dict(
        workload=args.workload, strategy=args.strategy, trials=args.trials or 20, space=space,
        base=_base_overrides(args), out=str(Path(out).resolve()), seed=args.sampler_seed, metric=args.metric or "",
        heartbeat_s=args.heartbeat, grace_s=args.grace, max_retries=args.max_retries,
        sampler=args.sampler, pruner=args.pruner, population=args.population,
        per_depth=args.per_depth, tol=args.tol, penalty=args.penalty,
    )
    if args.objective:
        fields["objective"] = args.objective
        fields["objective_args"] = overrides_to_dict(args.objective_arg)
    settings = describe_objective(SearchSettings(**fields))
    if args.direction:
        settings = settings.model_copy(update={"direction": args.direction})
    return settings


def _check_arguments(args: argparse.Namespace) -> None:
    """Numbers given on the command line are checked before anything starts."""
    import math

    from scidl.cli import UserError

    at_least = {"--trials": (args.trials, 1), "--workers": (args.workers, 1),
                "--max-retries": (args.max_retries, 0), "--population": (args.population, 2),
                "--per-depth": (args.per_depth, 1)}
    for flag, (value, low) in at_least.items():
        if value is not None and value < low:
            raise UserError(f"{flag} must be >= {low} (got {value})")
    positive = {"--heartbeat": args.heartbeat, "--grace": args.grace}
    for flag, value in positive.items():
        if value is not None and not (math.isfinite(value) and value > 0):
            raise UserError(f"{flag} must be a positive number of seconds (got {value})")
    for flag, value in {"--tol": args.tol, "--penalty": args.penalty}.items():
        if not (math.isfinite(value) and value >= 0):
            raise UserError(f"{flag} must be a finite number >= 0 (got {value})")
    if args.config and not Path(args.config).is_file():
        raise UserError(f"config file not found: {args.config}")
    from scidl.search.base import SEARCHERS

    if args.strategy not in SEARCHERS:
        raise UserError(f"--strategy: {SEARCHERS.unknown(args.strategy)}")


def _warn_random_only(trials: int, population: int) -> None:
    import warnings

    from scidl.search.evolution import random_only_message

    message = random_only_message(trials, population)
    if message is not None:
        warnings.warn(message, stacklevel=2)


def run(args: argparse.Namespace) -> int:
    import optuna

    from scidl.cli import UserError
    from scidl.search.objective import ObjectiveError
    from scidl.search.runner import SearchError, run_search

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our progress line says enough
    from scidl.search.space import SpaceError
    from scidl.search.storage import STORAGE_ENV, StorageError

    # Read the storage URL handed over in the environment once, and keep it away from
    # the processes this one starts (trials' training ranks need no database password).
    env_storage = os.environ.pop(STORAGE_ENV, None) or None

    workload = args.workload
    if workload and "=" in workload:
        args.overrides.insert(0, workload)
        workload = args.workload = None
    _check_arguments(args)
    if not workload and not (args.study and (args.join or args.resume)):
        raise UserError("name a WORKLOAD, or give --study (and --storage) with --join/--resume")
    if workload and not args.study:  # a task factory's study is named after the factory
        from scidl.workloads import workload_label

        args.study = f"{workload_label(workload)}-{args.strategy}"
    study = args.study
    out = args.out or str(Path("runs") / "search" / study)
    storage = args.storage or env_storage or str(Path(out) / "study.db")
    try:
        settings = _settings(args, study, out) if workload else None
        if settings is not None and settings.strategy == "evolution":
            _warn_random_only(settings.trials, settings.population)
        result = run_search(
            storage, study, settings, workers=args.workers, resume=args.resume, join=args.join,
            worker_index=args.worker_index, report=not args.no_report, quiet=args.quiet,
            budget=args.trials,
        )
    except (SearchError, SpaceError, StorageError, ObjectiveError) as e:
        raise UserError(str(e)) from None
    if not args.quiet or not args.no_report:
        s = result.summary
        best = s.get("best") or {}
        print(f"study {study}: {s.get('states')} in {s['wall_s']:.1f} s; outputs in {result.out}",
              file=sys.stdout)
        if best:
            print(f"best: trial #{best['number']} {result.settings.metric} = {best['metric']:.4g}, "
                  f"{best['n_params']} parameters -> {result.out / 'best.yaml'}")
    return 1 if result.summary.get("failed_workers") else 0
