"""weather_seg at the DeepCAM quality target: IoU per class → ``benchmarks/results/weather_seg.json``.

Every run is ``scidl train weather_seg ...`` in a subprocess (the user's command line), one
torch thread per process (``dist.threads_per_proc=1``), a metrics row every step
(``train.log_every=1``) so that the training time at each evaluation is the sum of the
logged step times (evaluation, start-up and data generation excluded). The IoUs are the
final model's on the held-out set (not the best evaluation: that would select on it).

Sections (each merges its key into the JSON):

* ``seeds``: the default recipe on seeds 0, 1, 2, one process: final IoU per class,
  quoted as mean [min–max]; seed 0's curve is the 1-process curve of ``scaling``.
* ``scaling``: seed 0 on 2 and 4 processes (``--nproc N``) with the same global batch
  (``train.global_batch_size``), so each rank takes a 1/N share of every batch: per-class
  IoU vs training time. The load average is recorded before and after each run.
* ``netcdf``: ``scidl data write-weather DIR`` (16-channel netCDF-4 files), then
  ``scidl train weather_seg task.data_dir=DIR``: one run, its IoUs and its commands.
* ``variants``: single-seed runs of named recipe variants (what each change brings).

Usage::

    python benchmarks/weather_seg.py seeds scaling netcdf     # ~40 min on 2 busy cores
    python benchmarks/weather_seg.py variants --variants baseline_2026_11 no_dice
    python benchmarks/weather_seg.py seeds --quick              # smoke run (seconds)
    python benchmarks/weather_seg.py --plot-only                # redraw the figure
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "weather_seg.json"
IMG = ROOT / "docs" / "img" / "weather_seg_iou_vs_time.png"
RUNS = Path("runs/bench_weather_seg")
TARGET = 0.82  # MLPerf HPC DeepCAM quality target (IoU)
SEEDS = (0, 1, 2)
NPROCS = (1, 2, 4)
GLOBAL_BATCH = 16
EVAL_EVERY = 64
COMMON = ["log.tensorboard=false", "log.progress=false", "log.pictures=false",
          "checkpoint.final=false", "checkpoint.best=false", "train.log_every=1"]
QUICK = ["task.size=16", "task.n_train=32", "task.n_val=8", "train.epochs=2"]
EVENTS = ("cyclone", "river")
CLASSES = ("background", *EVENTS)
# Recipe variants, each a list of overrides of the defaults (seed 0, one process).
VARIANTS: dict[str, list[str]] = {
    # the recipe before this benchmark (2026-11-22): 2-level U-net, weighted CE, 384 steps
    "baseline_2026_11": ["task.depth=2", "task.dice_weight=0", "task.n_train=512",
                         "train.epochs=12"],
    "no_dice": ["task.dice_weight=0"],
    "depth2": ["task.depth=2"],
    "base12": ["task.base=12"],
    "epochs24": ["train.epochs=24"],
    "base12_seed1": ["task.base=12", "train.seed=1"],
    "base12_seed2": ["task.base=12", "train.seed=2"],
    "larc": ["optim.name=larc", "optim.lr=0.05", "optim.momentum=0.9",
             "optim.trust_coefficient=0.02", "optim.warmup_steps=100"],
}


def load() -> float:
    return os.getloadavg()[0]


def train_args(label: str, overrides: list[str], nproc: int) -> list[str]:
    """The ``scidl`` arguments of a run: one torch thread per process (N processes use N
    cores; two threads per process stalled on an overloaded machine, each waiting for the
    other to be scheduled)."""
    return ["train", "weather_seg", "--nproc", str(nproc), *overrides, *COMMON,
            "dist.threads_per_proc=1", f"log.run_dir={RUNS / label}"]


def run_train(label: str, overrides: list[str], nproc: int = 1) -> dict[str, Any]:
    """``scidl train weather_seg`` in a subprocess; its curve and final evaluation."""
    run_dir = RUNS / label
    if run_dir.exists():
        shutil.rmtree(run_dir)
    args = train_args(label, overrides, nproc)
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    load_before, t0 = load(), time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "scidl", *args], env=env, capture_output=True,
                          text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{label}: scidl train failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out = read_run(run_dir, args, overrides, nproc)
    out.update(wall_s=wall, load_before=load_before, load_after=load())
    print(f"  {label}: cyclone {out['final']['cyclone']:.3f} river {out['final']['river']:.3f} "
          f"({out['steps']} steps, {out['train_time_s']:.0f} s training, {wall:.0f} s wall, "
          f"load {load_before:.1f}->{out['load_after']:.1f})", flush=True)
    return out


def read_run(run_dir: Path, args: list[str], overrides: list[str], nproc: int) -> dict[str, Any]:
    """A run folder's record. A run still going (no ``summary.json``) gives its curve so far,
    ``partial: true`` and the IoUs of its last evaluation as ``final``."""
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if line.strip()]
    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        ev, steps, partial = summary["final_eval"], summary["steps"], False
    else:
        evals = [r for r in rows if "eval/iou_cyclone" in r]
        ev = {k[5:]: v for k, v in evals[-1].items() if k.startswith("eval/")}
        steps, partial = int(evals[-1]["step"]), True
    return {"command": "scidl train weather_seg " + " ".join(
                a for a in args[2:] if not a.startswith("log.run_dir")),
            "nproc": nproc, "overrides": overrides, "steps": steps, "partial": partial,
            "recipe": {"task": cfg["task"], "optim": {k: cfg["optim"][k] for k in (
                "name", "lr", "schedule", "min_lr_factor", "warmup_steps")},
                       "epochs": cfg["train"]["epochs"],
                       "global_batch": cfg["train"]["global_batch_size"]},
            "train_time_s": sum(r.get("step_time_s", 0.0) for r in rows
                                if int(r["step"]) <= steps),
            "final": {c: ev[f"iou_{c}"] for c in CLASSES},
            "final_other_decision": {c: v for c, v in ev.items()
                                     if c.startswith(("argmax_iou", "prior_corrected_iou"))},
            "heuristic": {c: ev[f"heuristic_iou_{c}"] for c in CLASSES},
            "curve": curve(rows)}


def curve(rows: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Evaluation points ``{step, train_time_s, iou_*}``; the training time at a step is the
    sum of the step times up to it (every step logged: ``train.log_every=1``)."""
    step_time: dict[int, float] = {}
    for r in rows:
        if "step_time_s" in r:
            step_time[int(r["step"])] = float(r["step_time_s"])
    points, seen = [], set()
    for r in rows:
        if "eval/iou_cyclone" not in r or int(r["step"]) in seen:
            continue
        s = int(r["step"])
        seen.add(s)
        points.append({"step": s, "train_time_s": sum(t for k, t in step_time.items() if k <= s),
                       **{c: float(r[f"eval/iou_{c}"]) for c in CLASSES}})
    return sorted(points, key=lambda p: p["step"])


