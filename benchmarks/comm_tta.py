"""Time to accuracy of the communication strategies on a virtual cluster.

Every run is ``scidl train MODEL --cluster tta --ranks-per-node 1`` on 4 virtual nodes
(one rank each) joined by shaped links (``scidl cluster up --name tta --nodes 4 --link
RATE``), one run per (model, link, optimizer, strategy, seed), with the same step budget
for every strategy. From each run: the validation curve (an evaluation every
``eval_every`` steps), the training time up to each evaluation (the sum of rank 0's
``step_time_s`` over the steps before it: start-up and evaluation excluded), the bytes
sent per step per rank (from ``comm.json``; ``auto``'s one-off link probe excluded) and
the final metric. The target of a (model, link, optimizer, seed) is the final validation
metric of its ``dense`` run, within 0.5% relative; a strategy's time to accuracy is the
training time to its first evaluation that reaches the target ("—" when it never does).

Models: ``digits`` (ResNet-20, 0.27 M parameters), ``weather`` (the weather-segmentation
U-Net at base width 32) and ``lm`` (``benchmarks/tta_lm.py``: a 5.8 M-parameter
decoder-only transformer on a synthetic order-2 Markov language). Strategies are
``comm.strategy`` names, optionally with settings (``topk:density=0.001``); by default
dense, fp16, powersgd, topk, auto and every strategy registered after those (new
strategies join the table without changing this file).

The script is resumable: each finished run is appended to
``benchmarks/results/comm_tta.json`` at once and runs already there are skipped.

    python benchmarks/comm_tta.py run                     # the whole matrix (hours)
    python benchmarks/comm_tta.py run --models digits --links 100mbit --seeds 0 \\
        --strategies dense fp16 powersgd auto --optimizers adam --steps 60
    python benchmarks/comm_tta.py table                   # markdown of comm_tta.json

Needs root, ``ip`` and ``tc`` (see docs/cluster.md); brings the cluster down at the end.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "comm_tta.json"
CLUSTER = "tta"
NODES = 4
TOLERANCE = 0.005  # "reaches dense's final metric": within 0.5% relative

# name → workload, its overrides, (steps, eval_every) of the full budget, lr per optimizer
MODELS: dict[str, dict[str, Any]] = {
    "digits": {"workload": "digits", "set": ["task.model=resnet", "train.batch_size=32"],
               "steps": 300, "eval_every": 20, "lr": {"adam": 1e-3, "sgd": 0.05}},
    "weather": {"workload": "weather_seg", "set": ["task.base=32", "train.batch_size=8"],
                "steps": 300, "eval_every": 20, "lr": {"adam": 3e-3, "sgd": 0.05}},
    "lm": {"workload": str(HERE / "tta_lm.py") + ":make_task", "set": ["train.batch_size=16"],
           "steps": 300, "eval_every": 20, "lr": {"adam": 5e-4, "sgd": 0.1}},
}
OPTIMIZERS = {"adam": ["optim.name=adam"], "sgd": ["optim.name=sgd", "optim.momentum=0.9"]}
LINKS = ["100mbit", "1gbit"]
BASE_STRATEGIES = ["dense", "fp16", "powersgd", "topk", "auto"]
# registered before this benchmark existed and left out of the default list on purpose
OLD_STRATEGIES = {"dense", "fp16", "bf16", "powersgd", "topk", "lag", "grouped",
                  "hierarchical", "auto"}
# settings each strategy runs with unless the label gives others (DGC's density warm-up
# and topk_adam's dense Adam phase are sized for budgets of 60–300 steps)
STRATEGY_SETTINGS: dict[str, dict[str, Any]] = {
    "powersgd": {"rank": 4}, "topk": {"density": 0.01}, "torch_powersgd": {"rank": 4},
    "dgc": {"density": 0.01, "momentum": 0.9, "density_warmup_steps": 5},
    "topk_adam": {"density": 0.01, "adam_freeze_steps": 15},
}
# the one-off traffic of ``auto``'s decision, not part of a training step's bytes
NOT_STEP_OPS = {"probe", "agree", "broadcast"}


def default_strategies() -> list[str]:
    """dense, fp16, powersgd, topk, auto, then every strategy registered since."""
    from scidl.comm import strategy_names

    return BASE_STRATEGIES + [n for n in strategy_names() if n not in OLD_STRATEGIES]


def comm_overrides(label: str) -> list[str]:
    """``comm.*`` overrides of a strategy label ``NAME[:key=value[:key=value…]]``."""
    name, *pairs = label.split(":")
    settings = dict(STRATEGY_SETTINGS.get(name, {}))
    for pair in pairs:
        key, _, value = pair.partition("=")
        if not value:
            raise SystemExit(f"strategy {label!r}: settings are key=value")
        settings[key] = value
    return [f"comm.strategy={name}", *(f"comm.{k}={v}" for k, v in settings.items())]


def optimizer_overrides(model: str, optimizer: str, label: str) -> list[str] | None:
    """``optim.*`` overrides of a run, or None where the strategy cannot run with that
    optimizer. A strategy that applies momentum itself (``dgc``) runs in the ``sgd``
    family as plain SGD (its ``comm.momentum`` = the family's 0.9); one that applies Adam
    (``topk_adam``) runs in the ``adam`` family as plain SGD at Adam's learning rate."""
    from scidl.comm import get_strategy_class

    lr = f"optim.lr={MODELS[model]['lr'][optimizer]}"
    owns = get_strategy_class(label.split(":")[0]).owns_optimizer_state
    if owns is None:
        return [*OPTIMIZERS[optimizer], lr]
    if (owns, optimizer) in (("momentum", "sgd"), ("adam", "adam")):
        return ["optim.name=sgd", "optim.momentum=0", lr]
    return None


def load_avg() -> list[float]:
    """The machine's 1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def run_key(r: dict[str, Any]) -> tuple:
    return (r["model"], r["link"], r["optimizer"], r["strategy"], int(r["seed"]), int(r["steps"]))


def budget_of(r: dict[str, Any]) -> int:
    """The steps of the dense run whose final metric is a run's target (its own steps in
    files from before runs could outlast dense)."""
    return int(r.get("budget", r["steps"]))


def run_steps(strategy: str, budget: int, extend: float) -> int:
    """Steps of a run: dense runs the budget (its final metric is the target); any other
    strategy may run ``extend`` times as many, since time to accuracy is wall time, and a
    strategy faster per step may take more steps and still arrive sooner."""
    return budget if strategy.split(":")[0] == "dense" else max(budget, round(budget * extend))


# ----------------------------------------------------------------------------- one run


def read_run(out: Path) -> dict[str, Any]:
    """The curve, metric, bytes and times of one finished run folder."""
    summary = json.loads((out / "summary.json").read_text())
    comm = json.loads((out / "comm.json").read_text())
    head = summary["headline"]
    step_s: dict[int, float] = {}
    evals: dict[int, float] = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "step_time_s" in row:
            step_s[row["step"]] = row["step_time_s"]
        if f"eval/{head}" in row:
            evals[row["step"]] = row[f"eval/{head}"]
    curve = sorted(evals.items())
    times = []
    for step, value in curve:
        cum = sum(t for s, t in step_s.items() if s <= step)
        times.append([step, cum, value])
    steps = summary["steps"]
    step_bytes = sum(v["bytes_sent"] for k, v in comm.get("by_op", {}).items()
                     if k not in NOT_STEP_OPS)
    out_row = {
        "headline": head, "higher_is_better": summary["higher_is_better"],
        "final": summary.get("headline_value"), "curve": times, "steps_done": steps,
        "train_s": sum(step_s.values()), "wall_s": summary.get("wall_s"),
        "bytes_per_step": step_bytes / max(steps, 1),
        "skipped_steps": summary.get("skipped_steps", 0),
    }
    if comm.get("strategy") == "auto":
        out_row["auto"] = {k: comm.get(k) for k in ("choice", "link", "predicted_step_s",
                                                      "measured_step_s")}
    return out_row


def train_once(model: str, link: str, optimizer: str, strategy: str, seed: int, steps: int,
               eval_every: int, runs: Path, timeout: float, budget: int | None = None
               ) -> dict[str, Any]:
    """One ``scidl train --cluster`` run of ``steps`` steps; its results (or the error) as
    a row. ``budget``: the dense run's steps whose final metric is the target (default
    ``steps``)."""
    m = MODELS[model]
    optim = optimizer_overrides(model, optimizer, strategy)
    if optim is None:
        raise ValueError(f"{strategy} does not run with {optimizer}")
    out = runs / f"{model}-{link}-{optimizer}-{strategy.replace(':', '_')}-s{seed}-{uuid.uuid4().hex[:6]}"
    cmd = [sys.executable, "-m", "scidl", "train", m["workload"], "--cluster", CLUSTER,
           "--ranks-per-node", "1", "--max-steps", str(steps), "--seed", str(seed),
           "--out", str(out), "--cluster-timeout", str(int(timeout)),
           *m["set"], *optim,
           *comm_overrides(strategy), "train.log_every=1", f"train.eval_every={eval_every}",
           "log.progress=false", "log.tensorboard=false", "log.pictures=false",
           "checkpoint.every_steps=1000000", "checkpoint.final=false", "checkpoint.best=false"]
    row: dict[str, Any] = {"model": model, "link": link, "optimizer": optimizer,
                           "strategy": strategy, "seed": seed, "steps": steps,
                           "budget": budget or steps, "eval_every": eval_every,
                           "command": shlex.join(cmd[2:])}
    t0 = time.time()
    row["load_before"] = load_avg()
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout + 120)
    row["process_s"] = time.time() - t0
    row["load_after"] = load_avg()  # its 1-minute value covers the run's last minute
    if proc.returncode != 0 or not (out / "summary.json").exists():
        row["error"] = proc.stdout[-2000:]
        return row
    row.update(read_run(out))
    return row


# ----------------------------------------------------------------------------- the matrix


def load(path: Path = RESULTS) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {"runs": []}


def save(data: dict[str, Any], path: Path = RESULTS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)  # atomic: an interrupted run leaves the previous file


def cluster(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "scidl", "cluster", *args], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)


def run(args: argparse.Namespace) -> int:
    strategies = args.strategies or default_strategies()
    if args.extend < 1:
        raise SystemExit("--extend must be at least 1 (a strategy runs at least dense's steps)")
    if "dense" not in strategies:
        raise SystemExit("--strategies must include dense (the target comes from its runs)")
    strategies = ["dense"] + [s for s in strategies if s != "dense"]  # dense first: the target
    results = Path(args.results)
    data = load(results)
    done = {run_key(r) for r in data["runs"] if "error" not in r or not args.retry_failed}
    data["runs"] = [r for r in data["runs"] if run_key(r) in done]
    runs = Path(args.runs or tempfile.mkdtemp(prefix="scidl-comm-tta-"))
    invocation = "python benchmarks/comm_tta.py " + shlex.join(sys.argv[1:] if args.argv is None
                                                               else args.argv)
    data.setdefault("invocations", [])
    if invocation not in data["invocations"]:
        data["invocations"].append(invocation)
    for link in args.links:
        # seed-major: a stopped run leaves whole seeds (every optimizer, every strategy)
        todo = [(m, o, s, seed) for m in args.models for seed in args.seeds
                for o in args.optimizers for s in strategies
                if (m, link, o, s, seed, run_steps(s, _steps(m, args), args.extend)) not in done
                and optimizer_overrides(m, o, s) is not None]
        if not todo:
            continue
        cluster("down", "--name", CLUSTER)  # another link rate may be up
        cluster("up", "--name", CLUSTER, "--nodes", str(NODES), "--link", link)
        try:
            for m, o, s, seed in todo:
                row = train_once(m, link, o, s, seed, run_steps(s, _steps(m, args), args.extend),
                                 args.eval_every or MODELS[m]["eval_every"], runs, args.timeout,
                                 budget=_steps(m, args))
                row["date"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
                data["runs"].append(row)
                data["env"] = {"python": platform.python_version(), "machine": platform.machine(),
                               "cpus": os.cpu_count(), "load_1min": os.getloadavg()[0]}
                save(data, results)
                status = row.get("error", "").splitlines()[-1:] if "error" in row else \
                    f"{row['headline']}={row['final']:.4f} train {row['train_s']:.0f} s"
                print(f"{link} {m} {o} {s} seed {seed}: {status}", flush=True)
        finally:
            if not args.keep_cluster:
                cluster("down", "--name", CLUSTER)
    print(f"wrote {results}")
    return 0


def _steps(model: str, args: argparse.Namespace) -> int:
    return args.steps or MODELS[model]["steps"]


# ----------------------------------------------------------------------------- analysis


def time_to(curve: list[list[float]], target: float, higher: bool) -> float | None:
    """Training seconds to the first evaluation within TOLERANCE of ``target``."""
    for _step, t, v in curve:
        ok = v >= target * (1 - TOLERANCE) if higher else v <= target * (1 + TOLERANCE)
        if target < 0:  # relative tolerance of a negative metric
            ok = v >= target * (1 + TOLERANCE) if higher else v <= target * (1 - TOLERANCE)
        if ok:
            return t
    return None


def summarise(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (model, link, optimizer, budget, strategy), over its seeds.

    ``steps`` of a row is the budget: dense's steps, whose final metric is the target. A
    strategy's run may be longer (``--extend``); of several runs of one seed the longest
    counts (with a constant learning rate a shorter run is the start of the longer one)."""
    runs = longest_runs(data)
    dense = {(r["model"], r["link"], r["optimizer"], r["seed"], budget_of(r)): r
             for r in runs if r["strategy"] == "dense"}
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["model"], r["link"], r["optimizer"], budget_of(r), r["strategy"]),
                          []).append(r)
    rows = []
    for (model, link, opt, steps, strat), rs in groups.items():
        tta, ratio, finals, nbytes, reached = [], [], [], [], 0
        for r in rs:
            d = dense.get((model, link, opt, r["seed"], steps))
            finals.append(r["final"])
            nbytes.append(r["bytes_per_step"])
            if d is None:
                continue
            t = time_to(r["curve"], d["final"], r["higher_is_better"])
            td = time_to(d["curve"], d["final"], d["higher_is_better"])
            if t is not None:
                reached += 1
                tta.append(t)
                if td:
                    ratio.append(t / td)
        dense_bytes = [dense[k]["bytes_per_step"] for k in dense
                       if k[0] == model and k[1] == link and k[2] == opt and k[4] == steps]
        rows.append({
            "model": model, "link": link, "optimizer": opt, "steps": steps, "strategy": strat,
            "steps_run": sorted({r["steps"] for r in rs}), "seeds": len(rs),
            "reached": reached, "headline": rs[0]["headline"],
            "tta_s": _spread(tta), "tta_vs_dense": _spread(ratio), "final": _spread(finals),
            "bytes_per_step": statistics.mean(nbytes),
            "bytes_vs_dense": (statistics.mean(dense_bytes) / statistics.mean(nbytes)
                               if dense_bytes and statistics.mean(nbytes) else None),
            "auto_choice": _choice(rs),
            "load_1min": _spread([r["load_after"][0] for r in rs if r.get("load_after")]),
            "step_s": _spread([r["train_s"] / r["steps_done"] for r in rs if r.get("steps_done")]),
        })
    order = {s: i for i, s in enumerate(BASE_STRATEGIES)}
    rows.sort(key=lambda r: (r["model"], r["link"], r["optimizer"], r["steps"],
                             order.get(r["strategy"].split(":")[0], 99), r["strategy"]))
    return rows


