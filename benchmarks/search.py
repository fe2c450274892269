"""Search strategies on real workloads: greedy vs random vs TPE, NSGA-II Pareto front, workers.

Three parts, each a section of ``benchmarks/results/search.json`` (plus PNGs under
``docs/img/search_*.png``):

``compare``  greedy, random and TPE (bayes, median pruning) at an equal trial budget on
             ``admissions`` (metric R²) and ``digits`` (MLP, accuracy): best score, parameter
             count of the best network, wall time. Greedy's "best" is its adjusted-score
             winner (what it is designed to return).
``pareto``   NSGA-II on ``digits`` with the CNN space (``--space cnn``), objectives accuracy
             and measured inference latency per sample: the Pareto front, and the fastest
             front member within 1 accuracy point of the most accurate, as a speed-up.
``workers``  the same random study (admissions) with 1 and 2 local worker processes: wall
             time for the same number of trials and worker utilisation (busy / wall).

Every trial is a real ``scidl.run`` (1 process). Budgets are small so the whole script fits
in ~10 minutes on a shared 2-core machine; numbers come from one seed and are noisy.

    python benchmarks/search.py [--parts compare pareto workers] [--trials 12]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import torch

from scidl.search.runner import describe_objective, run_search
from scidl.search.settings import SearchSettings
from scidl.search.space import load_space

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "search.json"
IMG = ROOT / "docs" / "img"

# Per-workload training budget of one trial (kept small: many trials on 2 shared cores).
BUDGET = {
    "admissions": {"train": {"epochs": 8}, "log": {"tensorboard": False}, "checkpoint": {"final": False}},
    "digits": {"train": {"epochs": 4}, "log": {"tensorboard": False}, "checkpoint": {"final": False}},
}
METRIC = {"admissions": "r2", "digits": "accuracy"}
PARETO_EPOCHS = 10  # CNNs need a few more epochs than the MLPs to separate by accuracy


def settings_for(workload: str, strategy: str, trials: int, out: Path, space: str | None = None,
                 epochs: int | None = None, **kw: Any) -> SearchSettings:
    base = {**BUDGET[workload], "train": {"epochs": epochs or BUDGET[workload]["train"]["epochs"]}}
    s = SearchSettings(
        workload=workload, strategy=strategy, trials=trials, space=load_space(workload, space),
        base=base, out=str(out), metric=METRIC[workload], heartbeat_s=5.0, **kw,
    )
    return describe_objective(s)


def brief(summary: dict[str, Any], wall: float) -> dict[str, Any]:
    b = summary.get("best") or {}
    return {"best_metric": b.get("metric"), "best_params": b.get("n_params"),
            "best_trial": b.get("number"), "best_config": b.get("params"), "wall_s": wall,
            "states": summary.get("states")}


def part_compare(work: Path, trials: int) -> dict[str, Any]:
    out: dict[str, Any] = {"trials": trials, "epochs": {k: v["train"]["epochs"] for k, v in BUDGET.items()}}
    for workload in ("admissions", "digits"):
        rows = {}
        for strategy in ("greedy", "random", "bayes"):
            d = work / f"{workload}-{strategy}"
            t0 = time.time()
            res = run_search(str(d / "study.db"), f"{workload}-{strategy}",
                             settings_for(workload, strategy, trials, d, per_depth=3), quiet=True)
            rows[strategy] = brief(res.summary, time.time() - t0)
            # the most accurate network regardless of size, for reference
            done = [t for t in res.study.trials if t.state.name == "COMPLETE"]
            top = max(done, key=lambda t: t.user_attrs["result"]["value"])
            rows[strategy]["top_metric"] = top.user_attrs["result"]["value"]
            rows[strategy]["top_params"] = top.user_attrs["result"]["n_params"]
            print(f"{workload:10s} {strategy:7s} best {METRIC[workload]} {rows[strategy]['best_metric']:.4f} "
                  f"params {rows[strategy]['best_params']:>7} | top {rows[strategy]['top_metric']:.4f} "
                  f"({rows[strategy]['top_params']}) | {rows[strategy]['wall_s']:.0f} s", flush=True)
            if strategy == "greedy":
                shutil.copy(d / "history.png", IMG / f"search_greedy_{workload}.png")
        out[workload] = rows
    return out


def part_pareto(work: Path, trials: int) -> dict[str, Any]:
    d = work / "digits-evolution"
    t0 = time.time()
    s = settings_for("digits", "evolution", trials, d, space="cnn", population=8, epochs=PARETO_EPOCHS)
    res = run_search(str(d / "study.db"), "digits-evolution", s, quiet=True)
    wall = time.time() - t0
    front = res.summary.get("pareto") or []
    best = max(front, key=lambda t: t["metric"])
    ok = [t for t in front if t["metric"] >= best["metric"] - 0.01]
    fast = min(ok, key=lambda t: t["latency_ms"])
    shutil.copy(d / "pareto.png", IMG / "search_pareto_digits.png")
    speedup = best["latency_ms"] / fast["latency_ms"]
    # Every trial (not only the front): how much slower are equally accurate networks?
    every = [{"number": t.number, "metric": t.values[0], "latency_ms": t.values[1],
              "n_params": t.user_attrs["result"]["n_params"], "params": t.params}
             for t in res.study.trials if t.state.name == "COMPLETE"]
    near = [t for t in every if t["metric"] >= best["metric"] - 0.01]
    slowest_near = max(near, key=lambda t: t["latency_ms"])
    print(f"pareto: {len(front)} points; most accurate {best['metric']:.4f} at {best['latency_ms']:.4f} ms; "
          f"fastest within 1 pt {fast['metric']:.4f} at {fast['latency_ms']:.4f} ms -> {speedup:.1f}x", flush=True)
    return {"trials": trials, "population": 8, "epochs": PARETO_EPOCHS,
            "wall_s": wall, "front": [{k: t[k] for k in ("number", "metric", "latency_ms", "n_params", "params")}
                                      for t in front],
            "most_accurate": best["number"], "fastest_within_1pt": fast["number"],
            "speedup_within_1pt": speedup, "target_met": speedup >= 5.0, "trials_all": every,
            "slowest_within_1pt": slowest_near["number"],
            "front_vs_slowest_within_1pt": slowest_near["latency_ms"] / fast["latency_ms"]}


def part_workers(work: Path, trials: int) -> dict[str, Any]:
    out: dict[str, Any] = {"trials": trials, "workload": "admissions", "strategy": "random"}
    for w in (1, 2):
        d = work / f"workers-{w}"
        t0 = time.time()
        # Both through worker processes (the 1-worker case too), so start-up costs match.
        res = run_search("journal:" + str(d / "study.log"), f"w{w}",
                         settings_for("admissions", "random", trials, d), workers=w, quiet=True,
                         spawn=True)
        wall = time.time() - t0
        out[str(w)] = {"wall_s": wall, "utilisation": res.summary.get("utilisation"),
                       "utilisation_steady": res.summary.get("utilisation_steady"),
                       "states": res.summary.get("states")}
        print(f"workers {w}: {wall:.1f} s, utilisation {res.summary.get('utilisation') or 0:.2f} "
              f"(steady {res.summary.get('utilisation_steady') or 0:.2f})", flush=True)
    out["speedup"] = out["1"]["wall_s"] / out["2"]["wall_s"]
    return out


def markdown(results: dict[str, Any]) -> str:
    """The results as the Markdown tables of docs/search.md."""
    lines: list[str] = []
    c = results.get("compare")
    if c:
        lines += [f"Equal budget: {c['trials']} trials per strategy, one seed; admissions trials train "
                  f"{c['epochs']['admissions']} epochs (metric R²), digits MLP trials {c['epochs']['digits']} "
                  "epochs (accuracy). *best* = what the strategy returns (greedy: best adjusted score); "
                  "*top* = most accurate trial of that search.", "",
                  "| workload | strategy | best metric | params of best | top metric (params) | wall (s) |",
                  "|---|---|---|---|---|---|"]
        for wl in ("admissions", "digits"):
            for st, r in c[wl].items():
                lines.append(f"| {wl} | {st} | {r['best_metric']:.4f} | {r['best_params']:,} | "
                             f"{r['top_metric']:.4f} ({r['top_params']:,}) | {r['wall_s']:.0f} |")
        lines.append("")
    p = results.get("pareto")
    if p:
        lines += [f"NSGA-II on digits (CNN space), {p['trials']} trials, population {p['population']}, "
                  f"{p['epochs']} epochs per trial. Pareto front (latency = measured inference time per "
                  "sample, batch 64, 1 thread):", "",
                  "| trial | accuracy | latency (ms/sample) | params | conv layers × channels | head |",
                  "|---|---|---|---|---|---|"]
        for t in p["front"]:
            q = t["params"]
            head = f"{q['head_width']}" if q.get("head_layers") else "none"
            lines.append(f"| {t['number']} | {t['metric']:.4f} | {t['latency_ms']:.4f} | {t['n_params']:,} | "
                         f"{q['n_conv']} × {q['channels']} (×2 per layer) | {head} |")
        lines += ["", f"Fastest front member within 1 point of the most accurate: trial "
                  f"{p['fastest_within_1pt']} vs trial {p['most_accurate']}, "
                  f"**{p['speedup_within_1pt']:.1f}× faster** (target ≥ 5×: "
                  f"{'met' if p['target_met'] else 'not met'})."]
        if "slowest_within_1pt" in p:
            lines += ["", f"Among all {len(p['trials_all'])} trials, the slowest network within 1 point of the "
                      f"most accurate (trial {p['slowest_within_1pt']}) is "
                      f"{p['front_vs_slowest_within_1pt']:.1f}× slower than the front's choice."]
        lines.append("")
    w = results.get("workers")
    if w:
        lines += [f"Same study ({w['strategy']}, {w['workload']}, {w['trials']} trials, journal storage), "
                  "worker processes started by the driver in both cases:", "",
                  "| workers | wall (s) | utilisation (from start) | utilisation (steady state) |",
                  "|---|---|---|---|"]
        for k in ("1", "2"):
            r = w[k]
            lines.append(f"| {k} | {r['wall_s']:.1f} | {r['utilisation'] or 0:.2f} | "
                         f"{r['utilisation_steady'] or 0:.2f} |")
        lines += ["", f"Speed-up 1 → 2 workers: {w['speedup']:.2f}×.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", nargs="+", default=["compare", "pareto", "workers"])
    ap.add_argument("--trials", type=int, default=12, help="compare: trials per strategy")
    ap.add_argument("--pareto-trials", type=int, default=16)
    ap.add_argument("--worker-trials", type=int, default=8)
    ap.add_argument("--markdown", action="store_true", help="print the stored results as tables")
    args = ap.parse_args()
    if args.markdown:
        print(markdown(json.loads(RESULTS.read_text())))
        return
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    IMG.mkdir(parents=True, exist_ok=True)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["meta"] = {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": sys.version.split()[0], "torch": torch.__version__, "optuna": optuna.__version__,
        "platform": platform.platform(), "cpus": os.cpu_count(), "loadavg_start": os.getloadavg(),
        "command": " ".join(["python", "benchmarks/search.py", *sys.argv[1:]]),
    }
    work = Path(tempfile.mkdtemp(prefix="scidl-bench-search-"))
    os.chdir(work)  # trial run folders and data caches stay in the temp folder
    t0 = time.time()
    try:
        # Warm-up run (imports, first process group), so the first search is not charged for it.
        import scidl

        scidl.run(scidl.load_config("admissions", extra={**BUDGET["admissions"], "train": {"epochs": 1}}))
        parts = {"compare": lambda: part_compare(work, args.trials),
                 "pareto": lambda: part_pareto(work, args.pareto_trials),
                 "workers": lambda: part_workers(work, args.worker_trials)}
        for name in args.parts:
            stamp = {"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "loadavg_start": os.getloadavg(), "command": results["meta"]["command"]}
            results[name] = {**parts[name](), "run": {**stamp, "loadavg_end": os.getloadavg()}}
    finally:
        results["meta"]["loadavg_end"] = os.getloadavg()
        results["meta"]["total_s"] = time.time() - t0
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2, default=str))
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {RESULTS} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
