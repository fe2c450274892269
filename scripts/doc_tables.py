"""Pure functions: parsed ``benchmarks/results/*.json`` → markdown for ``docs/``.

Each renderer takes the whole parsed results file and returns markdown. Derived figures
(ratios, throughput) are computed here from the primary fields (step times, batch sizes,
per-seed values), so a corrected results file renders correctly. Multi-seed results are
quoted as ``mean [min–max]`` over the seeds, with the number of seeds in the heading.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any

MB = 1e6


# ----------------------------------------------------------------------------- helpers
def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A markdown table; cells are already formatted strings."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def f(x: float | None, digits: int = 3) -> str:
    """Fixed-point number, ``–`` for missing."""
    return "–" if x is None else f"{x:.{digits}f}"


def g(x: float | None, digits: int = 2) -> str:
    """Significant-digit number, ``–`` for missing."""
    return "–" if x is None else f"{x:.{digits}g}"


def n(x: float | None) -> str:
    """Integer with thousands separators."""
    return "–" if x is None else f"{x:,.0f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b in (None, 0) else a / b


def mean_spread(values: Sequence[float | None], digits: int = 3) -> str:
    """``mean [min–max]`` of the values that exist; ``(k of N)`` when some are missing."""
    have = [v for v in values if v is not None]
    if not have:
        return f"– (0 of {len(values)})"
    m = statistics.fmean(have)
    rd = 0 if all(float(v).is_integer() for v in have) else digits
    s = f"{m:.{digits}f}" if len(have) == 1 else f"{m:.{digits}f} [{min(have):.{rd}f}–{max(have):.{rd}f}]"
    return s if len(have) == len(values) else f"{s} ({len(have)} of {len(values)})"


def mean_of(values: Sequence[float | None]) -> float | None:
    have = [v for v in values if v is not None]
    return statistics.fmean(have) if have else None


def per_seed(values: Sequence[float | None], digits: int = 0) -> str:
    return ", ".join("–" if v is None else f"{v:.{digits}f}" for v in values)


# ----------------------------------------------------------------------------- engine
def engine_overhead(d: dict) -> str:
    """Per model: median step times and the median of paired SciDL ÷ plain ratios (wall, CPU)."""
    c = d["config"]

    def spread(r: dict) -> str:
        return f"{f(r['ratio'])} [{f(r['iqr'][0])}–{f(r['iqr'][1])}]"

    head = ["model", "parameters", "plain DDP step (ms)", "SciDL step (ms)",
            "wall ratio [IQR]", "wall 95 % CI", "CPU ratio [IQR]", "CPU 95 % CI", "target"]
    rows = [[name.replace("_", " "), f"{m['params']:,}", f(m["wall"]["plain_ms"], 2),
             f(m["wall"]["scidl_ms"], 2), spread(m["wall"]),
             f"{f(m['wall']['ci95'][0])}–{f(m['wall']['ci95'][1])}", spread(m["cpu"]),
             f"{f(m['cpu']['ci95'][0])}–{f(m['cpu']['ci95'][1])}", f"≤ {d['target']}"]
            for name, m in d["models"].items()]
    bv = [m["vs_bucket_view"] for m in d["models"].values() if "vs_bucket_view" in m]
    if len(bv) == len(rows):  # ratios against the plain loop with gradient_as_bucket_view
        head[-1:-1] = ["wall ratio, bucket-view plain [IQR]", "CPU ratio, bucket-view plain [IQR]"]
        for row, v in zip(rows, bv, strict=True):
            row[-1:-1] = [spread(v["wall"]), spread(v["cpu"])]
    ctl = [m["control"] for m in d["models"].values() if "control" in m]
    if len(ctl) == len(rows):  # an identical plain loop ÷ plain: the pairing's own floor
        head[-1:-1] = ["control wall ratio [IQR]", "control CPU ratio [IQR]"]
        for row, v in zip(rows, ctl, strict=True):
            row[-1:-1] = [spread(v["wall"]), spread(v["cpu"])]
    load = d["load_avg"]
    note = (f"{c['nproc']} {c['backend']} processes, {c['threads_per_process']} thread each, "
            f"batch {c['batch']} per rank, {c['optimizer']}; {c['pairs']} step pairs per model after "
            f"{c['warmup']} untimed; load average {load['before'][0]:.2f} before and "
            f"{load['after'][0]:.2f} after the run on {d['hardware']['cpus']} CPU cores; "
            f"torch {d['versions']['torch']}, {d['date']}. Ratios are medians over pairs of "
            "SciDL step ÷ plain step (IQR: quartiles of those ratios; CI: bootstrap of the median)"
            + ("; bucket-view plain: the plain loop with DDP's gradient_as_bucket_view=True, as "
               "SciDL's dense strategy sets it, timed in the same rotation." if len(bv) == len(rows)
               else ".")
            + (" Control: a second, identical plain loop in the same rotation, divided by the "
               "plain loop; where it is not 1.000 the pairing itself reads that much "
               "\"overhead\" with none present." if len(ctl) == len(rows) else ""))
    launches = [(name, m["wall"]["per_launch"], m["control"]["wall"]["per_launch"])
                for name, m in d["models"].items()
                if len(m["wall"].get("per_launch", [])) > 1 and "control" in m]
    if launches:
        note += (f" {c.get('launches', len(launches[0][1]))} fresh launches of the processes, "
                 "pairs pooled; the interval resamples launches, then pairs. Median wall ratio "
                 "per launch: " + "; ".join(
                     f"{name.replace('_', ' ')} SciDL {', '.join(f(x) for x in ours)} (control "
                     f"{', '.join(f(x) for x in ctl)})" for name, ours, ctl in launches) + ".")
    cores = next((m["cores"] for m in d["models"].values() if m.get("cores")), None)
    if cores:  # per rank, its affinity in each launch
        bound = all(aff and len(aff) == 1 for per_rank in cores for aff in per_rank)
        where = ", ".join(f"rank {r} on core {per_rank[0][0]}" for r, per_rank in enumerate(cores))
        note += (f" Processes launched with dist.bind_cores={c.get('bind_cores', 'auto')}: "
                 + (f"each rank's compute thread bound to a core of its own (first launch: "
                    f"{where})." if bound else "left to the OS."))
    out = table(head, rows) + "\n\n" + note
    free = d.get("unbound")
    if free:
        head2 = ["model", "wall ratio [IQR]", "CPU ratio [IQR]", "control wall ratio [IQR]",
                 "plain step, bound ÷ unbound (per launch pair)", "SciDL step, bound ÷ unbound"]
        rows2 = []
        for name, m in free["models"].items():
            e = free["bound_over_unbound"][name]
            rows2.append([name.replace("_", " "), spread(m["wall"]), spread(m["cpu"]),
                          spread(m["control"]["wall"]),
                          f"{f(e['plain']['median'])} ({', '.join(f(x) for x in e['plain']['per_launch_pair'])})",
                          f"{f(e['scidl']['median'])} ({', '.join(f(x) for x in e['scidl']['per_launch_pair'])})"])
        out += ("\n\nThe same rotation in processes left to the OS (dist.bind_cores=false), each "
                "launch run next to a bound one (their order alternating); the last two columns "
                "divide the median step time of each bound launch by that of its unbound "
                "neighbour:\n\n" + table(head2, rows2))
    return out


def first_result(d: dict) -> str:
    """Per command: seconds from a fresh process to the run folder, the first progress
    line and the summary, with the start-up phases and the machine's load."""
    head = ["command", "run folder (s)", "first progress line (s)", "summary (s)",
            "start-up phases (s at which each began)", "load before"]
    rows = [[f"`{r['command']}`", f(r["run_folder_s"], 1), f(r["first_progress_s"], 1),
             f(r["summary_s"], 1),
             "; ".join(f"{k.rstrip('…')} {v:.1f}" for k, v in r["phases_s"].items()),
             f"{r['load_avg_before'][0]:.2f}"] for r in d["results"].values()]
    v, load = d["versions"], d["load_avg"]
    note = (f"Wall time from starting `scidl train` (a fresh process, output to a pipe) to each "
            f"line; one run each, {d['hardware']['cpus']} CPU cores, load average "
            f"{load['before'][0]:.2f} before and {load['after'][0]:.2f} after; Python "
            f"{v['python']}, torch {v['torch']}, SciDL {v['scidl']}, {d['date']}.")
    return table(head, rows) + "\n\n" + note