def longest_runs(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs without an error, the longest of each (model, link, optimizer, budget,
    strategy, seed)."""
    longest: dict[tuple, dict[str, Any]] = {}
    for r in data.get("runs", []):
        if "error" in r:
            continue
        key = (r["model"], r["link"], r["optimizer"], budget_of(r), r["strategy"], r["seed"])
        if key not in longest or r["steps"] > longest[key]["steps"]:
            longest[key] = r
    return list(longest.values())


#: runs of one seed this close in time count as taken side by side
PAIRED_WITHIN_H = 1.0


def _hours_apart(a: dict[str, Any], b: dict[str, Any]) -> float:
    gap = datetime.datetime.fromisoformat(a["date"]) - datetime.datetime.fromisoformat(b["date"])
    return abs(gap.total_seconds()) / 3600


def side_by_side(data: dict[str, Any], model: str, link: str, optimizer: str, steps: int,
                 strategy: str, against: str) -> dict[str, Any] | None:
    """``strategy`` against ``against`` seed by seed (the runs of one seed are taken one
    after the other): the ratio of their times to the same seed's dense final metric, and
    what the difference is made of: how much later ``strategy`` reaches its first
    evaluation (a start-up cost, paid once) and its time per step after it, relative to
    ``against``'s over the same steps (the pace). A seed whose two runs are dated more
    than ``PAIRED_WITHIN_H`` hours apart is left out. None without a seed both ran."""
    runs = [r for r in longest_runs(data) if (r["model"], r["link"], r["optimizer"],
                                              budget_of(r)) == (model, link, optimizer, steps)]
    by = {(r["strategy"], r["seed"]): r for r in runs}
    ratio, startup, pace = [], [], []
    for seed in sorted({r["seed"] for r in runs}):
        a, b, d = by.get((strategy, seed)), by.get((against, seed)), by.get(("dense", seed))
        if a is None or b is None or not a["curve"] or not b["curve"]:
            continue
        if a.get("date") and b.get("date") and _hours_apart(a, b) > PAIRED_WITHIN_H:
            continue
        first = a["curve"][0][0]
        if b["curve"][0][0] != first:
            continue
        startup.append(a["curve"][0][1] - b["curve"][0][1])
        last = min(a["curve"][-1][0], b["curve"][-1][0])
        ta = {s: t for s, t, _ in a["curve"]}
        tb = {s: t for s, t, _ in b["curve"]}
        if last > first and last in ta and last in tb and tb[last] > tb[first]:
            pace.append((ta[last] - ta[first]) / (tb[last] - tb[first]))
        if d is not None:
            x = time_to(a["curve"], d["final"], a["higher_is_better"])
            y = time_to(b["curve"], d["final"], b["higher_is_better"])
            if x is not None and y:
                ratio.append(x / y)
    if not startup:
        return None
    return {"against": against, "ratio": _spread(ratio), "startup_s": _spread(startup),
            "pace": _spread(pace)}


def _spread(xs: list[float]) -> dict[str, float] | None:
    if not xs:
        return None
    return {"mean": statistics.mean(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def _choice(rs: list[dict[str, Any]]) -> str | None:
    """``auto``'s choice over a row's seeds: each candidate with its bucket count; where
    the seeds chose differently, every distinct choice with its number of seeds."""
    choices = [tuple(r["auto"]["choice"]) for r in rs
               if r.get("auto") and r["auto"].get("choice")]
    if not choices:
        return None
    seeds = {c: choices.count(c) for c in dict.fromkeys(choices)}

    def fmt(c: tuple[str, ...]) -> str:
        return ", ".join(f"{n}×{c.count(n)}" for n in dict.fromkeys(c))

    if len(seeds) == 1:
        return fmt(choices[0])
    return "; ".join(f"{fmt(c)} ({k} seed{'s' if k > 1 else ''})" for c, k in seeds.items())


def _fmt(s: dict[str, float] | None, digits: int = 1) -> str:
    if s is None:
        return "—"
    if s["n"] == 1:
        return f"{s['mean']:.{digits}f}"
    half = (s["max"] - s["min"]) / 2
    return f"{s['mean']:.{digits}f} ± {half:.{digits}f}"


def markdown(data: dict[str, Any]) -> str:
    """The table of docs/communication.md (mean ± half the range over seeds)."""
    rows = summarise(data)
    if not rows:
        return "(no runs yet)"
    out = ["| model | link | optimizer | steps | strategy | steps run | "
           "seeds reaching dense's final | "
           "time to dense's final (s) | ÷ dense | final metric | MB/step/rank | bytes ÷ dense | "
           "auto's choice (buckets) | s/step | load (1 min) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = r["bytes_vs_dense"]
        load = r["load_1min"]
        load_s = "—" if load is None else f"{load['min']:.1f}–{load['max']:.1f}"
        out.append(
            f"| {r['model']} | {r['link']} | {r['optimizer']} | {r['steps']} | {r['strategy']} | "
            f"{', '.join(map(str, r['steps_run']))} | {r['reached']}/{r['seeds']} | "
            f"{_fmt(r['tta_s'])} | {_fmt(r['tta_vs_dense'], 2)} | "
            f"{r['headline']} {_fmt(r['final'], 4)} | {r['bytes_per_step'] / 1e6:.3f} | "
            f"{'—' if ratio is None else f'{ratio:.1f}'} | {r['auto_choice'] or '—'} | "
            f"{_fmt(r['step_s'], 3)} | {load_s} |")
    env = data.get("env", {})
    out.append("")
    out.append(f"4 virtual nodes × 1 rank on one {env.get('cpus', '?')}-core machine shared "
               "with other jobs. Wall time to accuracy is timing-sensitive: the last column "
               "is the machine's 1-minute load average at the end of each run (min–max over "
               "the seeds; every run's load before and after is in the JSON), and each ratio "
               f"compares a run with the dense run of the same seed, {_apart(data)}. "
               f"Runs: {', '.join('`' + i + '`' for i in data.get('invocations', []))}.")
    return "\n".join(out)


def dense_gap_hours(data: dict[str, Any]) -> list[float]:
    """Per run with a date and a dated dense run of the same seed (and model, link,
    optimizer, budget): hours between the two."""
    runs = longest_runs(data)
    dense = {(r["model"], r["link"], r["optimizer"], budget_of(r), r["seed"]): r
             for r in runs if r["strategy"] == "dense" and r.get("date")}
    out = []
    for r in runs:
        d = dense.get((r["model"], r["link"], r["optimizer"], budget_of(r), r["seed"]))
        if r["strategy"] != "dense" and r.get("date") and d is not None:
            out.append(_hours_apart(r, d))
    return out


def _apart(data: dict[str, Any]) -> str:
    """How far apart in time a ratio's two runs are, from their dates."""
    gaps = dense_gap_hours(data)
    if not gaps:
        return "run minutes apart"
    within = sum(g <= PAIRED_WITHIN_H for g in gaps)
    if within == len(gaps):
        return "run within the hour"
    return (f"run within the hour for {within} of {len(gaps)} runs and up to "
            f"{max(gaps) / 24:.1f} days apart for the others (strategies run again later; "
            "the `date` of every run is in the JSON): a ratio then also holds the change "
            "in the machine's speed between the two, which the side-by-side reading of "
            "`auto` below does not")


#: targets at 100 Mbit/s: the best strategy's time to dense's final ≤ this × dense's,
#: and auto's time ≤ (1 + AUTO_MARGIN) × the best fixed strategy's
TTA_TARGET = 0.5
AUTO_MARGIN = 0.10
TORCH_PEERS = ("torch_fp16", "torch_powersgd")


def targets(data: dict[str, Any], link: str = "100mbit") -> list[dict[str, Any]]:
    """Each target of the time-to-accuracy benchmark per (model, optimizer) at ``link``:
    met or not, with the numbers. Only strategies whose every seed reached dense's final
    metric count; torch's hooks are peers, not candidates for SciDL's best."""
    rows = [r for r in summarise(data) if r["link"] == link]
    out: list[dict[str, Any]] = []
    for model in MODELS:
        for opt in OPTIMIZERS:
            group = [r for r in rows if r["model"] == model and r["optimizer"] == opt]
            if not group:
                out.append({"model": model, "optimizer": opt, "run": False})
                continue
            steps = max(r["steps"] for r in group)
            group = [r for r in group if r["steps"] == steps]
            ok = [r for r in group if r["tta_vs_dense"] and r["reached"] == r["seeds"]]
            fixed = [r for r in ok if r["strategy"].split(":")[0] not in
                     ("dense", "auto", *TORCH_PEERS)]
            best = min(fixed, key=lambda r: r["tta_vs_dense"]["mean"], default=None)
            auto = next((r for r in group if r["strategy"] == "auto"), None)
            dense = next((r for r in group if r["strategy"] == "dense"), None)
            auto_ok = auto is not None and auto in ok
            rel = (auto["tta_vs_dense"]["mean"] / best["tta_vs_dense"]["mean"]
                   if auto_ok and best is not None and auto is not None else None)
            paired = (side_by_side(data, model, link, opt, steps, "auto", best["strategy"])
                      if auto_ok and best is not None else None)
            out.append({
                "model": model, "optimizer": opt, "run": True, "steps": steps,
                "seeds": max(r["seeds"] for r in group),
                "best": best and best["strategy"],
                "best_ratio": best and best["tta_vs_dense"]["mean"],
                "best_met": best is not None and best["tta_vs_dense"]["mean"] <= TTA_TARGET,
                "auto_ratio": auto["tta_vs_dense"]["mean"] if auto_ok and auto else None,
                "auto_vs_best": rel,
                "auto_met": rel is not None and rel <= 1 + AUTO_MARGIN,
                "auto_side_by_side": paired,
                "auto_reached": f"{auto['reached']}/{auto['seeds']}" if auto else None,
                # what compression can save at most: dense's bytes on the link, per step
                "dense_step_s": dense and dense["step_s"] and dense["step_s"]["mean"],
                "dense_wire_s": dense and dense["bytes_per_step"] * 8 / link_bits(link),
            })
    return out


def link_bits(link: str) -> float:
    """Bits per second of a link label (``100mbit``, ``1gbit``)."""
    units = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
    for unit, scale in units.items():
        if link.endswith(unit):
            return float(link[: -len(unit)]) * scale
    raise ValueError(f"link {link!r}: expected NUMBER followed by kbit, mbit or gbit")


def markdown_targets(data: dict[str, Any]) -> str:
    """The targets as a list: met / not met, the distance (docs/communication.md)."""
    lines = []
    for t in targets(data):
        head = f"- **{t['model']}, {t['optimizer']}**"
        if not t["run"]:
            lines.append(f"{head}: not met — not run at 100 Mbit/s yet.")
            continue
        where = f"({t['steps']} steps, {t['seeds']} seed{'s' if t['seeds'] > 1 else ''})"
        if t["best"] is None:
            best = "not met — no compressing strategy reached dense's final on every seed"
        else:
            verdict = "met" if t["best_met"] else "not met"
            best = (f"{verdict} — best {t['best']} reaches it in {t['best_ratio']:.3f}× "
                    f"dense's time (target ≤ {TTA_TARGET})")
        if t["auto_vs_best"] is not None:
            verdict = "met" if t["auto_met"] else "not met"
            auto = (f"{verdict} — auto {t['auto_ratio']:.3f}× dense, "
                    f"{t['auto_vs_best']:.2f}× the best fixed strategy "
                    f"(target ≤ {1 + AUTO_MARGIN:.2f})")
            sbs = t.get("auto_side_by_side")
            if sbs and sbs["ratio"]:
                auto += (f"; seed by seed against {sbs['against']}: {_mean_range(sbs['ratio'])}× "
                         f"its time, first evaluation {_mean_range(sbs['startup_s'], 'signed')} s "
                         "later (start-up)")
                if sbs["pace"]:
                    auto += f", {_mean_range(sbs['pace'])}× its time per step after it"
        elif t["auto_reached"] is None:
            auto = "not met — auto not run"
        else:
            auto = (f"not met — auto reached dense's final on {t['auto_reached']} seeds"
                    if t["best"] is not None else "not met — no best fixed strategy to match")
        share = ""
        if t["dense_step_s"] and t["dense_wire_s"] is not None:
            floor = max(0.0, 1 - t["dense_wire_s"] / t["dense_step_s"])
            share = (f" Dense's bytes need {t['dense_wire_s']:.3f} s per step on the link, "
                     f"of its {t['dense_step_s']:.3f} s training step: even sending no bytes "
                     f"at all, the same number of steps would take at least {floor:.2f}× "
                     "dense's time.")
        lines.append(f"{head} {where}: time to accuracy {best}; auto {auto}.{share}")
    return "\n".join(lines)


def _mean_range(x: dict[str, float], fmt: str = "") -> str:
    """``mean [min–max]`` of a spread, two decimals (``signed``: with a sign)."""
    f = "{:+.2f}" if fmt == "signed" else "{:.2f}"
    return f"{f.format(x['mean'])} [{f.format(x['min'])}–{f.format(x['max'])}]"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    rp = sub.add_parser("run", help="train the missing runs of the matrix (resumable)")
    rp.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    rp.add_argument("--links", nargs="+", default=LINKS)
    rp.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS), choices=list(OPTIMIZERS))
    rp.add_argument("--strategies", nargs="+", help="comm.strategy labels, NAME[:key=value…] "
                    "(default: dense fp16 powersgd topk auto + strategies registered since)")
    rp.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    rp.add_argument("--steps", type=int, help="step budget of every run (default: per model)")
    rp.add_argument("--eval-every", type=int, help="steps between evaluations (default: per model)")
    rp.add_argument("--extend", type=float, default=1.0,
                    help="strategies other than dense run this many times dense's steps "
                    "(time to accuracy is wall time: a strategy faster per step may take "
                    "more steps); the target stays dense's final metric")
    rp.add_argument("--timeout", type=float, default=3600, help="seconds per run")
    rp.add_argument("--runs", help="parent folder of the run folders (default: a temp dir)")
    rp.add_argument("--retry-failed", action="store_true", help="run failed runs again")
    rp.add_argument("--results", default=str(RESULTS), help="results file (appended to)")
    rp.add_argument("--keep-cluster", action="store_true", help="leave the cluster up")
    sub.add_parser("table", help="print the markdown table of comm_tta.json and its targets")
    args = ap.parse_args(argv)
    if args.cmd == "table":
        print(markdown(load()) + "\n\n" + markdown_targets(load()))
        return 0
    args.argv = argv
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
