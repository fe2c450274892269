"""One command-line convention for every subcommand (docs/cli.md).

Covers: every option's --help states its default (registry-backed options also list their
choices); old spellings (--steps, --run-dir, search's --seed) parse to the same value as
the names they became and are not listed; docs/cli.md names every option; `scidl config`
prints each key's description as a comment and the output loads back as the same config.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import yaml

from scidl.cli import build_parser, main
from scidl.commands.options import HelpFormatter

ROOT = Path(__file__).resolve().parents[2]


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


SUBPARSERS = _subparsers()


def _value_options(p: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in p._actions if a.option_strings and a.nargs != 0
            and a.help != argparse.SUPPRESS]


def _rendered(p: argparse.ArgumentParser, action: argparse.Action) -> str:
    return p._get_formatter()._expand_help(action)


@pytest.mark.parametrize("name", sorted(SUBPARSERS))
def test_help_states_every_default(name):
    p = SUBPARSERS[name]
    assert p.formatter_class is HelpFormatter
    for action in _value_options(p):
        text = _rendered(p, action)
        if action.required:
            continue
        assert "default" in text, f"scidl {name} {action.option_strings[0]}: {text!r}"
        shown = action.default not in (None, argparse.SUPPRESS) and not getattr(
            action, "config_key", None) and "default:" in text.split("(")[-1]
        if shown:  # the default the formatter adds is the parser's own
            assert str(action.default) in text, (name, action.option_strings, text)


def test_registry_choices_listed_in_help():
    from scidl.comm.registry import STRATEGIES
    from scidl.optim.registry import OPTIMIZERS
    from scidl.workloads.registry import WORKLOADS

    text = " ".join(SUBPARSERS["train"].format_help().split())
    for names in (STRATEGIES.names(), OPTIMIZERS.names(), WORKLOADS.names()):
        assert ", ".join(names) in text
    assert "built in: dense" in text and "built in: adam" in text
    search = " ".join(SUBPARSERS["search"].format_help().split())
    assert "bayes, evolution, greedy, random" in search


ALIASES = [  # (argv with the old spelling, argv with the name it became)
    (["train", "digits", "--steps", "7"], ["train", "digits", "--max-steps", "7"]),
    (["train", "digits", "--run-dir", "r"], ["train", "digits", "--out", "r"]),
    (["scale", "digits", "--steps", "9"], ["scale", "digits", "--max-steps", "9"]),
    (["search", "digits", "--seed", "3"], ["search", "digits", "--sampler-seed", "3"]),
]


@pytest.mark.parametrize("old,new", ALIASES, ids=lambda a: " ".join(a))
def test_old_spellings_parse_to_the_same_value(old, new):
    parser = build_parser()
    a, b = parser.parse_args(old), parser.parse_args(new)
    assert vars(a) == vars(b)


def test_old_spellings_hidden_and_defaults_kept():
    parser = build_parser()
    assert parser.parse_args(["scale", "digits"]).max_steps == 30
    assert parser.parse_args(["search", "digits"]).sampler_seed == 0
    assert parser.parse_args(["train", "digits"]).run_dir is None
    for name, flag in [("train", "--steps"), ("train", "--run-dir"), ("scale", "--steps"),
                       ("search", "--seed")]:
        assert not re.search(rf"(?<![\w-]){flag}\b", SUBPARSERS[name].format_help()), (name, flag)


def test_docs_name_every_option():
    text = (ROOT / "docs" / "cli.md").read_text()
    for name, p in SUBPARSERS.items():
        assert f"`scidl {name}`" in text, name
        for action in p._actions:
            if action.option_strings and action.help != argparse.SUPPRESS:
                flag = max(action.option_strings, key=len)
                if flag != "--help":
                    assert f"`{flag}" in text, f"docs/cli.md lacks scidl {name} {flag}"


def test_config_prints_descriptions_and_loads_back(tmp_path, capsys):
    from scidl.config import load_config

    assert main(["config", "burgers", "train.max_steps=12"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^  nu: \S+ +# viscosity$", out, re.M)  # the workload's own field
    assert re.search(r"^  max_steps: 12 +# optimizer steps", out, re.M)
    assert re.search(r"^dist: +# Processes and backend", out, re.M)
    expected = load_config("burgers", None, ["train.max_steps=12"]).to_dict()
    assert yaml.safe_load(out) == expected
    path = tmp_path / "printed.yaml"
    path.write_text(out)
    assert load_config(None, path).to_dict() == expected
