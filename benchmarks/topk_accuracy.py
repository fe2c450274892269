"""Accuracy of top-k communication with DGC's pieces and with the Adam variant, vs dense.

``digits`` through ``scidl.run`` on 2 loopback processes, the same budget for every case,
several seeds: dense with SGD+momentum vs ``dgc`` (plain SGD, the strategy applies the
momentum) and plain ``topk``; dense with Adam vs ``topk_adam`` (SGD applying the
strategy's Adam update) and plain ``topk`` under Adam; and ``dgc`` with the ``rsag`` and
``oktopk`` sparse collectives (the exact sum of the selections vs its re-sparsification
to ≈ k entries). ``--nproc`` other than 2 writes a section of its own. Writes
``benchmarks/results/topk_accuracy.json``; each case's mean ± spread of the final
accuracy and its ratio to the dense case of the same optimizer family.

    python benchmarks/topk_accuracy.py [--seeds 0 1 2] [--epochs 10] [--jobs 2]
        [--nproc 2] [--cases dense_sgd dgc_1% ...]
    python benchmarks/topk_accuracy.py one --case dgc_1% --seed 0 --epochs 10   # one run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "topk_accuracy.json"

SGD = ["optim.name=sgd", "optim.lr=0.1"]
ADAM = ["optim.name=adam", "optim.lr=0.001"]
PLAIN_SGD = ["optim.name=sgd", "optim.lr=0.1", "optim.momentum=0"]
PLAIN_SGD_ADAM_LR = ["optim.name=sgd", "optim.lr=0.001", "optim.momentum=0"]

# (case, family, overrides); the first case of a family is its dense reference.
CASES: list[tuple[str, str, list[str]]] = [
    ("dense_sgd", "sgd", [*SGD, "comm.strategy=dense"]),
    ("dgc_1%", "sgd", [*PLAIN_SGD, "comm.strategy=dgc", "comm.density=0.01",
                       "comm.momentum=0.9", "comm.density_warmup_steps=10"]),
    ("dgc_1%_no_warmup", "sgd", [*PLAIN_SGD, "comm.strategy=dgc", "comm.density=0.01",
                                 "comm.momentum=0.9"]),
    ("topk_1%_sgd", "sgd", [*SGD, "comm.strategy=topk", "comm.density=0.01"]),
    ("dense_adam", "adam", [*ADAM, "comm.strategy=dense"]),
    ("topk_adam_1%", "adam", [*PLAIN_SGD_ADAM_LR, "comm.strategy=topk_adam",
                              "comm.density=0.01", "comm.adam_freeze_steps=20"]),
    ("topk_1%_adam", "adam", [*ADAM, "comm.strategy=topk", "comm.density=0.01"]),
    ("dgc_1%_rsag", "sgd", [*PLAIN_SGD, "comm.strategy=dgc", "comm.density=0.01",
                            "comm.momentum=0.9", "comm.density_warmup_steps=10",
                            "comm.sparse_collective=rsag"]),
    ("dgc_1%_oktopk", "sgd", [*PLAIN_SGD, "comm.strategy=dgc", "comm.density=0.01",
                              "comm.momentum=0.9", "comm.density_warmup_steps=10",
                              "comm.sparse_collective=oktopk"]),
    ("topk_1%_sgd_rsag", "sgd", [*SGD, "comm.strategy=topk", "comm.density=0.01",
                                 "comm.sparse_collective=rsag"]),
    ("topk_1%_sgd_oktopk", "sgd", [*SGD, "comm.strategy=topk", "comm.density=0.01",
                                   "comm.sparse_collective=oktopk"]),
]


def run_one(case: str, seed: int, epochs: int, root: str, nproc: int = 2) -> None:
    """One training run under ``root`` (its ``summary.json`` holds the result)."""
    import scidl
    from scidl.config import load_config

    scidl.run(load_config("digits", overrides=_overrides(case, seed, epochs, root, nproc)))


def _overrides(case: str, seed: int, epochs: int, root: str, nproc: int = 2) -> list[str]:
    over = dict((c, o) for c, _, o in CASES)[case]
    return [f"dist.nproc={nproc}", f"log.root={root}", "log.tensorboard=false",
            "log.progress=false", f"train.epochs={epochs}", f"train.seed={seed}", *over]


def _section(epochs: int, nproc: int) -> str:
    """Results-file section of a budget and process count."""
    return f"epochs_{epochs}" if nproc == 2 else f"epochs_{epochs}_p{nproc}"


def _result(case: str, seed: int, epochs: int, root: Path) -> dict[str, Any] | None:
    """The row of a finished run under ``root`` (None: no finished run there)."""
    done = sorted(root.glob("digits/*/summary.json"))
    if not done:
        return None
    s = json.loads(done[-1].read_text())
    comm = s.get("comm") or {}
    return {"case": case, "seed": seed, "value": s.get("headline_value"),
            "headline": s["headline"], "steps": s.get("steps"),
            "bytes_per_step": comm.get("bytes_sent_per_step"), "wall_s": s.get("wall_s"),
            "overrides": _overrides(case, seed, epochs, "")[4:]}


def _spawn(case: str, seed: int, epochs: int, root: str, nproc: int = 2) -> dict[str, Any]:
    """Run one case in a fresh interpreter (output to a log file: the launcher's helper
    processes may keep a pipe open after the run) unless its run folder has a result."""
    where = Path(root) / f"{case}-s{seed}-e{epochs}" if nproc == 2 else \
        Path(root) / f"{case}-s{seed}-e{epochs}-p{nproc}"
    row = _result(case, seed, epochs, where)
    if row is None:
        where.mkdir(parents=True, exist_ok=True)
        with open(where / "log.txt", "w") as log:
            subprocess.run([sys.executable, __file__, "one", "--case", case, "--seed",
                            str(seed), "--epochs", str(epochs), "--root", str(where),
                            "--nproc", str(nproc)],
                           stdout=log, stderr=subprocess.STDOUT, check=False)
        row = _result(case, seed, epochs, where)
    return row or {"case": case, "seed": seed, "error": f"no result in {where}"}


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean, min, max of the final metric per case, and the ratio of means to the dense
    case of the same family."""
    fam = {c: f for c, f, _ in CASES}
    out = []
    by_case: dict[str, list[float]] = {}
    for r in rows:
        if r.get("value") is not None:
            by_case.setdefault(r["case"], []).append(r["value"])
    dense = {fam[c]: statistics.mean(v) for c, v in by_case.items()
             if c.startswith("dense_")}
    for case, _, _ in CASES:
        vals = by_case.get(case)
        if not vals:
            continue
        mean = statistics.mean(vals)
        bps = [r["bytes_per_step"] for r in rows if r["case"] == case and r.get("bytes_per_step")]
        out.append({"case": case, "family": fam[case], "n": len(vals), "mean": mean,
                    "min": min(vals), "max": max(vals),
                    "vs_dense": mean / dense[fam[case]] if fam[case] in dense else None,
                    "bytes_per_step": statistics.mean(bps) if bps else None})
    return out