def sparse_embedding(d: dict) -> str:
    """Step time of a sparse-embedding model under each strategy ÷ plain torch DDP (SGD)."""
    c = d["config"]
    sizes = list(d["results"])
    combos = list(d["results"][sizes[0]]["scidl"])
    head = ["embedding", "plain DDP step (ms)", *[f"{k} ÷ plain" for k in combos]]
    rows = [[s.replace("x", "×"), f(r["plain_step_s"] * 1e3, 1),
             *[f(r["scidl"][k]["ratio"], 2) for k in combos]] for s, r in d["results"].items()]
    note = (f"{c['nproc']} {c['backend']} processes, batch {c['batch_per_rank']} × {c['seq']} tokens "
            f"per rank, median of {c['repeats']} repeats of {c['steps']} steps, "
            f"{d['hardware']['cpus']} CPU cores, {d['date']}; plain = {c['plain']}.")
    return table(head, rows) + "\n\n" + note


# ----------------------------------------------------------------------------- hybrid
def _layout_name(r: dict) -> str:
    p = r.get("pipeline")
    if not p:
        return "data parallel"
    sched = {"1f1b": "1F1B", "gpipe": "GPipe"}.get(p["schedule"], p["schedule"])
    return f"{p['stages']} stages × {p['replicas']} replica{'s' if p['replicas'] != 1 else ''}, {sched}"


