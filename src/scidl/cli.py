"""The ``scidl`` command: a thin layer over the config objects and the Python API.

Each subcommand lives in its own module (``scidl.commands.<name>`` or a package's
``cli`` module) exposing ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``. User errors print one line and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence
from typing import Any

# One line per subcommand module; imported only when the CLI runs.
_COMMANDS: list[str] = [
    "scidl.commands.train",
    "scidl.commands.config",
    "scidl.commands.workloads",
    "scidl.commands.search",
    "scidl.commands.scale",
    "scidl.commands.bench_collectives",
    "scidl.commands.predict",
    "scidl.commands.profile",
    "scidl.commands.infer",
    "scidl.commands.report",
    "scidl.commands.topology",
    "scidl.commands.study",
    "scidl.commands.cluster",
    "scidl.commands.data",
]


class UserError(Exception):
    """An error caused by the user's input; printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scidl",
        description="Scalable deep learning for science: train, scale, predict and search.",
    )
    from scidl.commands.options import HelpFormatter

    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for modname in _COMMANDS:
        mod = importlib.import_module(modname)
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP,
                           formatter_class=HelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Exception types that are the user's mistake (imported only if already loaded)."""
    from scidl.config import ConfigError
    from scidl.runtime.env import LaunchError

    types: list[type[BaseException]] = [ConfigError, UserError, LaunchError, FileNotFoundError]
    pipeline = sys.modules.get("scidl.parallel.pipeline")
    if pipeline is not None:
        types.append(pipeline.PipelineError)
    return tuple(types)


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str,
                      lineno: int, file: Any = None, line: str | None = None) -> None:
    print(f"scidl: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``scidl`` command; ``argv`` None: this process's command line, and the process
    exits when the command returns (its exit skips the garbage collector's passes)."""
    try:
        return _main(argv)
    finally:
        if argv is None:
            from scidl.runtime.teardown import freeze_for_exit

            freeze_for_exit()


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    # key=value overrides may come after options (`scidl train digits --nproc 2 a.b=1`).
    args, unknown = parser.parse_known_args(argv)
    args._argv = list(sys.argv[1:] if argv is None else argv)  # `train --cluster` re-runs it per node
    if unknown:
        if hasattr(args, "overrides") and all("=" in u and not u.startswith("-") for u in unknown):
            args.overrides = [*args.overrides, *unknown]
        else:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning
        try:
            return int(args._run(args) or 0)
        except KeyError as e:  # registries raise KeyError with a readable message
            print(f"scidl: error: {e.args[0] if e.args else e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("scidl: interrupted", file=sys.stderr)
            return 130
        except Exception as e:
            from scidl.runtime.watchdog import StallError

            if isinstance(e, StallError):  # a rank stalled: the job failed, named in one line
                print(f"scidl: error: {e}", file=sys.stderr)
                return 1
            if not isinstance(e, _user_error_types()):
                raise
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            print(f"scidl: error: {first}", file=sys.stderr)
            return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
