"""Draw the docs' pictures of trained runs: train each workload briefly and copy the
pictures its run folder gets (`pictures/`, the best model) into docs/img.

    python scripts/workload_pictures.py                       # burgers, weather_seg
    python scripts/workload_pictures.py burgers --steps 300   # one workload, another budget

The runs are short (one process, the step budgets in STEPS), so the pictures show the
layout and what a partly trained model looks like, not the accuracy of a full run; the
docs' captions say which budget drew them. Each picture lands in docs/img as
``run_<picture name>`` (e.g. ``run_burgers_solution.png``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "img"
# steps of the short run behind each workload's docs picture (quoted in its caption)
STEPS = {"burgers": 500, "weather_seg": 60, "nbody": 300}
DEFAULT = ["burgers", "weather_seg"]


def draw(workload: str, steps: int, out: Path, overrides: Sequence[str] = ()) -> list[Path]:
    """Train ``workload`` for ``steps`` steps on one process in a temporary folder (with
    ``overrides``, key=value) and copy its run pictures into ``out`` as ``run_<name>``;
    returns the copies."""
    from scidl.config import load_config
    from scidl.train.api import run

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(workload, overrides=[
            f"log.root={tmp}", f"train.max_steps={steps}", "dist.nproc=1",
            "log.tensorboard=false", "log.progress=false", "checkpoint.every_steps=0",
            *overrides])
        result = run(cfg)
        pictures = sorted((result.run_dir / "pictures").glob("*.png"))
        if not pictures:
            raise SystemExit(f"{workload}: the run drew no pictures")
        out.mkdir(parents=True, exist_ok=True)
        copies = []
        for p in pictures:
            dest = out / f"run_{p.name}"
            shutil.copyfile(p, dest)
            copies.append(dest)
        return copies


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workloads", nargs="*", default=DEFAULT, choices=sorted(STEPS),
                    help=f"workloads to draw (default: {' '.join(DEFAULT)})")
    ap.add_argument("--steps", type=int, default=None,
                    help="step budget for every workload named (default: STEPS per workload)")
    ap.add_argument("--out", type=Path, default=OUT, help="where the pictures go")
    args = ap.parse_args(argv)
    for w in args.workloads:
        for p in draw(w, args.steps or STEPS[w], args.out):
            print(f"{w}: {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
