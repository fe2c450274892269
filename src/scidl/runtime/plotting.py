"""The shared look of SciDL's pictures: human units on the axes and a provenance caption.

Every plot SciDL writes (scaling, prediction, collectives, search, training curves) goes
through these helpers, so a figure dropped into a talk reads on its own:

- :func:`format_si` / :func:`si_scale` turn raw SI values into human units chosen from the
  data (``25 µs`` rather than ``0.000025 s``; ``1.2 GB/s``; ``64 KiB``);
- :func:`si_axis` labels a logarithmic axis tick by tick in such units;
- :func:`provenance` / :func:`caption_text` / :func:`add_caption` name the machine (host,
  CPU count), the torch and SciDL versions and the date in a footer.

Figures are ``matplotlib.figure.Figure`` objects built without pyplot (no backend switch,
no global state); :func:`new_figure` makes one and :func:`finish` lays it out and saves it.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from scidl.runtime.files import save_figure

__all__ = [
    "add_caption",
    "caption_text",
    "finish",
    "format_si",
    "integer_ticks",
    "new_figure",
    "provenance",
    "si_axis",
    "si_scale",
]

_DECIMAL = [(1e-9, "n"), (1e-6, "µ"), (1e-3, "m"), (1.0, ""), (1e3, "k"), (1e6, "M"),
            (1e9, "G"), (1e12, "T"), (1e15, "P")]
_BINARY = [(1.0, ""), (2.0**10, "Ki"), (2.0**20, "Mi"), (2.0**30, "Gi"), (2.0**40, "Ti")]


def _table(unit: str, binary: bool) -> list[tuple[float, str]]:
    """Prefixes for ``unit``: binary ones for bytes when asked; none above 1 for seconds."""
    if binary:
        return _BINARY
    return [e for e in _DECIMAL if e[0] <= 1.0] if unit == "s" else _DECIMAL


def _prefix_for(magnitude: float, table: list[tuple[float, str]]) -> tuple[float, str]:
    """The largest prefix whose factor is at most ``magnitude`` (the smallest one below it)."""
    if not math.isfinite(magnitude) or magnitude <= 0:
        return 1.0, ""
    best = table[0]
    for factor, prefix in table:
        if magnitude >= factor * (1 - 1e-9):
            best = (factor, prefix)
    return best


def format_si(value: float, unit: str, digits: int = 3, binary: bool = False) -> str:
    """``value`` (in ``unit``) with the SI prefix that puts it in [1, 1000).

    ``format_si(2.5e-5, "s") == "25 µs"``, ``format_si(1.234e9, "B/s") == "1.23 GB/s"``,
    ``format_si(65536, "B", binary=True) == "64 KiB"``. ``digits`` significant digits,
    trailing zeros dropped; 0, NaN and ±inf print without a prefix; seconds take no
    prefix above 1 (``1500 s``, not ``1.5 ks``).
    """
    if value == 0 or not math.isfinite(value):
        return f"{value:g} {unit}".strip()
    table = _table(unit, binary)
    factor, prefix = _prefix_for(abs(value), table)
    scaled = value / factor
    text = f"{scaled:.{digits}g}"
    if "e" in text:  # e.g. 1e+03 after rounding 999.9: one prefix up
        nxt = [f for f, _ in table if f > factor]
        if nxt:
            return format_si(math.copysign(nxt[0], value), unit, digits, binary)
        text = f"{scaled:.0f}"
    return f"{text} {prefix}{unit}"


def si_scale(values: Iterable[float], unit: str, binary: bool = False) -> tuple[float, str]:
    """``(factor, prefixed unit)`` for one linear axis: divide the data by ``factor``.

    The prefix is chosen from the largest finite magnitude, so every tick shares one
    unit: ``si_scale([2e-5, 3e-3], "s") == (1e-3, "ms")``.
    """
    mags = [abs(float(v)) for v in values if v is not None and math.isfinite(float(v)) and v != 0]
    factor, prefix = _prefix_for(max(mags) if mags else 1.0, _table(unit, binary))
    return factor, f"{prefix}{unit}"


def si_axis(axis: Any, unit: str, binary: bool = False, digits: int = 3) -> None:
    """Label every tick of a matplotlib ``axis`` (``ax.xaxis``/``ax.yaxis``) with :func:`format_si`.

    For logarithmic axes, whose ticks span decades (``10 µs``, ``1 ms``, ``100 ms``).
    """
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _pos: format_si(v, unit, digits, binary)))
    axis.set_minor_formatter(NullFormatter())


def integer_ticks(axis: Any) -> None:
    """Only whole-number ticks on ``axis`` (trial numbers, process counts)."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "?"


def provenance() -> dict[str, Any]:
    """Where and with what this process runs: host, CPU count, torch and SciDL versions, date.

    Stored in results files (``"provenance"``) by the code that measures, and read back by
    the code that draws, so a figure names the machine that produced its numbers.
    """
    return {
        "host": platform.node() or "unknown host",
        "cpus": os.cpu_count() or 1,
        "torch": _version("torch"),
        "scidl": _version("scidl"),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
    }


def caption_text(prov: Mapping[str, Any] | None = None, verb: str = "measured") -> str:
    """One footer line: ``measured on HOST (N CPUs) · torch X · SciDL Y · DATE``.

    ``prov`` is a results file's ``provenance`` (or a partial one: ``host``/``created``
    from older files); missing fields come from this process, and when the host was not
    recorded the line says the figure was only *rendered* here.
    """
    here = provenance()
    prov = dict(prov or {})
    if prov.get("host"):
        cpus = f" ({prov['cpus']} CPUs)" if prov.get("cpus") else ""
        where = f"{verb} on {prov['host']}{cpus}"
    else:
        where = f"rendered on {here['host']} ({here['cpus']} CPUs)"
    date = prov.get("date") or str(prov.get("created") or "")[:10] or here["date"]
    torch, scidl = prov.get("torch") or here["torch"], prov.get("scidl") or here["scidl"]
    return f"{where} · torch {torch} · SciDL {scidl} · {date}"


def add_caption(fig: Any, text: str) -> None:
    """A small grey footer line at the bottom left of ``fig`` (see :func:`finish`)."""
    fig.text(0.01, 0.008, text, fontsize=6.5, color="0.35", ha="left", va="bottom")


def new_figure(figsize: tuple[float, float] = (6.4, 4.2)) -> Any:
    """A ``matplotlib.figure.Figure`` of its own: no pyplot, no backend switch, no global state."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def finish(fig: Any, path: Path | str, caption: str | None = None) -> Path:
    """Lay out ``fig`` (leaving room for the ``caption`` footer), save it as PNG, return the path."""
    if caption:
        add_caption(fig, caption)
        fig.tight_layout(rect=(0, 0.035, 1, 1))
    else:
        fig.tight_layout()
    return save_figure(fig, Path(path))