def _paired_ratio(r: dict) -> str:
    """Median of per-round paired ratios with their range (one round: the ratio alone)."""
    xs = r["throughput_ratios"]
    if len(xs) == 1:
        return f(xs[0], 2)
    return f"{statistics.median(xs):.2f} [{min(xs):.2f}–{max(xs):.2f}]"


def hybrid(d: dict) -> str:
    """Throughput = global batch ÷ mean step time (never the world size × anything)."""
    c = d["config"]
    rows_in = d["results"]
    base = next(r for r in rows_in if not r.get("pipeline"))

    def gb(r: dict) -> int:
        for key in ("global_batch_size", "global_batch"):
            if r.get(key):
                return r[key]
        return c["batch"]

    rows = []
    for r in rows_in:
        p = r.get("pipeline") or {}
        thr = gb(r) / r["step_time_s"]
        rows.append([
            _layout_name(r),
            f(r["step_time_s"], 2),
            f(thr, 1),
            " / ".join(f"{x:.0f}" for x in r["peak_rss_mb_per_rank"]),
            _paired_ratio(r) if r.get("throughput_ratios") else f(thr / (gb(base) / base["step_time_s"]), 2),
            f(max(r["peak_rss_mb_per_rank"]) / max(base["peak_rss_mb_per_rank"]), 2),
            f(p.get("predicted_step_s"), 2),
            f(p.get("bubble_fraction"), 2),
        ])
    head = ["layout", "step (s)", "samples/s (global batch ÷ step)", "peak RSS per rank (MB)",
            "throughput ratio", "memory ratio (max rank)", "predicted step (s)", "bubble"]
    return (
        f"ResNet-{c['depth']} (width {c['width']}), global batch {c['batch']}, {c['steps']} steps, "
        f"{c['nproc']} processes, M = {c['microbatches']}, {d['date']}"
        + (f"; {c['repeats']} interleaved rounds, step time = median over rounds, throughput ratio = "
           f"median [min–max] of the per-round paired ratios" if c.get("repeats", 1) > 1 else "")
        + ":\n\n" + table(head, rows)
    )


def hybrid_memory(d: dict) -> str:
    """One sentence on memory per stage from the first pipelined layout."""
    base = next(r for r in d["results"] if not r.get("pipeline"))
    r = next(r for r in d["results"] if r.get("pipeline"))
    p = r["pipeline"]
    rss, brss = r["peak_rss_mb_per_rank"], base["peak_rss_mb_per_rank"]
    act = ", ".join(f"{b / MB:.1f} MB on stage {i}" for i, b in enumerate(p["stage_activation_bytes_per_microbatch"]))
    return (
        f"With {_layout_name(r).split(', ')[-1]}, the last stage peaks at {rss[-1]:.0f} MB vs {max(brss):.0f} MB "
        f"for a data-parallel rank ({1 - rss[-1] / max(brss):.0%} less); rank 0 peaks at {rss[0]:.0f} MB. "
        f"Measured activation bytes per microbatch: {act} (stage sizes {p['stage_sizes']} blocks)."
    )