def time_to_target(points: list[dict[str, float]], target: float = TARGET) -> float | None:
    """Training time of the first evaluation with both event IoUs ≥ ``target``."""
    for p in points:
        if all(p[c] >= target for c in EVENTS):
            return p["train_time_s"]
    return None


def stats(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean, min, max and sample standard deviation of each class's final IoU."""
    out = {}
    for c in CLASSES:
        v = [r["final"][c] for r in runs]
        out[c] = {"mean": statistics.fmean(v), "min": min(v), "max": max(v),
                  "std": statistics.stdev(v) if len(v) > 1 else 0.0}
    return out


def seed_overrides(seed: int) -> list[str]:
    return [f"train.seed={seed}", f"train.global_batch_size={GLOBAL_BATCH}",
            f"train.eval_every={EVAL_EVERY}"]


def bench_seeds(base: list[str], seeds: list[int]) -> dict[str, Any]:
    """One process per seed; the ``main`` merges them with seeds stored by other runs."""
    return {"by_seed": {str(s): run_train(f"seed{s}", base + seed_overrides(s)) for s in seeds}}


def bench_scaling(base: list[str], nprocs: tuple[int, ...]) -> dict[str, Any]:
    """Seed 0 on each process count > 1 (1 process: the ``seeds`` section's seed 0)."""
    return {str(n): run_train(f"nproc{n}", base + seed_overrides(0), nproc=n)
            for n in nprocs if n > 1}


def netcdf_overrides(base: list[str], data_dir: Path) -> list[str]:
    """The files fix size and sample counts; one DataLoader worker reads them."""
    train_ov = [o for o in base if not o.startswith(("task.size", "task.n_train", "task.n_val"))]
    return train_ov + [f"task.data_dir={data_dir}", "train.num_workers=1",
                       f"train.global_batch_size={GLOBAL_BATCH}", f"train.eval_every={EVAL_EVERY}"]


def collect(results: dict[str, Any], base: list[str], nc_base: list[str]) -> dict[str, Any]:
    """Runs with a folder but no record (still going, or stopped) read from their folders
    (``partial: true`` unless finished); the load is the one at collection."""
    wanted: list[tuple[str, str, list[str], int]] = [
        *((f"seed{s}", "seeds", base + seed_overrides(s), 1) for s in SEEDS),
        *((f"nproc{n}", "scaling", base + seed_overrides(0), n) for n in NPROCS if n > 1),
        ("netcdf", "netcdf", netcdf_overrides(nc_base, RUNS / "netcdf_data"), 1)]
    for label, section, ov, nproc in wanted:
        run_dir = RUNS / label
        have = results.get(section, {})
        key = label[4:] if section == "seeds" else label[5:] if section == "scaling" else "run"
        stored = have.get("by_seed" if section == "seeds" else "runs" if section == "scaling"
                          else "x", have).get(key)
        if stored is not None and not stored.get("partial"):
            continue
        if not (run_dir / "metrics.jsonl").is_file():
            continue
        rec = read_run(run_dir, train_args(label, ov, nproc), ov, nproc)
        if not rec["curve"]:
            continue
        rec.update(load_before=load(), load_after=load(), collected=True)
        if section == "seeds":
            results.setdefault("seeds", {}).setdefault("by_seed", {})[key] = rec
        elif section == "scaling":
            results.setdefault("scaling", {}).setdefault("runs", {})[key] = rec
        else:
            results["netcdf"] = {**netcdf_files(run_dir.parent / "netcdf_data", nc_base),
                                 "run": rec, "train_command": rec["command"].replace(
                                     str(RUNS / "netcdf_data"), "DIR")}
        print(f"  collected {label}: step {rec['steps']}, partial {rec['partial']}")
    if "seeds" in results:
        by_seed = results["seeds"]["by_seed"]
        runs = [by_seed[k] for k in sorted(by_seed, key=int)]
        results["seeds"].update(runs=runs, stats=stats(runs), met=all(
            r["final"][c] >= TARGET and not r.get("partial") for r in runs for c in EVENTS))
    return results


def write_args(data_dir: Path, base: list[str]) -> list[str]:
    from scidl.config import load_config

    task = load_config("weather_seg", overrides=base).task_config()
    return ["data", "write-weather", str(data_dir), "--format", "nc", "--n-train",
            str(task.n_train), "--n-val", str(task.n_val), "--size", str(task.size),
            "--seed", "0", "--samples-per-file", "16"]


def netcdf_files(data_dir: Path, base: list[str], write_s: float | None = None) -> dict[str, Any]:
    """What ``write-weather`` wrote (its command, files, channels, samples)."""
    meta = json.loads((data_dir / "meta.json").read_text())
    n_files = len(list((data_dir / "train").glob("*.nc")) + list((data_dir / "val").glob("*.nc")))
    return {"write_command": "scidl " + " ".join(write_args(data_dir, base)).replace(
                str(data_dir), "DIR"),
            "write_s": write_s, "files": n_files, "channels": len(meta["channels"]),
            "n_train": meta["n_train"], "n_val": meta["n_val"]}


def bench_netcdf(base: list[str], quick: bool) -> dict[str, Any]:
    data_dir = RUNS / "netcdf_data"
    if data_dir.exists():
        shutil.rmtree(data_dir)
    write = write_args(data_dir, base)
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "scidl", *write], env=env, check=True,
                   capture_output=True)
    write_s = time.perf_counter() - t0
    run = run_train("netcdf", netcdf_overrides(base, data_dir))
    return {**netcdf_files(data_dir, base, write_s), "run": run,
            "train_command": run["command"].replace(str(data_dir), "DIR")}


