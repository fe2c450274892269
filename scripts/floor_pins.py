"""Pin every non-torch dependency of SciDL at its declared floor, for ``make test-floor``.

Reads ``[project] dependencies`` and the ``dev`` extra from pyproject.toml and prints one
``name==floor`` line per ``name>=floor`` requirement (torch is left out: it comes from
constraints.txt, the build available on these machines). A requirement without a ``>=``
floor is an error: every dependency must declare the oldest version SciDL is tested with.

    python scripts/floor_pins.py > floor.txt   # then: pip install -r floor.txt
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

SKIP = {"torch"}
_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*>=\s*([0-9][0-9A-Za-z.]*)\s*$")


def floor_pin(requirement: str) -> tuple[str, str]:
    """``"optuna>=4.0"`` -> ``("optuna", "optuna==4.0")``; ValueError without a ``>=`` floor."""
    m = _REQ.match(requirement.split(";")[0])
    if m is None:
        raise ValueError(f"{requirement!r}: no '>=' floor to pin")
    name, extras, version = m.group(1), m.group(2) or "", m.group(3)
    return name.lower(), f"{name}{extras}=={version}"


def floor_pins(pyproject: dict, extras: tuple[str, ...] = ("dev",)) -> list[str]:
    """The ``==`` pins of the dependencies and the named extras (torch left out), one
    per package, in declaration order."""
    project = pyproject["project"]
    reqs = list(project.get("dependencies", []))
    for extra in extras:
        reqs += project.get("optional-dependencies", {}).get(extra, [])
    pins: dict[str, str] = {}
    for req in reqs:
        name, pin = floor_pin(req)
        if name not in SKIP:
            pins.setdefault(name, pin)
    return list(pins.values())


def main(argv: list[str]) -> int:
    path = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[1] / "pyproject.toml"
    with path.open("rb") as f:
        print("\n".join(floor_pins(tomllib.load(f))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
