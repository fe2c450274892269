"""``scidl config``: print the fully resolved run config of a workload as YAML.

Each key is followed by its description as a YAML comment (from the pydantic fields of
the run config and of the workload's ``Config``), so the printed file documents itself
and still loads back as a run config (``scidl train --config``).
"""

from __future__ import annotations

import argparse
import math
import typing
from typing import Any

import yaml
from pydantic import BaseModel

NAME = "config"
HELP = "print the resolved default config of a workload as YAML (with overrides applied)"
COMMENT_COLUMN = 40  # comments start here unless the key and value are longer


def add_arguments(p: argparse.ArgumentParser) -> None:
    from scidl.commands.options import option

    option(p, "workload", choices_from="scidl.workloads.registry:WORKLOADS", help="workload name, or your task factory as module:attr")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--config", "-c", help="YAML file to start from (default: the workload's defaults)")
    p.add_argument("--no-comments", action="store_true",
                   help="plain YAML without the descriptions")


def _section_model(field: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (also inside ``X | None``), else None."""
    ann = getattr(field, "annotation", None)
    for t in (ann, *typing.get_args(ann)):
        if isinstance(t, type) and issubclass(t, BaseModel):
            return t
    return None


def _flow(value: Any) -> str:
    """``value`` as one line of YAML (a scalar, or a list/mapping in flow style)."""
    return yaml.safe_dump([value], default_flow_style=True, width=math.inf).strip()[1:-1]


def _with_comment(text: str, comment: str | None) -> str:
    if not comment:
        return text
    comment = " ".join(comment.split())
    return f"{text:<{COMMENT_COLUMN}} # {comment}" if len(text) < COMMENT_COLUMN else f"{text}  # {comment}"


def _doc_line(model: type[BaseModel] | None) -> str | None:
    doc = (model.__doc__ or "").strip() if model is not None else ""
    return doc.splitlines()[0] if doc else None


def commented_yaml(data: dict[str, Any], model: type[BaseModel] | None,
                   sections: dict[str, type[BaseModel]] | None = None, indent: int = 0) -> str:
    """``data`` (a config dumped as JSON-like values) as block YAML with each key's field
    description of ``model`` as a comment; ``sections`` names the model of a top-level
    key whose field does not say it (``task``: the workload's ``Config``)."""
    lines = []
    pad = "  " * indent
    fields = model.model_fields if model is not None else {}
    for key, value in data.items():
        field = fields.get(key)
        desc = field.description if field is not None else None
        sub = (sections or {}).get(key) or _section_model(field)
        if isinstance(value, dict) and value:
            lines.append(_with_comment(f"{pad}{key}:", desc or _doc_line(sub)))
            lines.append(commented_yaml(value, sub, None, indent + 1).rstrip("\n"))
        else:
            lines.append(_with_comment(f"{pad}{_flow(key)}: {_flow(value)}", desc))
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    from scidl.config import RunConfig, load_config

    cfg = load_config(args.workload, args.config, args.overrides)
    if args.no_comments:
        print(cfg.to_yaml(), end="")
        return 0
    sections: dict[str, type[BaseModel]] = {}
    try:
        from scidl.workloads import get_workload

        sections["task"] = get_workload(cfg.workload).Config
    except KeyError:  # a task without a registered workload: its settings, uncommented
        pass
    print(commented_yaml(cfg.to_dict(), RunConfig, sections), end="")
    return 0