# ----------------------------------------------------------------------------- sharding
def fsdp_memory(d: dict) -> str:
    """Parameter + gradient + optimizer MiB per rank, DDP vs FSDP, by process count."""
    def mib(x: float) -> str:
        return f"{x / 2**20:.2f}"

    rows = []
    for r in d["results"]:
        worst = max(r["per_rank"], key=lambda p: p["params"] + p["grads"] + p["optimizer"])
        rows.append([r["nproc"], "DDP" if r["layout"] == "ddp" else "FSDP (shard=full)",
                     mib(worst["params"]), mib(worst["grads"]), mib(worst["optimizer"]),
                     mib(r["max_bytes_per_rank"]), f"{r['fraction_of_ddp']:.3f}",
                     "" if r["layout"] == "ddp" else f"{1 / r['nproc']:.3f}"])
    return table(["processes", "layout", "parameters MiB", "gradients MiB", "optimizer MiB",
                  "total MiB / rank", "of DDP", "ideal 1/N"], rows)


# ----------------------------------------------------------------------------- comm
def comm_convergence(d: dict, section: str) -> str:
    """Per workload and strategy over its seeds: final metric and the per-seed ratio to
    dense, ``mean [min–max]`` (rows without a seed are seed 0)."""
    s = d[section]
    dense = {(r["workload"], r.get("seed", 0)): r for r in s["rows"] if r["case"] == "dense"}
    extra = " ".join(s.get("set", [])) or "workload defaults"
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in s["rows"]:
        groups.setdefault((r["workload"], r["case"]), []).append(r)
    rows = []
    for (wl, case), rs in groups.items():
        bases = [dense.get((wl, r.get("seed", 0))) for r in rs]
        base_bytes = mean_of([b and b["bytes_per_step"] for b in bases])
        rows.append([
            wl, case, f"{rs[0]['headline']} = {mean_spread([r['value'] for r in rs], 4)}",
            mean_spread([ratio(r["value"], b and b["value"]) for r, b in zip(rs, bases, strict=True)]),
            n(mean_of([r["bytes_per_step"] for r in rs])),
            f(ratio(base_bytes, mean_of([r["bytes_per_step"] for r in rs])), 1), len(rs),
        ])
    steps = sorted({f"{r['workload']} {r['steps']}" for r in s["rows"] if r.get("steps")})
    head = ["workload", "strategy", "final metric", "vs dense", "bytes/step/rank",
            "bytes ÷ dense", "seeds"]
    return (f"#### {section} ({s['nproc']} processes; steps: {', '.join(steps)}; extra settings: "
            f"{extra})\n\n" + table(head, rows))


def comm_speed(d: dict, section: str) -> str:
    s = d[section]
    c = s["config"]
    dense = next(r for r in s["rows"] if r["case"] == "dense")
    rows = []
    for r in s["rows"]:
        red = ratio(dense["bytes_per_step"], r["bytes_per_step"]) if r["bytes_per_step"] else None
        rows.append([
            r["case"], f(r["step_s"]), f(r["step_s"] / dense["step_s"], 2), f(r["bytes_per_step"] / MB, 2),
            "—" if red is None else f"{red:.1f}×", "—" if r.get("exposed_s") is None else f(r["exposed_s"]),
        ])
    head = ["case", "median step (s)", "step ÷ dense", "MB sent/step/rank", "bytes reduction", "exposed comm (s/step)"]
    title = (f"#### {section} ({c['params'] / 1e6:.1f} M parameters, {c['nproc']} processes, batch {c['batch']}/rank, "
             f"{c['repeats']} interleaved repeats × {c['steps']} steps)")
    return title + "\n\n" + table(head, rows)


# ----------------------------------------------------------------------------- optim
def _epochs(run: dict) -> int:
    return run.get("epochs") or round(run["steps"] / run.get("steps_per_epoch", run["steps"] / len(run["mse"])))


