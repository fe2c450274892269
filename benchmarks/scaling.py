"""Cost-model validation tables for docs/scaling.md.

    python benchmarks/scaling.py published [--csv ../shared/reference/published_scaling.csv]
    python benchmarks/scaling.py local SCALE_DIR [SCALE_DIR ...]

``published`` predicts every row of the published-scaling CSV and of
``benchmarks/data/published_more.csv`` (one assumption set per hardware system, see
``scidl.scaling.published``; each system's straggler spread fitted on one row), prints a markdown table and writes
``benchmarks/results/scaling_published.json``; it also prints the sensitivity of the
Summit row to its two unknowns and the VGG-16 row with compute from FLOPs instead of a
measured single-GPU rate. ``local`` tabulates measured vs predicted points of
``scidl scale ... --hardware`` runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scidl.scaling.costmodel import Compression
from scidl.scaling.hardware import load_hardware
from scidl.scaling.predict import StepProfile, predict_curve
from scidl.scaling.published import validate

RESULTS = Path(__file__).parent / "results"


MORE = Path(__file__).parent / "data" / "published_more.csv"


def published(csv: Path, more: Path = MORE) -> None:
    rows = validate(csv, more=more)
    print("| source | model | ranks | scaling | role | compute s | comm s | exposed s "
          "| straggler s | predicted E | reported E | Δ points |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['source'].split('(')[0].strip()} | {r['model']} | {r['ranks']} | "
              f"{r['scaling']} | {r['role']} | "
              f"{r['compute_s']:.3f} | {r['comm_s']:.3f} | {r['exposed_comm_s']:.3f} | "
              f"{r['straggler_s']:.3f} | "
              f"{r['predicted']:.3f} | {r['reported_text']} | {r['delta_points']:+.1f} |")
    flops_rows = validate(csv, use_measured=False, more=more)
    print("\nCompute from FLOPs x sustained fraction instead of measured single-GPU rates:")
    for a, b in zip(rows, flops_rows, strict=True):
        if a["compute_basis"] == "measured":
            print(f"  {a['model']}: compute {b['compute_s']:.3f} s -> predicted "
                  f"{b['predicted']:.3f} (reported {a['reported']:.2f})")
    summit_sensitivity()
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "scaling_published.json"
    out.write_text(json.dumps({"csv": str(csv), "more": str(more.relative_to(Path(__file__).parent.parent)),
                               "rows": rows, "flops_basis": flops_rows},
                              indent=2, default=str))
    print(f"\nwrote {out}")


def summit_sensitivity() -> None:
    hw = load_hardware("summit")
    print("\nSummit, 27,600 GPUs, fp16 gradients: predicted E by parameters x compute/step")
    computes = (0.1, 0.25, 0.5, 1.0)
    print("| params | " + " | ".join(f"{c} s" for c in computes) + " |")
    print("|---|" + "---|" * len(computes))
    for params in (50e6, 100e6, 200e6, 500e6):
        effs = []
        for c in computes:
            prof = StepProfile(compute_s=c, grad_bytes=params * 4)
            pts = predict_curve(prof, hw, [1, 27600], comp=Compression("fp16", value_bytes=2))
            effs.append(pts[1]["efficiency"])
        print(f"| {params / 1e6:.0f} M | " + " | ".join(f"{e:.3f}" for e in effs) + " |")


def local(dirs: list[Path]) -> None:
    print("| workload | mode | p | measured step ms | predicted step ms | error | "
          "measured E | predicted E |")
    print("|---|---|---|---|---|---|---|---|")
    for d in dirs:
        data = json.loads((d / "scaling.json").read_text())
        for q in data["points"]:
            if "predicted_step_s" not in q:
                continue
            print(f"| {data['workload']} | {data['mode']} | {q['ranks']} | "
                  f"{q['step_s'] * 1e3:.1f} | {q['predicted_step_s'] * 1e3:.1f} | "
                  f"{q['step_error']:+.0%} | {q['efficiency']:.3f} | "
                  f"{q['predicted_efficiency']:.3f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("published")
    p.add_argument("--csv", type=Path,
                   default=Path(__file__).resolve().parents[2] / "shared" / "reference"
                   / "published_scaling.csv")
    loc = sub.add_parser("local")
    loc.add_argument("dirs", nargs="+", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "published":
        if not args.csv.is_file():
            print(f"CSV not found: {args.csv} (pass --csv)", file=sys.stderr)
            return 2
        published(args.csv)
    else:
        local(args.dirs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
