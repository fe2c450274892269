"""Experiments behind docs/workloads/{ising_vae,alloy_epi,geneexpr_ans}.md.

    python benchmarks/workloads_alloy_ising_geneexpr.py                   # all sections
    python benchmarks/workloads_alloy_ising_geneexpr.py --only ising      # or alloy, geneexpr
    python benchmarks/workloads_alloy_ising_geneexpr.py --only ising --seeds 3

Writes benchmarks/results/workloads_alloy_ising_geneexpr.json (sections merged into the existing file)
and PNGs under docs/img/. Training goes through ``scidl.run`` with one in-process rank; a
``task_factory`` keeps a handle on the task so the trained model can be plotted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "workloads_alloy_ising_geneexpr.json"
IMG = ROOT / "docs" / "img"


def _meta() -> dict[str, Any]:
    return {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(["python", "benchmarks/" + Path(sys.argv[0]).name, *sys.argv[1:]]),
        "python": platform.python_version(), "torch": torch.__version__,
        "numpy": np.__version__, "cpu_count": os.cpu_count(),
        "load_avg_1min": os.getloadavg()[0], "machine": platform.machine(),
    }


class _Keep:
    """task_factory that builds the registered workload and remembers the task."""

    def __init__(self, workload: str, cfg: Any) -> None:
        self.workload, self.cfg = workload, cfg
        self.task: Any = None

    def __call__(self, ctx: Any) -> Any:
        from scidl.workloads import get_workload

        self.task = get_workload(self.workload).build(self.cfg.task_config(), ctx)
        return self.task


def _run(workload: str, overrides: list[str], root: str) -> tuple[dict[str, Any], Any]:
    """One in-process run through the trainer; returns (summary, task with trained model)."""
    from scidl.config import load_config
    from scidl.train.api import run

    base = [f"log.root={root}", "log.tensorboard=false", "log.progress=false", "dist.nproc=1",
            "checkpoint.final=false", "checkpoint.every_steps=1000000"]
    cfg = load_config(workload, overrides=base + overrides)
    keep = _Keep(workload, cfg)
    t0 = time.perf_counter()
    summary = run(cfg, task_factory=keep).summary
    summary["total_wall_s"] = time.perf_counter() - t0  # includes data generation
    keep.task.model.eval()
    return summary, keep.task


def _slim(summary: dict[str, Any]) -> dict[str, Any]:
    keys = ("headline", "headline_value", "final_eval", "final_loss", "steps", "epochs",
            "wall_s", "total_wall_s", "samples_per_s")
    return {k: summary.get(k) for k in keys}


# ----------------------------------------------------------------------------- ising_vae


def ising(seeds: int, root: str) -> dict[str, Any]:
    import matplotlib.pyplot as plt

    from scidl.workloads.ising_vae.workload import order_parameter_curve

    out: dict[str, Any] = {"runs": []}
    curve = None
    for seed in range(seeds):
        summ, task = _run("ising_vae", [f"train.seed={seed}"], root)
        out["runs"].append({"seed": seed, "kl_weight": 4.0, **_slim(summ)})
        if seed == 0:
            curve = order_parameter_curve(task.model, task.val_data)
            val = task.val_data
    summ, _ = _run("ising_vae", ["task.kl_weight=1.0"], root)  # ablation: plain VAE
    out["runs"].append({"seed": 0, "kl_weight": 1.0, **_slim(summ)})
    assert curve is not None
    ev = out["runs"][0]["final_eval"]
    out["curve"] = {k: curve[k].tolist() for k in ("temps", "op", "abs_m", "m2")}

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    t = curve["temps"]
    ax[0].plot(t, curve["op"] / curve["op"].max(), "o-", label="order parameter (latent L1), scaled")
    ax[0].plot(t, curve["abs_m"], "s-", label="⟨|m|⟩")
    ax[0].axvline(ev["tc_onsager"], color="k", ls="--", lw=1, label="T_c (Onsager, L=∞)")
    ax[0].axvline(ev["tc_order_parameter"], color="C0", ls=":", label="T_c from order parameter")
    ax[0].axvline(ev["tc_susceptibility"], color="C2", ls="-.", lw=1, label="χ' peak (L=16)")
    ax[0].set_xlabel("T (J/k_B)")
    ax[0].legend(fontsize=8)
    ax[0].set_title(f"Pearson r = {ev['pearson_abs_m']:.3f}")
    sc = ax[1].scatter(curve["mu"][:, 0], curve["mu"][:, 1], c=val["temps"], s=3, cmap="coolwarm")
    ax[1].plot(*curve["centroid"], "k*", ms=12, label="disordered centroid")
    ax[1].set_xlabel("μ₁")
    ax[1].set_ylabel("μ₂")
    ax[1].legend(fontsize=8)
    fig.colorbar(sc, ax=ax[1], label="T")
    fig.tight_layout()
    fig.savefig(IMG / "ising_vae_order_parameter.png", dpi=110)
    plt.close(fig)
    return out


# ----------------------------------------------------------------------------- alloy_epi


def alloy(seeds: int, root: str) -> dict[str, Any]:
    import matplotlib.pyplot as plt

    from scidl.workloads.alloy_epi.workload import (
        AlloyEPIConfig,
        closed_form_summary,
        coverage,
        make_problem,
        shell_scan,
    )

    cfg = AlloyEPIConfig()
    prob = make_problem(cfg, 0)
    rows = shell_scan(prob, cfg.max_shells)
    scan = [{k: v for k, v in r.items() if k != "fit"} for r in rows]
    out: dict[str, Any] = {"config": cfg.model_dump(), "shell_scan": scan,
                           "closed_form": closed_form_summary(prob, cfg.max_shells)}
    # calibration of the posterior std over independent problems (truth redrawn per seed)
    zs = []
    for seed in range(max(seeds, 1) * 10):
        p = make_problem(AlloyEPIConfig(n_test=10), seed)
        fit = shell_scan(p, cfg.true_shells)[-1]["fit"]
        zs.append((fit.coef - p.epi.ravel()) / fit.std)
    z = np.concatenate(zs)
    out["calibration"] = {"problems": len(zs), "coefficients": int(z.size),
                          "within_1sigma": float(np.mean(np.abs(z) <= 1)),
                          "within_2sigma": float(np.mean(np.abs(z) <= 2)),
                          "z_rms": float(np.sqrt(np.mean(z**2)))}
    out["coverage_seed0_true_shells"] = coverage(rows[cfg.true_shells - 1]["fit"], prob,
                                                 cfg.true_shells)
    # learning curve: a larger pool, nested subsets, BIC choice at every size
    big = make_problem(AlloyEPIConfig(n_train=1600), 0)
    curve = []
    for n in (25, 50, 100, 200, 400, 800, 1600):
        r = shell_scan(big, cfg.max_shells, n_train=n)
        best = min(r, key=lambda x: x["bic"])
        curve.append({"n_train": n, "bic_shells": best["shells"],
                      "rmse_ratio_bic": best["test_rmse"] / cfg.noise_std,
                      "rmse_ratio_true": r[cfg.true_shells - 1]["test_rmse"] / cfg.noise_std})
    out["learning_curve"] = curve
    summ, _ = _run("alloy_epi", [], root)
    out["network"] = _slim(summ)

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    s = [r["shells"] for r in scan]
    ax[0].plot(s, [r["bic"] for r in scan], "o-", color="C0")
    ax[0].set_xlabel("shells in the model")
    ax[0].set_ylabel("BIC", color="C0")
    ax[0].axvline(cfg.true_shells, color="k", ls="--", lw=1, label="true shells")
    ax2 = ax[0].twinx()
    ax2.plot(s, [r["test_rmse"] / cfg.noise_std for r in scan], "s-", color="C1")
    ax2.set_ylabel("test RMSE / σ_noise", color="C1")
    ax[0].legend(fontsize=8)
    n = [c["n_train"] for c in curve]
    ax[1].semilogx(n, [c["rmse_ratio_bic"] for c in curve], "o-", label="BIC-selected shells")
    ax[1].semilogx(n, [c["rmse_ratio_true"] for c in curve], "s--", label="true shells")
    ax[1].axhline(1.2, color="k", ls=":", lw=1, label="target 1.2")
    ax[1].set_xlabel("training configurations")
    ax[1].set_ylabel("test RMSE / σ_noise")
    ax[1].set_ylim(0.9, 3.0)
    ax[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(IMG / "alloy_epi_bic_learning_curve.png", dpi=110)
    plt.close(fig)
    return out


# ----------------------------------------------------------------------------- geneexpr_ans


def _node_hist_plot(task: Any, pair: list[str], path: Path) -> None:
    import matplotlib.pyplot as plt

    from scidl.analysis.saliency import saliency_report
    from scidl.workloads.geneexpr_ans.workload import encode

    val = task.extras["val"]
    codes = encode(task.model, task.val_data)
    a, b = val.pair_mask(pair[0]), val.pair_mask(pair[1])
    keep = a | b
    rep = saliency_report(codes[keep], a[keep])
    top = rep["order"][:3]
    fig, ax = plt.subplots(1, 4, figsize=(14, 3))
    edges = np.linspace(0, 1, 11)
    for k, j in enumerate(top):
        ax[k].hist(codes[a, j], edges, alpha=0.6, label=pair[0])
        ax[k].hist(codes[b, j], edges, alpha=0.6, label=pair[1])
        ax[k].set_title(f"node {j}: SNS {rep['sns'][j]:.3f}, AUC {rep['auc'][j]:.3f}", fontsize=9)
        ax[k].set_xlabel("activation")
    ax[0].legend(fontsize=8)
    ax[3].scatter(rep["sns"], rep["auc"], s=12)
    ax[3].set_xlabel("SNS (bits, lower = better)")
    ax[3].set_ylabel("node AUC")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _tsne_plot(task: Any, path: Path) -> float:
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    from scidl.workloads.geneexpr_ans.workload import encode

    val = task.extras["val"]
    t0 = time.perf_counter()
    views = {"AE latent (sigmoid nodes)": encode(task.model, task.val_data),
             "PCA components": task.extras["pcs"]}
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.5))
    for k, (title, feats) in enumerate(views.items()):
        emb = TSNE(n_components=2, perplexity=30, init="pca", random_state=0).fit_transform(feats)
        for c, name in enumerate(val.classes):
            m = val.y == c
            ax[k].scatter(emb[m, 0], emb[m, 1], s=6, label=name,
                          marker="o" if name.endswith("normal") or "digit" in name else "x")
        ax[k].set_title(f"t-SNE of {title}")
        ax[k].set_xticks([])
        ax[k].set_yticks([])
    ax[1].legend(fontsize=6, ncol=2, markerscale=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return time.perf_counter() - t0


def geneexpr(seeds: int, root: str) -> dict[str, Any]:
    out: dict[str, Any] = {"synthetic": [], "digits": None}
    for seed in range(seeds):
        summ, task = _run("geneexpr_ans", [f"train.seed={seed}"], root)
        out["synthetic"].append({"seed": seed, **_slim(summ)})
        if seed == 0:
            for i, pair in enumerate(task.extras["pairs"]):
                _node_hist_plot(task, pair, IMG / f"geneexpr_ans_top_nodes_pair{i}.png")
            out["tsne_s"] = _tsne_plot(task, IMG / "geneexpr_ans_tsne.png")
    summ, task = _run("geneexpr_ans", ["task.dataset=digits", "task.latent=16",
                                       "task.hidden=128", "train.epochs=30"], root)
    out["digits"] = _slim(summ)
    _node_hist_plot(task, task.extras["pairs"][0], IMG / "geneexpr_ans_digits_top_nodes.png")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["ising", "alloy", "geneexpr"], action="append")
    ap.add_argument("--seeds", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    IMG.mkdir(parents=True, exist_ok=True)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    sections = {"ising": ising, "alloy": alloy, "geneexpr": geneexpr}
    with tempfile.TemporaryDirectory() as root:
        for name in args.only or list(sections):
            t0 = time.perf_counter()
            res = sections[name](args.seeds, root)
            res["meta"] = _meta()
            res["section_wall_s"] = time.perf_counter() - t0
            results[name] = res
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(results, indent=1, default=float))
            print(name, json.dumps({k: v for k, v in res.items() if k not in ("curve",)},
                                   default=float)[:3000], flush=True)


if __name__ == "__main__":
    main()
