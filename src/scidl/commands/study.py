"""``scidl study STUDY …``: a workload's research study (more than one training run).

Each study lives in its workload's package (``scidl.workloads.<name>.study``) and exposes
``add_arguments(parser)`` and ``run(args) -> int``; it is imported only when named, so
``scidl --help`` stays fast. Bad input (an unknown study, a bad option or value) is one
line and exit status 2.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
from typing import Any, NoReturn

NAME = "study"
HELP = "run a workload's research study (`scidl study STUDY --help` for its options)"

# study name → (module, one-line description). One line per study.
STUDIES: dict[str, tuple[str, str]] = {
    "burgers": ("scidl.workloads.burgers.study",
                "budget vs error of the Burgers PINN: Adam, then L-BFGS; JSON record + plot"),
    "nbody": ("scidl.workloads.nbody.study",
              "neural Wisdom–Holman integrator: train, kepler, long, general, speed, report"),
    "cgan_per_label": ("scidl.workloads.cgan_per_label.study",
                       "per-label GANs on separate ranks vs one conditional GAN"),
}


def _epilog() -> str:
    width = max(len(n) for n in STUDIES)
    rows = [f"  {n:<{width}}  {desc}" for n, (_, desc) in STUDIES.items()]
    return "studies:\n" + "\n".join(rows) + "\n\n`scidl study STUDY --help` lists a study's options."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = _epilog()
    p.add_argument("study", nargs="?", metavar="STUDY", help=f"one of: {', '.join(STUDIES)}")
    p.add_argument("study_args", nargs=argparse.REMAINDER, metavar="...",
                   help="the study's own options")


class _StudyParser(argparse.ArgumentParser):
    """An argument parser whose errors are one-line user errors (exit 2 through ``main``)."""

    def error(self, message: str) -> NoReturn:
        from scidl.cli import UserError

        raise UserError(f"{self.prog}: {message}")


def study_parser(name: str) -> tuple[argparse.ArgumentParser, Any]:
    """The parser of study ``name`` and its module (raises UserError for an unknown name)."""
    from scidl.cli import UserError

    if name not in STUDIES:
        close = difflib.get_close_matches(name, list(STUDIES), n=2)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UserError(f"unknown study {name!r}{hint}; choices: {', '.join(STUDIES)}")
    module = importlib.import_module(STUDIES[name][0])
    parser = _StudyParser(prog=f"scidl study {name}", description=STUDIES[name][1])
    module.add_arguments(parser)
    return parser, module


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from scidl.cli import UserError

    if args.study is None:
        raise UserError(f"name a study: {', '.join(STUDIES)} (see `scidl study --help`)")
    parser, module = study_parser(args.study)
    ns = parser.parse_args(args.study_args)
    try:
        return int(module.run(ns) or 0)
    except ValidationError as err:  # a study's settings (e.g. burgers --set key=value)
        e = err.errors()[0]
        where = ".".join(str(x) for x in e["loc"]) or "settings"
        raise UserError(f"scidl study {args.study}: invalid {where!r}: {e['msg']}") from None
