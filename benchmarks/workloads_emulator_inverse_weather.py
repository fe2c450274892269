"""Result tables of the ``emulator``, ``inverse`` and ``weather_seg`` workloads.

Every model is trained through the trainer (``scidl.run``, one process, so the trained
model can be timed side by side afterwards); timings of line-by-line, lookup tables and
networks are interleaved repeats in one process (median). Writes
``benchmarks/results/workloads_emulator_inverse_weather.json`` (one key per workload, merged with what is
already there) and prints markdown tables.

    python benchmarks/workloads_emulator_inverse_weather.py [emulator] [inverse] [weather_seg] [--quick]
    python benchmarks/workloads_emulator_inverse_weather.py --plot-only   # redraw docs/img/*.png
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from scidl.config import load_config
from scidl.train.api import run
from scidl.workloads import BuildContext, Task, get_workload

OUT = Path(__file__).parent / "results" / "workloads_emulator_inverse_weather.json"
ONLY = ""  # --only: run only the variants whose name contains this text
LOG = ["log.root=runs/bench_emulator_inverse_weather", "log.tensorboard=false", "log.progress=false",
       "checkpoint.final=false"]


class Capture:
    """``task_factory`` that builds the workload's task and keeps it (in-process runs)."""

    def __init__(self, name: str, task_cfg: Any) -> None:
        self.name, self.task_cfg = name, task_cfg
        self.task: Task | None = None

    def __call__(self, ctx: BuildContext) -> Task:
        self.task = get_workload(self.name).build(self.task_cfg, ctx)
        return self.task


def train(name: str, overrides: list[str]) -> tuple[Task, dict[str, Any]]:
    """Train one config through ``scidl.run``; returns the trained task and the summary."""
    cfg = load_config(name, overrides=overrides + LOG)
    cap = Capture(name, cfg.task_config())
    t0 = time.perf_counter()
    res = run(cfg, task_factory=cap)
    s = res.summary
    print(f"  {name} {' '.join(overrides)}: {s['headline']}={s['headline_value']:.4g} "
          f"({s['steps']} steps, {time.perf_counter() - t0:.0f} s)", flush=True)
    assert cap.task is not None
    return cap.task, {"overrides": overrides, "steps": s["steps"], "wall_s": s["wall_s"],
                      "final_eval": s["final_eval"], "run_dir": str(res.run_dir)}


def _train_or_load(name: str, variant: str, overrides: list[str]) -> tuple[Task, dict[str, Any]]:
    """Train once and keep the weights (so runs can be split over processes with --only and
    timed side by side afterwards); later calls load them."""
    slug = "".join(c if c.isalnum() else "_" for c in variant)
    path = Path("runs/bench_emulator_inverse_weather/models") / f"{name}_{slug}.pt"
    if path.is_file():
        saved = torch.load(path, weights_only=False)
        cfg = load_config(name, overrides=overrides + LOG)
        task = get_workload(name).build(cfg.task_config(), BuildContext(
            seed=cfg.train.seed, data_dir=Path("runs/bench_emulator_inverse_weather/.data")))
        task.model.load_state_dict(saved["state"])
        return task, saved["info"]
    task, info = train(name, overrides)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state": task.model.state_dict(), "info": info}, path)
    return task, info


# ----------------------------------------------------------------------------- emulator