def optim_admissions(d: dict, section: str) -> str:
    """Epochs to the MSE targets per variant (mean [min–max] over seeds) and ratios to SGD."""
    s = d[section]
    tab, runs = s["table"], s.get("runs", {})
    targets = sorted({k.split("_to_")[1] for v in tab.values() for k in v if k.startswith("epochs_to_") and isinstance(v[k], list)},
                     key=float, reverse=True)
    sgd = tab["sgd"]

    def time_per_epoch(v: str) -> float | None:
        rs = runs.get(v) or []
        # the median epoch of each run (its periodic steps included, bursts of load excluded)
        ts = [r.get("epoch_time_median_s") or r.get("wall_s_per_epoch") or r["train_time_s"] / s["epochs"]
              for r in rs if r.get("train_time_s")]
        return statistics.fmean(ts) if ts else None

    rows = []
    for v, row in tab.items():
        cells = [v]
        for tg in targets:
            vals = row[f"epochs_to_{tg}"]
            cells.append(f"{per_seed(vals)} → {mean_spread(vals, 1)}")
        ratio_e = ratio(mean_of(row[f"epochs_to_{targets[0]}"]), mean_of(sgd[f"epochs_to_{targets[0]}"]))
        finals = [r["final_mse"] for r in runs.get(v, [])]
        cells += [f(ratio_e, 2), mean_spread(finals, 4) if finals else f(row.get("final_mse_median"), 4),
                  f(ratio(time_per_epoch(v), time_per_epoch("sgd")), 2)]
        rows.append(cells)
    head = ["variant"] + [f"epochs to MSE ≤ {tg}: per seed → mean [min–max]" for tg in targets]
    head += [f"epochs ratio to SGD (≤ {targets[0]}, ratio of means)", "final MSE", "time per epoch ÷ SGD"]
    title = (f"**admissions, batch {s['batch']}, {s['epochs']} epochs, {len(s['seeds'])} seeds {s['seeds']}** "
             "(– = target not reached; means over the seeds that reached it)")
    return title + "\n\n" + table(head, rows)


def optim_timing(d: dict) -> str:
    """Step time ratio to SGD: median over interleaved repeats of each repeat's ratio."""
    s = d["timing_b40"]
    steps = s["mean_step_s"]
    rows = []
    for v, ts in steps.items():
        per = [a / b for a, b in zip(ts, steps["sgd"], strict=True)]
        rows.append([v, f(statistics.fmean(ts) * 1e3, 1), f(statistics.median(per), 2),
                     f"{min(per):.2f}–{max(per):.2f}"])
    head = ["variant", "mean step (ms, mean over repeats)", "step ÷ SGD (median of repeats)", "min–max over repeats"]
    return (f"**timing, batch {s['batch']}, {s['epochs']} epochs × {s['repeats']} interleaved repeats**\n\n"
            + table(head, rows))


def optim_burgers(d: dict) -> str:
    s = d["burgers"]
    rows = []
    for v, rs in s["runs"].items():
        c = rs[0].get("counters") or {}
        ex = f"{c['extrapolations']} / {c['rejected']}" if "extrapolations" in c else "–"
        rows.append([v, mean_spread([r["final_rel_l2"] for r in rs], 4), ex,
                     mean_spread([r["train_time_s"] for r in rs], 1)])
    head = ["variant", "rel. L2 at equal steps", "extrapolations / rejected", "train time (s)"]
    seeds = len(next(iter(s["runs"].values())))
    return f"**burgers PINN, {s['steps']} full-batch steps, {seeds} seed(s)**\n\n" + table(head, rows)


def optim_digits(d: dict) -> str:
    s = d["digits"]
    rows = [[v, r["steps"], per_seed(r["final_accuracy"], 4), mean_spread(r["final_accuracy"], 4)]
            for v, r in s["table"].items()]
    k = len(next(iter(s["table"].values()))["final_accuracy"])
    return (f"**digits, {s['epochs']} epochs, test accuracy ({k} seeds)**\n\n"
            + table(["variant", "optimizer steps", "accuracy per seed", "mean [min–max]"], rows))


def optim_filtering(d: dict) -> str:
    s = d["filtering"]
    rows = [[v, per_seed(r["final_accuracy"], 4), mean_spread(r["final_accuracy"], 4)] for v, r in s["table"].items()]
    k = len(next(iter(s["table"].values()))["final_accuracy"])
    return (f"**data filtering, digits, {s['base']}, drop {s['fraction']:.0%}, {s['epochs']} epochs, {k} seeds**\n\n"
            + table(["filter", "accuracy per seed", "mean [min–max]"], rows))