def _save(section: str, data: dict[str, Any]) -> None:
    """Write one budget's section of the results file, keeping the others."""
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    old[section] = data
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(old, indent=1, sort_keys=True) + "\n")


def markdown(results: dict[str, Any]) -> str:
    """The docs tables, one per budget (sections ``epochs_N`` of the results file)."""
    keys = sorted(results, key=lambda k: (int(k.split("_")[1]), k))
    return "\n\n".join(_table(results[k]) for k in keys)


def _table(data: dict[str, Any]) -> str:
    """Final accuracy per case (mean and range over seeds), vs dense."""
    steps = next((r["steps"] for r in data["rows"] if r.get("steps")), None)
    out = [f"#### {data['epochs']} epochs ({steps} steps)\n",
           "| case | optimizer family | seeds | accuracy mean | min | max | mean ÷ dense "
           "| bytes/step/rank |", "|---|---|---|---|---|---|---|---|"]
    for s in data["summary"]:
        vs = "—" if s["vs_dense"] is None else f"{s['vs_dense']:.3f}"
        b = "—" if not s["bytes_per_step"] else f"{s['bytes_per_step']:,.0f}"
        out.append(f"| {s['case']} | {s['family']} | {s['n']} | {s['mean']:.4f} "
                   f"| {s['min']:.4f} | {s['max']:.4f} | {vs} | {b} |")
    nproc = "" if data["nproc"] == 2 else f" --nproc {data['nproc']}"
    cases = "" if not data.get("cases") else " --cases " + " ".join(data["cases"])
    if data.get("cases") and list(data["seeds"]) != [0, 1, 2]:
        cases += " --seeds " + " ".join(map(str, data["seeds"]))
    load = "" if not data.get("loadavg") else \
        f" Load average at the start: {data['loadavg'][0]:.1f}."
    out.append(f"\n`digits`, {data['nproc']} processes (loopback), {data['epochs']} epochs, "
               f"seeds {', '.join(map(str, data['seeds']))}. `python "
               f"benchmarks/topk_accuracy.py --epochs {data['epochs']}{nproc}{cases}`.{load}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", nargs="?", default="all", choices=["all", "one"])
    ap.add_argument("--case", default="dense_sgd")
    ap.add_argument("--cases", nargs="*", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=2, help="runs at once (2 processes each)")
    ap.add_argument("--root", default=None, help="run folder (default: a temp dir)")
    ap.add_argument("--nproc", type=int, default=2, help="processes per run")
    args = ap.parse_args(argv)
    root = args.root or tempfile.mkdtemp(prefix="scidl-topk-acc-")
    if args.mode == "one":
        run_one(args.case, args.seed, args.epochs, root, args.nproc)
        return 0
    cases = [c for c, _, _ in CASES if not args.cases or c in args.cases]
    first = [c for c in cases if not c.startswith("topk_1%")]  # the references run last
    jobs = [(c, s) for group in (first, [c for c in cases if c not in first])
            for s in args.seeds for c in group]
    rows: list[dict[str, Any]] = []
    t0 = time.time()
    load = list(os.getloadavg())
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for r in pool.map(lambda j: _spawn(j[0], j[1], args.epochs, root, args.nproc), jobs):
            rows.append(r)
            print(json.dumps({k: r.get(k) for k in ("case", "seed", "value", "steps",
                                                    "bytes_per_step", "wall_s", "error")}),
                  flush=True)
            data = {"workload": "digits", "nproc": args.nproc, "epochs": args.epochs,
                    "seeds": args.seeds, "rows": rows, "summary": summarize(rows),
                    "wall_s": time.time() - t0, "loadavg": load,
                    "cases": args.cases or None}
            _save(_section(args.epochs, args.nproc), data)
    for s in summarize(rows):
        print(f"{s['case']:14s} {s['mean']:.4f} [{s['min']:.4f}, {s['max']:.4f}] "
              f"vs dense {s['vs_dense'] or float('nan'):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