def bench_emulator(quick: bool) -> dict[str, Any]:
    from scidl.workloads.emulator.lbl import LookupTable, lbl_optical_depth, make_spectroscopy
    from scidl.workloads.emulator.workload import (
        make_emulator_data,
        relative_errors,
        time_per_column,
    )

    base = ["task.time_columns=0"] + (["train.epochs=3", "task.n_train=20"] if quick else [])
    variants = {
        "net 1x[64,64] (one network)": ["task.hidden=[64,64]", "task.split_pressure_hpa=null"],
        "net 2x[16,16]": ["task.hidden=[16,16]"],
        "net 2x[32,32]": ["task.hidden=[32,32]"],
        "net 2x[64,64]": ["task.hidden=[64,64]"],
    }
    if quick:
        variants = dict(list(variants.items())[:2])
    variants = {k: v for k, v in variants.items() if ONLY in k}
    trained = {k: _train_or_load("emulator", k, base + v) for k, v in variants.items()}
    cfg = load_config("emulator", overrides=base).task_config()
    data = make_emulator_data(cfg, seed=0, cache=Path("runs/bench_emulator_inverse_weather/.data"))
    spec = make_spectroscopy(0, cfg.n_lines, cfg.n_wavenumbers, cfg.n_bands)
    x, tau = data["x_val"], data["tau_val"]
    n_cols = x.shape[0] // cfg.layers_per_column
    fine_shape = (16, 12, 12, 8)
    luts = {f"LUT {cfg.lut_shape}": LookupTable(spec, cfg.lut_shape),
            f"LUT {fine_shape}": LookupTable(spec, fine_shape)}
    fns = {**luts, **{k: t.model.eval().predict_tau for k, (t, _) in trained.items()}}
    times = time_per_column(fns, x, n_cols, repeats=5 if quick else 21)
    lbl_cols = 2
    lbl_t = time_per_column({"lbl": lambda z: lbl_optical_depth(z, spec)},
                            x[: lbl_cols * cfg.layers_per_column], lbl_cols, repeats=3)["lbl"]
    rows = [{"method": "line-by-line", "median_rel_err": 0.0, "p99_rel_err": 0.0,
             "us_per_column": 1e6 * lbl_t, "size": f"{2 * cfg.n_lines} lines x "
             f"{cfg.n_wavenumbers} wavenumbers"}]
    with torch.no_grad():
        for name, fn in fns.items():
            err = relative_errors(fn(x), tau)
            size = (f"{luts[name].n_entries} entries" if name in luts else
                    f"{sum(p.numel() for p in trained[name][0].model.parameters())} parameters")
            rows.append({"method": name, "median_rel_err": err["median"], "p99_rel_err": err["p99"],
                         "us_per_column": 1e6 * times[name], "size": size})
    lut_t = times[f"LUT {cfg.lut_shape}"]
    for r in rows:
        r["speedup_vs_lut"] = lut_t / (r["us_per_column"] / 1e6)
    print(_table(rows, ["method", "size", "median_rel_err", "p99_rel_err", "us_per_column",
                        "speedup_vs_lut"]))
    return {"rows": rows, "runs": {k: v[1] for k, v in trained.items()},
            "columns_timed": n_cols, "layers_per_column": cfg.layers_per_column}


# ----------------------------------------------------------------------------- inverse


def bench_inverse(quick: bool) -> dict[str, Any]:
    variants = {
        "U-net (supervised)": [],
        "U-net + Jacobian penalty (mu=1e-3)": ["task.jacobian_weight=1e-3"],
        "U-net + model-constrained (lambda=1)": ["task.mc_weight=1.0"],
    }
    sizes = {"full": 1024, "small": 64}
    steps = 20 if quick else 320
    if quick:
        variants = dict(list(variants.items())[:2])
        sizes = {"full": 64, "small": 32}
    variants = {k: v for k, v in variants.items() if ONLY in k}
    rows, runs = [], {}
    for regime, n in sizes.items():
        for name, ov in variants.items():
            _, info = train("inverse", [f"task.n_train={n}", f"train.max_steps={steps}",
                                        "train.epochs=100000", "train.eval_every=100000"] + ov)
            ev = info["final_eval"]
            rows.append({"regime": f"{regime} (n_train={n})", "method": name,
                         "psnr": ev["psnr"], "gain_db": ev["gain_db"],
                         "data_residual_rms": ev["data_residual_rms"]})
            runs[f"{regime}/{name}"] = info
        rows.append({"regime": f"{regime} (n_train={n})", "method": "Tikhonov (alpha tuned)",
                     "psnr": ev["tikhonov_psnr"], "gain_db": 0.0, "data_residual_rms": None})
    print(_table(rows, ["regime", "method", "psnr", "gain_db", "data_residual_rms"]))
    return {"rows": rows, "runs": runs, "steps": steps}


# ----------------------------------------------------------------------------- weather_seg


def bench_weather(quick: bool) -> dict[str, Any]:
    variants = {
        "U-net, weighted CE": ["task.arch=unet"],
        "DeepLab-style, weighted CE": ["task.arch=deeplab"],
        "U-net, unweighted CE": ["task.arch=unet", "task.class_weight_power=0"],
    }
    # the 2026-11-22 recipe (2-level U-net, cross-entropy only, 384 steps); the defaults
    # moved on since (benchmarks/weather_seg.py measures them)
    recipe = ["task.depth=2", "task.base=8", "task.dice_weight=0", "task.decision=prior_corrected",
              "task.n_train=512", "train.epochs=12"]
    base = recipe + (["train.epochs=1", "task.n_train=32", "task.n_val=16"] if quick else [])
    if quick:
        variants = dict(list(variants.items())[:2])
    variants = {k: v for k, v in variants.items() if ONLY in k}
    rows, runs = [], {}
    for name, ov in variants.items():
        _, info = train("weather_seg", base + ov)
        ev = info["final_eval"]
        rows.append({"method": name + ", prior-corrected decision",
                     **{k: ev[f"iou_{k}"] for k in ("background", "cyclone", "river")}})
        if "unweighted" not in name:
            rows.append({"method": name + ", plain argmax", "background": None,
                         **{k: ev[f"argmax_iou_{k}"] for k in ("cyclone", "river")}})
        runs[name] = info
    rows.append({"method": "threshold heuristic (tuned on train)",
                 **{k: ev[f"heuristic_iou_{k}"] for k in ("background", "cyclone", "river")}})
    print(_table(rows, ["method", "background", "cyclone", "river"]))
    return {"rows": rows, "runs": runs}


