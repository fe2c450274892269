"""Command-line conventions shared by every subcommand (see docs/cli.md).

* :class:`HelpFormatter` ends each option's help with its default (``none`` when unset;
  help text that names its default itself is left alone) and, for options whose
  values come from a registry, its choices. Both are looked up when ``--help`` is
  printed, never when the CLI starts: listing a registry's names may import it.
* :func:`option` adds an option with the conventions' extras: ``config_key`` (the run
  config key it sets; its default is read from :class:`scidl.config.RunConfig`),
  ``choices_from`` (``"module:attr"`` of a :class:`scidl.registry.Registry` or of a
  function returning names) and ``aliases`` (old spellings that still parse to the same
  value but are not listed in ``--help``).
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["HelpFormatter", "add_alias", "config_default", "lazy_choices", "option"]


def config_default(key: str) -> Any:
    """The built-in default of run-config key ``key`` (``"train.max_steps"``)."""
    from scidl.config import RunConfig

    value: Any = RunConfig.model_construct().model_dump(mode="json")
    for part in key.split("."):
        value = value[part]
    return value


def lazy_choices(action: argparse.Action) -> list[str] | None:
    """The registry-backed choices of ``action`` (None: it has none)."""
    source = getattr(action, "choices_from", None)
    if source is None:
        return None
    from scidl.registry import load_path

    obj = load_path(source)
    return list(obj.names() if hasattr(obj, "names") else obj())


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def default_text(action: argparse.Action) -> str | None:
    """What ``--help`` says the default of ``action`` is (None: nothing to say)."""
    if not action.option_strings or action.nargs == 0:  # positionals, on/off flags
        return None
    key = getattr(action, "config_key", None)
    if key is not None:
        return f"the config's {key}, built in: {_show(config_default(key))}"
    if action.default is argparse.SUPPRESS or action.required:
        return None
    return _show(action.default)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help that lists each option's default and registry-backed choices."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if text == argparse.SUPPRESS:
            return text
        extra = []
        choices = lazy_choices(action)
        if choices and "choices" not in text:
            extra.append("choices: " + ", ".join(choices))
        default = default_text(action)
        if default is not None and "default" not in text:
            extra.append(f"default: {default}")
        if extra:
            text = f"{text} ({'; '.join(extra).replace('%', '%%')})".strip()
        return text


def add_alias(p: argparse.ArgumentParser, action: argparse.Action, *names: str) -> None:
    """Old spellings ``names`` of ``action``: they set the same value, hidden from --help."""
    kw: dict[str, Any] = {"dest": action.dest, "help": argparse.SUPPRESS,
                          "default": argparse.SUPPRESS}
    if action.nargs == 0:
        kw.update(action="store_const", const=action.const)
    else:
        kw.update(type=action.type, metavar=action.metavar, choices=action.choices,
                  nargs=action.nargs)
    p.add_argument(*names, **kw)


def option(p: Any, *names: str, config_key: str | None = None,
           choices_from: str | None = None, aliases: tuple[str, ...] = (),
           **kwargs: Any) -> argparse.Action:
    """``p.add_argument(*names, **kwargs)`` with the conventions' extras (module doc)."""
    action = p.add_argument(*names, **kwargs)
    action.config_key = config_key
    action.choices_from = choices_from
    if aliases:
        add_alias(p, action, *aliases)
    return action