def optim_ensemble(d: dict) -> str:
    s = d["ensemble"]

    def cell(x: dict) -> str:
        return f"{x['accuracy']:.4f} / {x['loss']:.3f}"

    rows = [[r["seed"], cell(r["single_cosine"]), cell(r["cyclic_final"]), cell(r["ensemble"])] for r in s["runs"]]
    head = ["seed", "single model (cosine) acc / NLL", "cyclic run, final model acc / NLL", "snapshot ensemble acc / NLL"]
    return (f"**collapsed ensemble, digits, {s['epochs']} epochs, {s['cycles']} cycles**\n\n" + table(head, rows))


# ----------------------------------------------------------------------------- search
def search_compare(d: dict) -> str:
    c = d["compare"]
    rows = []
    for wl in ("admissions", "digits"):
        for st, r in c[wl].items():
            rows.append([wl, st, f(r["best_metric"], 4), n(r["best_params"]),
                         f"{r['top_metric']:.4f} ({r['top_params']:,})", f(r["wall_s"], 0)])
    head = ["workload", "strategy", "best metric", "params of best", "top metric (params)", "wall (s)"]
    return f"{c['trials']} trials per strategy, one seed:\n\n" + table(head, rows)


def search_pareto(d: dict) -> str:
    p = d["pareto"]
    rows = []
    for t in p["front"]:
        q = t["params"]
        head_ = str(q["head_width"]) if q.get("head_layers") else "none"
        rows.append([t["number"], f(t["metric"], 4), f(t["latency_ms"], 4), n(t["n_params"]),
                     f"{q['n_conv']} × {q['channels']} (×2 per layer)", head_])
    head = ["trial", "accuracy", "latency (ms/sample)", "params", "conv layers × channels", "head"]
    lat = [t["latency_ms"] for t in p["front"]]
    acc = [t["metric"] for t in p["front"]]
    met = "met" if p["target_met"] else "not met"
    text = (
        f"Fastest front member within 1 point of the most accurate: trial {p['fastest_within_1pt']} vs trial "
        f"{p['most_accurate']}, **{p['speedup_within_1pt']:.1f}× faster** (target ≥ 5×: {met}).\n\n"
        f"Among all {p['trials']} trials, the slowest network within 1 point of the most accurate (trial "
        f"{p['slowest_within_1pt']}) is {p['front_vs_slowest_within_1pt']:.1f}× slower than the front's choice. "
        f"The front spans a {max(lat) / min(lat):.2f}× latency range ({min(lat):.4f} → {max(lat):.4f} ms per sample) "
        f"and {(max(acc) - min(acc)) * 100:.1f} accuracy points."
    )
    return (f"NSGA-II, {p['trials']} trials, population {p['population']}, {p['epochs']} epochs per trial. "
            "Pareto front:\n\n" + table(head, rows) + "\n\n" + text)


def search_workers(d: dict) -> str:
    w = d["workers"]
    ks = sorted(k for k in w if k.isdigit())
    rows = [[k, f(w[k]["wall_s"], 1), f(w[k]["utilisation"], 2), f(w[k]["utilisation_steady"], 2)] for k in ks]
    head = ["workers", "wall (s)", "utilisation (from start)", "utilisation (steady state)"]
    sp = w[ks[0]]["wall_s"] / w[ks[-1]]["wall_s"]
    return table(head, rows) + f"\n\nSpeed-up {ks[0]} → {ks[-1]} workers: {sp:.2f}× (wall-time ratio)."


# ----------------------------------------------------------------------------- scaling
def _ranks(r: dict) -> str:
    base = r.get("baseline_ranks", 1)
    return f"{r['ranks']:,}" + ("" if base == 1 else f" (vs {base:,})")


def scaling_published(d: dict) -> str:
    rows = []
    for r in d["rows"]:
        bpr = r.get("batch_per_rank")
        role = r.get("role", "predicted")
        met = "fitted" if role == "fit" else ("yes" if abs(r["delta_points"]) <= 5 else "no")
        rows.append([
            r["source"],
            r["model"], _ranks(r), r.get("scaling", "weak"), f"{r['hardware']} ({r['algorithm']})",
            "–" if bpr is None else bpr,
            f(r["compute_s"]), f(r["comm_s"]), f(r["exposed_comm_s"]), f(r.get("straggler_s")),
            f(r.get("straggler_cv"), 4), f(r["predicted"]),
            r.get("reported_text") or f(r["reported"], 2), f"{r['delta_points']:+.1f}", met,
        ])
    head = ["source", "model", "ranks", "scaling", "preset (algorithm)", "batch/rank", "compute s", "comm s",
            "exposed s", "straggler s", "σ/step", "predicted E", "reported E", "Δ points", "within ±5"]
    return table(head, rows)


