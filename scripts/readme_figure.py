"""Draw the README's headline figure from a results file.

    python scripts/readme_figure.py      # benchmarks/results/scaling_published.json -> docs/img/readme_headline.png

Published data-parallel scaling efficiencies (Horovod, Goyal et al., Summit, Stampede2...)
next to what SciDL's calibrated α-β-γ cost model predicts for the same model, machine and
process count. One row per published result; where the results file holds a prediction
from a measured compute time it is used, otherwise the one from FLOP counts.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "scaling_published.json"
OUT = ROOT / "docs" / "img" / "readme_headline.png"


def headline_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per published result (source, model, ranks, weak/strong): the
    measured-compute prediction where there is one."""
    chosen: dict[tuple[str, str, int, str], dict[str, Any]] = {}
    for r in data["rows"]:
        key = (r["source"], r["model"], r["ranks"], r.get("scaling", ""))
        if key not in chosen or r.get("compute_basis") == "measured":
            chosen[key] = r
    return sorted(chosen.values(), key=lambda r: r["ranks"])


def _label(r: dict[str, Any]) -> str:
    model = textwrap.shorten(r["model"], width=22, placeholder="…")
    return f"{model}, {r['ranks']:,} ranks\n{r['source'].split(' (')[0]}"


def headline_figure(rows: list[dict[str, Any]], caption: str) -> Any:
    """Dumbbell chart: reported vs predicted efficiency per published result."""
    from scidl.runtime.plotting import add_caption, new_figure

    fig = new_figure((8.4, 0.62 * len(rows) + 1.6))
    ax = fig.subplots()
    ys = list(range(len(rows)))
    for y, r in zip(ys, rows, strict=True):
        ax.plot([r["reported"], r["predicted"]], [y, y], color="0.75", lw=2, zorder=1)
    ax.scatter([r["reported"] for r in rows], ys, s=60, color="C0", zorder=2,
               label="reported in the paper")
    ax.scatter([r["predicted"] for r in rows], ys, s=60, color="C3", marker="D", zorder=2,
               label="predicted by SciDL's cost model")
    ax.set_yticks(ys, [_label(r) for r in rows], fontsize=7.5)
    ax.invert_yaxis()
    ax.set_xlim(0.5, 1.02)
    ax.set_xlabel("data-parallel scaling efficiency")
    ax.set_title("Published scaling results vs SciDL's α-β-γ cost model", fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    add_caption(fig, caption)
    fig.subplots_adjust(left=0.3, right=0.97, top=0.93, bottom=0.14)
    return fig


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    from scidl.runtime.files import save_figure

    data = json.loads(args.results.read_text())
    rows = headline_rows(data)
    from scidl.runtime.plotting import provenance

    caption = (f"from {args.results.relative_to(ROOT) if args.results.is_relative_to(ROOT) else args.results}"
               " · scripts/readme_figure.py · compute time measured where available, "
               f"else from FLOP counts · SciDL {provenance()['scidl']}")
    save_figure(headline_figure(rows, caption), args.out, dpi=130)
    print(f"{args.out} ({len(rows)} published results)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