def bench_variants(base: list[str], names: list[str]) -> dict[str, Any]:
    """Seed 0 unless the variant names its seed (``train.seed=S``)."""
    out = {}
    for name in names:
        ov = VARIANTS[name]
        seed = next((int(o.split("=")[1]) for o in ov if o.startswith("train.seed=")), 0)
        rest = [o for o in ov if not o.startswith("train.seed=")]
        out[name] = run_train(f"variant_{name}", base + rest + seed_overrides(seed))
    return out


# ----------------------------------------------------------------------------- tables


def _iou(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def _ms(vals: list[float]) -> str:
    """``mean [min–max]``."""
    return f"{statistics.fmean(vals):.3f} [{min(vals):.3f}–{max(vals):.3f}]"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def table_seeds(d: dict[str, Any]) -> str:
    """Final IoU of each seed and mean [min–max] over the finished seeds."""
    if "seeds" not in d:
        return "No seed run is recorded yet."
    s = d["seeds"]
    rows = [[f"seed {i}" + (" (unfinished)" if r.get("partial") else ""),
             *(_iou(r["final"][c]) for c in CLASSES), str(r["steps"]),
             f"{r['train_time_s']:.0f}", f"{r['load_before']:.1f}"]
            for i, r in sorted(s["by_seed"].items(), key=lambda kv: int(kv[0]))]
    done = [r for r in s["runs"] if not r.get("partial")]
    if done:
        rows.append([f"**mean [min–max], {len(done)} finished seeds**",
                     *(_ms([r["final"][c] for r in done]) for c in CLASSES), "", "", ""])
        other = [r["final_other_decision"] for r in done]
        alt = "argmax" if "argmax_iou_cyclone" in other[0] else "prior_corrected"
        rows.append([f"same models, {alt.replace('_', '-')} decision", "–",
                     *(_ms([o[f"{alt}_iou_{c}"] for o in other]) for c in EVENTS), "", "", ""])
    h = s["runs"][0]["heuristic"]
    rows.append(["threshold heuristic (seed 0)" if "0" in s["by_seed"] else "threshold heuristic",
                 *(_iou(h[c]) for c in CLASSES), "", "", ""])
    return _table(["run", "background IoU", "cyclone IoU", "river IoU", "steps",
                   "training time [s]", "load avg"], rows)


def verdict(d: dict[str, Any]) -> str:
    """The target line: met or not, per class, with the distance; partial runs named."""
    runs = d.get("seeds", {}).get("runs", [])
    if not runs:
        return "No seed run is recorded yet: `python benchmarks/weather_seg.py seeds` adds them."
    done = [r for r in runs if not r.get("partial")]
    parts = []
    for c in EVENTS:
        v = [r["final"][c] for r in done]
        if not v:
            parts.append(f"{c}: no finished run")
            continue
        ok = min(v) >= TARGET
        parts.append(f"{c} {_ms(v)}: **{'met' if ok else 'not met'}**"
                     + ("" if ok else f" (lowest seed {TARGET - min(v):.3f} below)"))
    if done:
        other = [r["final_other_decision"] for r in done]
        alt = "argmax" if "argmax_iou_cyclone" in other[0] else "prior_corrected"
        alt_parts = []
        for c in EVENTS:
            v = [o[f"{alt}_iou_{c}"] for o in other]
            ok = min(v) >= TARGET
            alt_parts.append(f"{c} {_ms(v)}: {'met' if ok else 'not met'}"
                             + ("" if ok else f" (lowest seed {TARGET - min(v):.3f} below)"))
        parts.append(f"the same models with the {alt.replace('_', '-')} decision: "
                     + ", ".join(alt_parts))
    planned = max(r["recipe"]["epochs"] for r in runs) * (
        runs[0]["recipe"]["task"]["n_train"] // runs[0]["recipe"]["global_batch"])
    line = (f"**Target** (IoU ≥ {TARGET} on both event classes, the MLPerf HPC DeepCAM "
            f"quality target), over {len(done)} finished seed{'s' if len(done) != 1 else ''}: "
            + "; ".join(parts) + ".")
    partial = [f"seed {k} stopped at step {r['steps']} of {planned} (cyclone "
               f"{_iou(r['final']['cyclone'])}, river {_iou(r['final']['river'])} at its last "
               f"evaluation)" for k, r in sorted(d["seeds"]["by_seed"].items()) if r.get("partial")]
    if partial:
        line += " Unfinished: " + "; ".join(partial) + "."
    return line


def table_scaling(d: dict[str, Any]) -> str:
    """Per-class IoU vs training time on 1, 2 and 4 processes."""
    runs = process_runs(d)
    rows = []
    for n, r in sorted(runs.items(), key=lambda kv: int(kv[0])):
        pts = r["curve"]
        mid = pts[len(pts) // 2] if pts else None
        rows.append([n, str(GLOBAL_BATCH // int(n)),
                     str(r["steps"]) + (" (unfinished)" if r.get("partial") else ""),
                     f"{r['train_time_s']:.0f}", f"{r['train_time_s'] / r['steps'] * 1e3:.0f}",
                     "–" if mid is None else f"{_iou(mid['cyclone'])} / {_iou(mid['river'])} "
                                             f"(step {mid['step']})",
                     f"{_iou(r['final']['cyclone'])} / {_iou(r['final']['river'])}",
                     "not reached" if time_to_target(pts) is None else f"{time_to_target(pts):.0f}",
                     f"{r['load_before']:.1f} → {r['load_after']:.1f}"])
    return _table(["processes", "batch per rank", "steps", "training time [s]", "ms / step",
                   "cyclone / river IoU, mid-run", "cyclone / river IoU, final",
                   f"training time to ≥ {TARGET} on both [s]", "load avg before → after"], rows)


def process_runs(d: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Seed 0's run per process count (1: the ``seeds`` section's)."""
    one = d.get("seeds", {}).get("by_seed", {}).get("0")
    return {**({"1": one} if one else {}), **d.get("scaling", {}).get("runs", {})}


def table_netcdf(d: dict[str, Any]) -> str:
    if "netcdf" not in d:
        return ("No run from netCDF files is recorded yet: `python benchmarks/weather_seg.py "
                "netcdf` adds it.")
    n = d["netcdf"]
    r = n["run"]
    rows = [["write the files", f"`{n['write_command']}`",
             f"{n['files']} files, {n['channels']} channels, {n['n_train']} + {n['n_val']} "
             "samples" + ("" if n["write_s"] is None else f", {n['write_s']:.0f} s")],
            ["train from them", f"`{n['train_command']}`",
             f"IoU background {_iou(r['final']['background'])}, cyclone "
             f"{_iou(r['final']['cyclone'])}, river {_iou(r['final']['river'])} "
             f"({r['steps']} steps, {r['train_time_s']:.0f} s training)"]]
    return _table(["step", "command", "result"], rows)


def table_variants(d: dict[str, Any]) -> str:
    """Each variant's final IoUs (both decisions), then the seeds of a variant run on
    several seeds (``NAME``, ``NAME_seed1``, ...) as mean [min–max] against the target."""
    var = d.get("variants", {})

    def seed_of(r: dict[str, Any]) -> str:
        return next((o.split("=")[1] for o in r["overrides"] if o.startswith("train.seed=")), "0")

    rows = [[name, " ".join(f"`{o}`" for o in r["overrides"] if not o.startswith(
                ("train.global_batch_size", "train.eval_every", "train.seed"))) or "(defaults)",
             seed_of(r), *(_iou(r["final"][c]) for c in EVENTS),
             *(_iou(r["final_other_decision"].get(f"argmax_iou_{c}")) for c in EVENTS),
             str(r["steps"]), f"{r['train_time_s']:.0f}", f"{r['load_before']:.1f}"]
            for name, r in var.items()]
    for name in [n for n in var if f"{n}_seed1" in var]:
        group = [var[name], *(var[k] for k in var if k.startswith(f"{name}_seed"))]
        cells = []
        for key in ("final", "argmax"):
            for c in EVENTS:
                v = [r["final"][c] if key == "final" else r["final_other_decision"][
                    f"argmax_iou_{c}"] for r in group]
                cells.append(_ms(v) + (" ✓" if min(v) >= TARGET else " ✗"))
        rows.append([f"**{name}, {len(group)} seeds: mean [min–max]** (✓: every seed ≥ {TARGET})",
                     "", "", *cells, "", "", ""])
    return _table(["variant", "overrides", "seed", "cyclone IoU", "river IoU",
                   "cyclone IoU (argmax)", "river IoU (argmax)", "steps", "training time [s]",
                   "load avg"], rows)


def plot(d: dict[str, Any], path: Path = IMG) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = process_runs(d)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, c in zip(axes, EVENTS, strict=True):
        for n, r in sorted(runs.items(), key=lambda kv: int(kv[0])):
            pts = r["curve"]
            ax.plot([p["train_time_s"] for p in pts], [p[c] for p in pts], marker="o", ms=3,
                    label=f"{n} process{'es' if n != '1' else ''}")
        ax.axhline(TARGET, ls="--", c="gray", lw=0.8, label=f"target {TARGET}")
        ax.set(title=f"{c} IoU (held-out)", xlabel="training time [s]")
    axes[0].set_ylabel("IoU")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("which", nargs="*",
                    help="sections: seeds scaling netcdf variants collect (default: the first 3)")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--nprocs", nargs="*", type=int, default=list(NPROCS))
    ap.add_argument("--seeds", nargs="*", type=int, default=list(SEEDS))
    ap.add_argument("--netcdf-overrides", nargs="*", default=[],
                    help="overrides of the netCDF run (task.n_train: samples written)")
    ap.add_argument("--quick", action="store_true", help="tiny budgets (smoke run)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--plot-only", action="store_true")
    args = ap.parse_args(argv)
    args.which = args.which or ["seeds", "scaling", "netcdf"]
    bad = set(args.which) - {"seeds", "scaling", "netcdf", "variants", "collect"}
    if bad:
        ap.error(f"unknown sections {sorted(bad)}")
    if args.plot_only:
        plot(json.loads(args.out.read_text()), IMG if args.out == OUT else args.out.with_suffix(".png"))
        return 0
    base = QUICK if args.quick else []
    command = "python benchmarks/weather_seg.py " + " ".join(sys.argv[1:] if argv is None else argv)
    import torch

    for name in args.which:
        print(f"## {name}", flush=True)
        if name == "collect":
            results = json.loads(args.out.read_text()) if args.out.is_file() else {}
            args.out.write_text(json.dumps(collect(results, base, base + args.netcdf_overrides),
                                           indent=1) + "\n")
            continue
        if name == "seeds":
            res = bench_seeds(base, args.seeds)
        elif name == "scaling":
            res = bench_scaling(base, tuple(args.nprocs))
        elif name == "netcdf":
            res = bench_netcdf(base + args.netcdf_overrides, args.quick)
        else:
            res = bench_variants(base, args.variants)
        res_meta = {"command": command, "quick": args.quick, "torch": torch.__version__,
                    "python": platform.python_version(), "cpus": os.cpu_count(),
                    "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        # merge into what is there now (sections may run in separate processes)
        results = json.loads(args.out.read_text()) if args.out.is_file() else {}
        if name == "variants":
            results.setdefault("variants", {}).update(res)
            results.setdefault("meta", {})["variants"] = res_meta
        elif name == "seeds":  # seeds run by other processes meanwhile stay
            by_seed = {**results.get("seeds", {}).get("by_seed", {}), **res["by_seed"]}
            runs = [by_seed[k] for k in sorted(by_seed, key=int)]
            results["seeds"] = {"by_seed": by_seed, "runs": runs, "stats": stats(runs),
                                "met": all(r["final"][c] >= TARGET for r in runs for c in EVENTS),
                                "meta": res_meta}
        elif name == "scaling":  # runs of other process counts stay
            runs = {**results.get("scaling", {}).get("runs", {}), **res}
            results["scaling"] = {"runs": runs, "cores": os.cpu_count(), "meta": res_meta}
        else:
            results[name] = {**res, "meta": res_meta}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    results = json.loads(args.out.read_text())
    if process_runs(results):
        print(verdict(results), table_seeds(results), table_scaling(results), sep="\n\n")
        plot(results, IMG if args.out == OUT else args.out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