# ----------------------------------------------------------------------------- helpers


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def plot(results: dict[str, Any], img: Path) -> None:
    """PNG figures for the docs from the JSON results (plus data samples, no training)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img.mkdir(parents=True, exist_ok=True)
    if "emulator" in results:
        rows = results["emulator"]["rows"]
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in rows:
            if r["method"] == "line-by-line":
                continue
            ax.scatter(r["us_per_column"], 100 * r["median_rel_err"],
                       marker="s" if r["method"].startswith("LUT") else "o")
            ax.annotate(r["method"], (r["us_per_column"], 100 * r["median_rel_err"]), fontsize=7)
        ax.axhline(1.5, ls="--", c="gray", lw=0.8)
        ax.set(xscale="log", xlabel="time per column [us] (1 thread)",
               ylabel="median relative error [%]", title="emulator: error vs speed")
        fig.tight_layout()
        fig.savefig(img / "emulator_tradeoff.png", dpi=110)
        plt.close(fig)
    if "inverse" in results:
        from scidl.workloads.inverse.ops import BlurOperator, Tikhonov, tune_alpha
        from scidl.workloads.inverse.workload import InverseConfig, make_inverse_data

        cfg = InverseConfig(n_train=64, n_val=4)
        d = make_inverse_data(cfg, seed=0)
        op = BlurOperator(cfg.size, cfg.blur_sigma)
        tik = Tikhonov(op, tune_alpha(op, d["y_train"], d["u_train"]))(d["y_val"])
        fig, ax = plt.subplots(3, 3, figsize=(6, 6))
        for i in range(3):
            for j, (im, t) in enumerate(((d["u_val"][i], "phantom u"), (d["y_val"][i], "y = Gu + e"),
                                         (tik[i], "Tikhonov"))):
                ax[i, j].imshow(im, cmap="gray", vmin=0, vmax=1)
                ax[i, j].set_axis_off()
                ax[i, j].set_title(t, fontsize=8)
        fig.tight_layout()
        fig.savefig(img / "inverse_samples.png", dpi=100)
        plt.close(fig)
    if "weather_seg" in results:
        from scidl.workloads.weather_seg.data import make_weather

        x, y = make_weather(3, 48, seed=1)
        fig, ax = plt.subplots(3, 4, figsize=(8, 6))
        for i in range(3):
            for j, t in enumerate(("pressure", "moisture", "wind", "label")):
                ax[i, j].imshow(y[i] if j == 3 else x[i, j], cmap="viridis")
                ax[i, j].set_axis_off()
                ax[i, j].set_title(t, fontsize=8)
        fig.tight_layout()
        fig.savefig(img / "weather_seg_samples.png", dpi=100)
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("which", nargs="*", default=["emulator", "inverse", "weather_seg"])
    ap.add_argument("--quick", action="store_true", help="tiny budgets (smoke test)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--plot-only", action="store_true", help="only redraw docs/img PNGs")
    ap.add_argument("--only", default="", help="only variants whose name contains this")
    args = ap.parse_args(argv)
    global ONLY
    ONLY = args.only
    torch.set_num_threads(1)
    img = Path(__file__).parent.parent / "docs" / "img"
    if args.plot_only:
        plot(json.loads(args.out.read_text()), img)
        return 0
    benches = {"emulator": bench_emulator, "inverse": bench_inverse, "weather_seg": bench_weather}
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    for name in args.which:
        print(f"## {name}", flush=True)
        t0 = time.perf_counter()
        res = benches[name](args.quick)
        res["meta"] = {"wall_s": time.perf_counter() - t0, "quick": args.quick,
                       "torch": torch.__version__, "python": platform.python_version(),
                       "machine": platform.machine(), "threads": torch.get_num_threads(),
                       "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        results[name] = res
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1, default=str))
    plot(results, img)
    return 0


if __name__ == "__main__":
    sys.exit(main())
