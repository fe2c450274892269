"""Experiments behind docs/workloads/{noisy_labels,cgan_per_label}.md and docs/topology.md.

    python benchmarks/workloads_cgan_noisy_topology.py                      # all sections
    python benchmarks/workloads_cgan_noisy_topology.py --only noisy --seeds 3
    python benchmarks/workloads_cgan_noisy_topology.py --only cgan --steps 300
    python benchmarks/workloads_cgan_noisy_topology.py --only topology
    python benchmarks/workloads_cgan_noisy_topology.py --only cgan_budget --steps 200 --hidden 64

Writes benchmarks/results/workloads_cgan_noisy_topology.json (sections merged into the existing file)
and PNGs under docs/img/. Training goes through ``scidl.run`` (one in-process rank) except
the per-label GAN runner, which spawns gloo processes itself.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "workloads_cgan_noisy_topology.json"
IMG = ROOT / "docs" / "img"
RATES = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]


def _meta() -> dict[str, Any]:
    return {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "load_avg_1min": os.getloadavg()[0],
        "machine": platform.machine(),
    }


def _run(workload: str, overrides: list[str], root: str) -> dict[str, Any]:
    """One in-process run through the trainer; returns its summary."""
    from scidl.config import load_config
    from scidl.train.api import run

    base = [f"log.root={root}", "log.tensorboard=false", "log.progress=false", "dist.nproc=1",
            "checkpoint.final=false"]
    return run(load_config(workload, overrides=base + overrides)).summary


# ----------------------------------------------------------------------------- noisy labels


def _noisy_f1(kind: str, noise: float, seed: int, epochs: int, engine: str, root: str) -> float:
    if engine == "trainer":
        summ = _run("noisy_labels", [f"task.kind={kind}", f"task.noise={noise}",
                                     f"train.seed={seed}", f"train.epochs={epochs}"], root)
        return float(summ["final_eval"]["macro_f1"])
    from scidl.workloads.base import BuildContext
    from scidl.workloads.noisy_labels.sweep import fit_direct
    from scidl.workloads.noisy_labels.workload import NoisyLabels, NoisyLabelsConfig

    torch.manual_seed(seed)  # as the trainer does before build
    task = NoisyLabels().build(NoisyLabelsConfig(kind=kind, noise=noise), BuildContext(seed=seed))
    return fit_direct(task, epochs, batch_size=32, lr=1e-3, seed=seed)["macro_f1"]


def _noisy_batched(kind: str, seeds: int, epochs: int) -> list[float]:
    """All (seed, rate) runs of one task kind trained together by ``fit_batched``."""
    from scidl.workloads.base import BuildContext
    from scidl.workloads.noisy_labels.sweep import fit_batched
    from scidl.workloads.noisy_labels.workload import NoisyLabels, NoisyLabelsConfig

    tasks, order = [], []
    for s in range(seeds):
        for r in RATES:
            torch.manual_seed(s)  # as the trainer does before build
            tasks.append(NoisyLabels().build(NoisyLabelsConfig(kind=kind, noise=r),
                                             BuildContext(seed=s)))
            order.append(s)
    res = fit_batched(tasks, kind, epochs, batch_size=32, lr=1e-3, seeds=order)
    return [r["macro_f1"] for r in res]


def noisy(seeds: int, root: str, engine: str) -> dict[str, Any]:
    from scidl.workloads.noisy_labels.sweep import knee, tolerated_noise

    out: dict[str, Any] = {"rates": RATES, "seeds": list(range(seeds)), "engine": engine,
                           "curves": {}}
    settings = [("binary", 10), ("multiclass", 10), ("multilabel", 10), ("binary", 5), ("binary", 30)]
    for kind, epochs in settings:
        f1 = np.zeros((seeds, len(RATES)))
        t0 = time.perf_counter()
        if engine == "batched":
            f1[:] = np.array(_noisy_batched(kind, seeds, epochs)).reshape(seeds, len(RATES))
        else:
            for s in range(seeds):
                for j, r in enumerate(RATES):
                    f1[s, j] = _noisy_f1(kind, r, s, epochs, engine, root)
        mean = f1.mean(0)
        drop = mean[0] - mean
        key = f"{kind}@{epochs}ep"
        out["curves"][key] = {
            "kind": kind, "epochs": epochs, "f1": f1.tolist(), "mean": mean.tolist(),
            "std": f1.std(0).tolist(), "drop": drop.tolist(), "knee": knee(RATES, mean),
            "tolerated_noise_at_0.05_drop": tolerated_noise(RATES, drop, 0.05),
            "wall_s": time.perf_counter() - t0,
        }
        print(f"{key:18s} F1 {np.round(mean, 3)}  drop@10% {drop[1]:.4f} drop@20% {drop[2]:.4f}"
              f"  knee {knee(RATES, mean):.1f}", flush=True)
        _save("noisy_partial", out)  # a long sweep keeps what it has
    _plot_noisy(out)
    return out


def _plot_noisy(out: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
    for i, kind in enumerate(["binary", "multiclass", "multilabel"]):
        for c in out["curves"].values():
            if c["kind"] != kind:
                continue
            m, s = np.array(c["mean"]), np.array(c["std"])
            ax[i].errorbar(out["rates"], m, yerr=s, marker="o", capsize=3,
                           label=f"{c['epochs']} epochs (knee {c['knee']:.1f})")
            if c["epochs"] == 10:
                ax[i].axvline(c["knee"], ls=":", c="gray")
        ax[i].set_title(kind)
        ax[i].set_xlabel("fraction of corrupted training labels")
        ax[i].legend(fontsize=8)
        ax[i].grid(alpha=0.3)
    ax[0].set_ylabel("macro-F1 on clean test labels")
    fig.tight_layout()
    IMG.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG / "noisy_labels_curves.png", dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- per-label GAN


def cgan(steps: int, repeats: int, hidden: int) -> dict[str, Any]:
    from scidl.workloads.cgan_per_label.data import load_images
    from scidl.workloads.cgan_per_label.dist import (
        PerLabelRunConfig,
        run_per_label,
        train_conditional,
    )
    from scidl.workloads.cgan_per_label.metrics import sample, sample_metrics, train_classifier
    from scidl.workloads.cgan_per_label.nets import GANPair
    from scidl.workloads.cgan_per_label.workload import CGANConfig, save_grid

    spec = PerLabelRunConfig(model=CGANConfig(hidden=hidden), steps=steps)
    m = spec.model
    Xtr, ytr, Xte, _ = load_images(spec.seed, m.test_fraction, m.labels)
    clf = train_classifier(Xtr, ytr, spec.seed, m.classifier_steps)
    res = run_per_label(spec, nproc=2)
    cond, cond_s = train_conditional(spec)
    n = m.eval_per_label
    real = torch.stack([Xtr[ytr == lab][:n] for lab in m.labels])  # real images, per label
    imgs = {
        "per_label": sample(res.generators, m.labels, n, m.z_dim, 1),
        "conditional": sample(cond, m.labels, n, m.z_dim, 1),
    }
    table = {k: sample_metrics(v, m.labels, clf, Xte) for k, v in imgs.items()}
    table["real_train"] = sample_metrics(real, m.labels, clf, Xte)
    table["per_label"].update(train_s=res.train_s, nproc=2, generator_updates=steps * len(m.labels))
    table["conditional"].update(train_s=cond_s, nproc=1, generator_updates=steps * len(m.labels))
    table["conditional"]["parameters"] = sum(p.numel() for p in cond.parameters())
    table["per_label"]["parameters"] = len(m.labels) * sum(
        p.numel() for p in GANPair(m.z_dim, m.hidden).parameters()
    )
    for k, v in table.items():
        print(f"{k:12s} " + "  ".join(f"{a} {b:.4g}" for a, b in v.items()), flush=True)
    IMG.mkdir(parents=True, exist_ok=True)
    save_grid(real[:, :12], IMG / "cgan_per_label_real.png", "real training digits")
    save_grid(imgs["per_label"][:, :12], IMG / "cgan_per_label_per_label.png",
              "per-label GANs (2 ranks)")
    save_grid(imgs["conditional"][:, :12], IMG / "cgan_per_label_conditional.png",
              "conditional GAN (same budget)")
    return {"steps_per_label": steps, "table": table, "hidden": hidden,
            "weak_scaling": weak(steps, repeats, hidden)}


def cgan_budget(steps: int, hidden: int, factor: int) -> dict[str, Any]:
    """The conditional GAN with ``factor`` × the per-label budget: is it slow or broken?"""
    from scidl.workloads.cgan_per_label.data import load_images
    from scidl.workloads.cgan_per_label.dist import PerLabelRunConfig, train_conditional
    from scidl.workloads.cgan_per_label.metrics import sample, sample_metrics, train_classifier
    from scidl.workloads.cgan_per_label.workload import CGANConfig

    spec = PerLabelRunConfig(model=CGANConfig(hidden=hidden), steps=steps * factor)
    m = spec.model
    Xtr, ytr, Xte, _ = load_images(spec.seed, m.test_fraction, m.labels)
    clf = train_classifier(Xtr, ytr, spec.seed, m.classifier_steps)
    cond, cond_s = train_conditional(spec)
    row = sample_metrics(sample(cond, m.labels, m.eval_per_label, m.z_dim, 1), m.labels, clf, Xte)
    row.update(train_s=cond_s, generator_updates=spec.steps * len(m.labels), factor=factor)
    print(f"conditional x{factor} " + "  ".join(f"{a} {b:.4g}" for a, b in row.items()), flush=True)
    return row


def weak(steps: int, repeats: int, hidden: int, per_rank: int = 2) -> dict[str, Any]:
    """Same pairs per rank on 1 and 2 processes, interleaved repeats; median loop seconds."""
    from scidl.workloads.cgan_per_label.dist import PerLabelRunConfig, run_per_label
    from scidl.workloads.cgan_per_label.workload import CGANConfig

    times: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(repeats):
        for p in (1, 2):
            labels = list(range(per_rank * p))
            spec = PerLabelRunConfig(model=CGANConfig(labels=labels, hidden=hidden), steps=steps)
            times[p].append(run_per_label(spec, nproc=p).train_s)
    med = {p: statistics.median(t) for p, t in times.items()}
    out = {"pairs_per_rank": per_rank, "steps": steps, "train_s": times,
           "median_s": med, "efficiency": med[1] / med[2]}
    print(f"weak scaling: median {med[1]:.2f}s (1 proc) vs {med[2]:.2f}s (2 procs), "
          f"efficiency {out['efficiency']:.2f}", flush=True)
    return out


# ----------------------------------------------------------------------------- topology


def topology(root: str, burgers_steps: int) -> dict[str, Any]:
    from scidl.analysis.topology import describe_cell, morse_smale, plot_morse_smale

    counts = {"0.1": [], "auto": []}
    for seed in range(10):
        X, f = _four_bumps(seed)
        for key, p in (("0.1", 0.1), ("auto", None)):
            counts[key].append(len(morse_smale(X, f, k=10, persistence=p).maxima))
        if seed == 0:
            raw = len(morse_smale(X, f, k=10, persistence=0.0).maxima)
            ms = morse_smale(X, f, k=10, persistence=0.1)
            plot_morse_smale(X, f, ms, IMG / "topology_bumps.png", ("x0", "x1"),
                             "4 planted bumps + noise (σ = 0.05)")
    print(f"4 bumps: maxima after simplification {counts} (seed 0 raw: {raw})", flush=True)
    burg = _burgers_error(root, burgers_steps)
    X, err = burg.pop("X"), burg.pop("err")
    ms = morse_smale(X, err, k=10, persistence=0.1)
    w = ms.worst()
    top = np.argsort(err)[-len(err) // 100 :]  # worst 1% of the samples
    in_worst = float(np.mean(ms.cell[top] == w.cell))
    burg.update(
        n_cells=len(ms.cells), n_maxima=len(ms.maxima), worst=w.__dict__,
        worst_text=describe_cell(w, ["x", "t"]), top1pct_in_worst_cell=in_worst,
        hot_box_contains_shock_line=bool(w.hot_lo[0] <= 0.0 <= w.hot_hi[0]),
        shock_formation_t=1 / np.pi,  # breaking time of u0 = -sin(pi x)
        cells=[c.__dict__ for c in sorted(ms.cells, key=lambda c: -c.mean)[:6]],
    )
    plot_morse_smale(X, err, ms, IMG / "topology_burgers.png", ("x", "t"),
                     f"|error| of a Burgers PINN after {burgers_steps} Adam steps")
    print(f"burgers: rel_l2 {burg['rel_l2']:.3g}; worst cell {burg['worst_text']}; "
          f"top-1% errors in it: {in_worst:.2f}", flush=True)
    return {"four_bumps": {"seeds": 10, "n": 1500, "noise_sigma": 0.05,
                           "maxima_after_simplification": counts, "raw_maxima_seed0": raw},
            "burgers": burg}


def _four_bumps(seed: int, n: int = 1500) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 1, (n, 2))
    centres = [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]
    f = sum(h * np.exp(-np.sum((X - np.array(c)) ** 2, 1) / (2 * 0.08**2))
            for h, c in zip([1.0, 0.8, 0.9, 0.7], centres, strict=True))
    return X, f + 0.05 * rng.standard_normal(n)


def _burgers_error(root: str, steps: int) -> dict[str, Any]:
    """Train the burgers PINN briefly through the trainer; |error| on its reference grid."""
    from scidl.config import load_config
    from scidl.train.api import run
    from scidl.workloads import BuildContext, get_workload

    over = [f"log.root={root}", "log.tensorboard=false", "log.progress=false", "dist.nproc=1",
            "train.phases=none",
            f"train.max_steps={steps}", "train.eval_every=0", "task.rar_every=0",
            "task.n_collocation=2000", "task.ref_nx=101", "task.ref_nt=101",
            "checkpoint.every_steps=0", "checkpoint.final=false"]
    cfg = load_config("burgers", overrides=over)
    box: dict[str, Any] = {}

    def factory(ctx: BuildContext) -> Any:  # keep the task: in-process, the model trains in place
        box["task"] = get_workload("burgers").build(cfg.task_config(), ctx)
        return box["task"]

    t0 = time.perf_counter()
    summ = run(cfg, task_factory=factory).summary
    task = box["task"]
    val = task.val_data
    with torch.no_grad():
        err = (task.model.cpu()(val["xt"]).reshape(-1) - val["u"]).abs().numpy()
    return {"steps": steps, "rel_l2": summ["final_eval"]["rel_l2"], "wall_s": time.perf_counter() - t0,
            "grid": [101, 101], "X": val["xt"].numpy(), "err": err}


def _save(part: str, res: dict[str, Any] | None) -> None:
    """Merge one section into the results file (re-read first: parallel runs may write too)."""
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if res is None:
        results.pop(part, None)
    else:
        results[part] = res
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(results, indent=2, default=float))
    tmp.replace(RESULTS)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="noisy,cgan,topology")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=300, help="GAN steps per label pair")
    ap.add_argument("--hidden", type=int, default=128, help="GAN hidden width")
    ap.add_argument("--engine", choices=["batched", "direct", "trainer"], default="batched",
                    help="noisy sweep: all runs of a kind in one batched loop (identical "
                    "results to 'direct', tested), one plain loop per run, or scidl.run per run")
    ap.add_argument("--repeats", type=int, default=3, help="weak-scaling repeats")
    ap.add_argument("--burgers-steps", type=int, default=600)
    a = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as root:
        for part in a.only.split(","):
            t0 = time.perf_counter()
            if part == "noisy":
                res = noisy(a.seeds, root, a.engine)
            elif part == "cgan":
                res = cgan(a.steps, a.repeats, a.hidden)
            elif part == "cgan_budget":
                res = cgan_budget(a.steps, a.hidden, 4)
            elif part == "topology":
                res = topology(root, a.burgers_steps)
            else:
                raise SystemExit(f"unknown section {part!r}; choices: noisy, cgan, cgan_budget, topology")
            res["meta"] = _meta() | {"section_wall_s": time.perf_counter() - t0}
            _save(part, res)
            if part == "noisy":
                _save("noisy_partial", None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