def scaling_flops_basis(d: dict) -> str:
    measured = {(r["source"], r["model"]): r for r in d["rows"]}
    rows = []
    for r in d["flops_basis"]:
        m = measured.get((r["source"], r["model"]))
        if m is None or m.get("compute_basis") != "measured":
            continue
        rows.append([f"{r['model']} ({r['hardware']})", f(r["compute_s"]), f(r["predicted"]), f(m["compute_s"]), f(m["predicted"]),
                     m.get("reported_text") or f(m["reported"], 2)])
    head = ["model", "compute from FLOPs (s)", "predicted E", "compute measured (s)", "predicted E", "reported"]
    return table(head, rows)



def _pairs(a: Sequence[Any], b: Sequence[Any]) -> str:
    return ", ".join(f"{'–' if x is None else x}/{'–' if y is None else y}" for x, y in zip(a, b, strict=True))


def _missed(s: dict, variant: str, target: str) -> str:
    vals = s["table"][variant][f"epochs_to_{target}"]
    return f"{sum(v is None for v in vals)} of {len(vals)}"


def optim_admissions_summary(d: dict) -> str:
    """Key figures of the admissions comparison, quoted in the discussion."""
    b40, b8, tm = d["admissions_b40"], d["admissions_b8"], d["timing_b40"]["mean_step_s"]
    lines = []
    for s in (b40, b8):
        tab = s["table"]
        for tg in ("0.01", "0.007"):
            aa, sgd = tab["aa"][f"epochs_to_{tg}"], tab["sgd"][f"epochs_to_{tg}"]
            r = ratio(mean_of(aa), mean_of(sgd))
            lines.append(f"- batch {s['batch']}, MSE ≤ {tg}: AA needs {f(r, 2)}× SGD's epochs (ratio of means over "
                         f"{len(s['seeds'])} seeds; AA/SGD per seed {_pairs(aa, sgd)}).")
        lines.append(f"- batch {s['batch']}: unguarded AA (`aa_nosafe`) missed MSE ≤ 0.01 within {s['epochs']} epochs "
                     f"on {_missed(s, 'aa_nosafe', '0.01')} seeds.")
    rej = [r["counters"]["rejected"] / (r["counters"]["rejected"] + r["counters"]["extrapolations"])
           for s in (b40, b8) for r in s["runs"].get("aa", []) if r.get("counters", {}).get("extrapolations") is not None]
    if rej:
        lines.append(f"- safeguarded AA rejected {min(rej):.0%}–{max(rej):.0%} of its extrapolations (runs of `aa`).")
    per = {v: statistics.median(a / b for a, b in zip(ts, tm["sgd"], strict=True)) for v, ts in tm.items() if v != "sgd"}
    lines.append("- step time ÷ SGD (median of interleaved repeats): "
                 + ", ".join(f"`{v}` {x:.2f}" for v, x in per.items()) + ".")
    return "\n".join(lines)


def scaling_published_summary(d: dict) -> str:
    fit = [r for r in d["rows"] if r.get("role") == "fit"]
    rows = [r for r in d["rows"] if r.get("role") != "fit"]
    within = [r for r in rows if abs(r["delta_points"]) <= 5]
    above = sum(r["delta_points"] > 0 for r in rows)
    listed = ", ".join(f"{r['model']} {r['delta_points']:+.1f}" for r in within)
    rest = ", ".join(f"{r['model']} ({r['ranks']:,}, {r.get('scaling', 'weak')}) {r['delta_points']:+.1f}"
                     for r in rows if r not in within) or "none"
    fitted = ", ".join(f"{r['system']} σ/step = {r['straggler_cv']:.4f} (on {r['model']})" for r in fit)
    return (f"{len(within)} of {len(rows)} predicted rows fall within ±5 points of the reported efficiency ({listed}); "
            f"outside: {rest}. {above} of {len(rows)} predictions are above the reported value. "
            f"{len(fit)} rows were used to fit their system's straggler spread ({fitted}) and are not counted.")
