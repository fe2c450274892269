"""Large-batch and accelerated training benchmarks → ``benchmarks/results/optim.json``.

Experiments (issue 4, TECHNIQUES B1–B6), all single-process on CPU through the SciDL
trainer (``scidl.train.trainer.Trainer``, the code path of ``scidl.run``):

1. ``admissions``, SGD momentum 0.9, lr 1e-3: batch 40 for 100 epochs (3 seeds) and batch 8
   for 15 epochs (2 seeds; plain SGD reaches the targets within 8 epochs there): epochs to
   validation MSE ≤ 0.01 / ≤ 0.007 for plain SGD, Anderson acceleration (AA, safeguarded),
   AA + moving average, AA with k = 8, and AA without the safeguard; variants interleaved
   per seed. The validation MSE is evaluated at the end of every epoch and epochs are
   counted from the optimizer step (step / steps per epoch).
2. ``timing``: per-step time ratio to plain SGD from 5 interleaved repeats of 10-epoch runs
   (batch 40; the machine is shared, so only ratios measured side by side are reported).
3. ``burgers`` PINN (2,000 collocation points, no RAR, 400 full-batch steps): Adam vs
   Adam+AA, relative L2 error at equal steps.
4. ``digits``: batch 64 vs 1024 (16×) with SGD (+/- linear scaling rule), LARS and LAMB, all
   with warm-up and cosine decay, 60 epochs: test accuracy.
5. data filtering at batch 1024 (LAMB; drop 10 % easy / hard samples after a 2-epoch
   warm-up), 60 epochs.
6. collapsed ensemble (cyclic LR, 4 snapshots) vs the single final model (cosine), batch 64,
   60 epochs.

Usage::

    python benchmarks/optim.py                    # everything (~13 min on 2 busy cores)
    python benchmarks/optim.py --only admissions --seeds 0 1 2
    python benchmarks/optim.py --quick            # fewer epochs/steps: a smoke run
    python benchmarks/optim.py --tables           # markdown tables of the stored results

Numbers are measured, never edited; timings are ratios of runs interleaved in one process.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "optim.json"
IMG = ROOT / "docs" / "img"


# ----------------------------------------------------------------------------- harness


class _StepClock:
    """Callback: wall time of each training step including the optimizer (no eval)."""

    def __init__(self) -> None:
        self.deviation: list[float] = []

    def on_step_end(self, trainer: Any, row: dict[str, Any]) -> None:
        dev = getattr(trainer.optimizer, "last_deviation", None)
        if dev is not None and dev == dev:
            self.deviation.append(float(dev))


def train(workload: str, overrides: list[str], task_factory: Any = None,
          callbacks: list[Any] | None = None) -> tuple[dict[str, Any], Any]:
    """Train one config in this process (1 rank, gloo); returns (summary, trainer)."""
    from scidl.config import load_config
    from scidl.runtime.dist import distributed_context
    from scidl.runtime.seed import seed_everything
    from scidl.train.api import build_task
    from scidl.train.trainer import Trainer
    from scidl.workloads.base import BuildContext

    base = ["log.tensorboard=false", "log.progress=false", "checkpoint.final=false",
            "checkpoint.every_steps=1000000000", "train.log_every=1000000",
            "dist.device=cpu", "dist.nproc=1"]
    cfg = load_config(workload, overrides=base + list(overrides))
    with tempfile.TemporaryDirectory() as tmp, distributed_context("cpu", "gloo") as dctx:
        run_dir = Path(tmp)
        ctx = BuildContext(seed=cfg.train.seed, device=dctx.device, run_dir=run_dir,
                           data_dir=run_dir / ".data")
        task = build_task(cfg, ctx, task_factory)
        seed_everything(cfg.train.seed + 1)
        trainer = Trainer(cfg, task, dctx, run_dir, callbacks=list(callbacks or []))
        summary = trainer.fit()
    return summary, trainer


class _EpochEval:
    """Callback: evaluate at the end of every epoch and keep (step, metrics).

    The trainer evaluates at most ~20 times a run; "epochs to a target" needs every epoch.
    Evaluation does not touch the training RNG streams, and its time is outside
    ``trainer.step_times``.
    """

    def __init__(self) -> None:
        self.evals: list[tuple[int, dict[str, float]]] = []

    def on_step_end(self, trainer: Any, row: dict[str, Any]) -> None:
        if trainer.step % trainer.steps_per_epoch == 0:
            self.evals.append((trainer.step, trainer.evaluate()))


def eval_curve(trainer: Any, key: str, epoch_eval: _EpochEval | None = None
               ) -> list[tuple[int, float]]:
    """(step, value) of every evaluation: the per-epoch callback's, else the trainer's rows."""
    if epoch_eval is not None:
        return [(step, ev[key]) for step, ev in epoch_eval.evals if key in ev]
    return [(r["step"], r[f"eval/{key}"]) for r in trainer.history if f"eval/{key}" in r]


def epochs_of(curve: list[tuple[int, float]], steps_per_epoch: int) -> list[float]:
    """The epoch (completed epochs, from the optimizer step) of every evaluation."""
    return [step / steps_per_epoch for step, _ in curve]


def first_epoch_below(curve: list[tuple[int, float]], thr: float, steps_per_epoch: int
                      ) -> int | None:
    """Epochs trained (counted from the step) at the first evaluation ≤ thr (None: never).

    Evaluations made mid-epoch count the epoch in progress.
    """
    for step, v in curve:
        if v <= thr:
            return -(-step // steps_per_epoch)
    return None


def epoch_times(step_times: list[float], steps_per_epoch: int) -> list[float]:
    """Time of each complete epoch's optimizer steps (every periodic step of the epoch in it)."""
    n = len(step_times) // steps_per_epoch
    return [sum(step_times[i * steps_per_epoch:(i + 1) * steps_per_epoch]) for i in range(n)]


def _med(xs: list[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


# ----------------------------------------------------------------------------- experiments

AA_BASE = ["optim.name=anderson", "optim.aa_base=sgd", "optim.aa_history=5",
           "optim.aa_every=4", "optim.aa_store_every=1", "optim.aa_safeguard=true"]
ADM_VARIANTS: dict[str, list[str]] = {
    "sgd": ["optim.name=sgd"],
    "aa": AA_BASE,
    "aa_ma": AA_BASE + ["optim.aa_ma=on", "optim.aa_ma_window=8"],
    "aa_nosafe": [o for o in AA_BASE if "safeguard" not in o] + ["optim.aa_safeguard=false"],
    "aa_ma_nosafe": [o for o in AA_BASE if "safeguard" not in o]
    + ["optim.aa_safeguard=false", "optim.aa_ma=on", "optim.aa_ma_window=8"],
    "aa_k8": [o for o in AA_BASE if "aa_history" not in o and "aa_every" not in o]
    + ["optim.aa_history=8", "optim.aa_every=8"],
}


def admissions(batch: int, seeds: list[int], epochs: int, variants: list[str]) -> dict[str, Any]:
    common = [f"train.batch_size={batch}", f"train.epochs={epochs}", "optim.lr=1e-3",
              "optim.momentum=0.9", "train.eval_every=0"]
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for seed in seeds:  # interleave the variants per seed (timing fairness)
        for v in variants:
            clock, per_epoch = _StepClock(), _EpochEval()
            s, tr = train("admissions", common + ADM_VARIANTS[v] + [f"train.seed={seed}"],
                          callbacks=[clock, per_epoch])
            curve = eval_curve(tr, "mse", per_epoch)
            spe = tr.steps_per_epoch
            runs[v].append({
                "seed": seed, "mse": [c[1] for c in curve],
                "eval_epochs": epochs_of(curve, spe), "steps_per_epoch": spe,
                "epochs_to_0.01": first_epoch_below(curve, 0.01, spe),
                "epochs_to_0.007": first_epoch_below(curve, 0.007, spe),
                "final_mse": curve[-1][1], "train_time_s": sum(tr.step_times),
                "steps": s["steps"], "counters": dict(getattr(tr.optimizer, "counters", {})),
                "median_deviation": _med(clock.deviation),
                "step_time_mean_s": s["step_time_s"],
                "step_time_median_s": s.get("step_time_median_s"),
                "epoch_time_s": s.get("epoch_time_s"),
                # robust to bursts of load from other jobs, yet it holds the periodic work
                # (extrapolations every k steps) of each epoch: epochs are whole periods here
                "epoch_time_median_s": _med(epoch_times(tr.step_times[1:], spe)
                                            or [sum(tr.step_times)]),
            })
            print(f"admissions b{batch} {v:12s} seed {seed}: e(0.01)={runs[v][-1]['epochs_to_0.01']}"
                  f" e(0.007)={runs[v][-1]['epochs_to_0.007']} final={curve[-1][1]:.4f} "
                  f"t={runs[v][-1]['train_time_s']:.1f}s", flush=True)
    table = {}
    for v in variants:
        rs = runs[v]
        row: dict[str, Any] = {
            "epochs_to_0.01": [r["epochs_to_0.01"] for r in rs],
            "epochs_to_0.007": [r["epochs_to_0.007"] for r in rs],
            "final_mse_median": _med([r["final_mse"] for r in rs]),
        }
        ratios, ttt = [], []
        for r, p in zip(rs, runs[variants[0]], strict=True):
            ratios.append(r["epoch_time_median_s"] / p["epoch_time_median_s"])  # per-epoch time
            if r["epochs_to_0.01"] and p["epochs_to_0.01"]:
                ttt.append((r["epochs_to_0.01"] * r["epoch_time_median_s"])
                           / (p["epochs_to_0.01"] * p["epoch_time_median_s"]))
        row["time_per_epoch_ratio_median"] = _med(ratios)
        row["time_to_0.01_ratio_median"] = _med(ttt)
        row["epochs_to_0.01_ratio_median"] = _med([
            r["epochs_to_0.01"] / p["epochs_to_0.01"] for r, p in zip(rs, runs[variants[0]], strict=True)
            if r["epochs_to_0.01"] and p["epochs_to_0.01"]])
        table[v] = row
    return {"batch": batch, "epochs": epochs, "seeds": seeds, "table": table, "runs": runs,
            "overrides": common, "variants": {v: ADM_VARIANTS[v] for v in variants}}


def timing(repeats: int, epochs: int, variants: list[str], batch: int = 40) -> dict[str, Any]:
    """Per-epoch training time of each variant relative to plain SGD.

    Short runs, variants interleaved inside every repeat; the ratio of each repeat is taken
    against the plain run of the same repeat, then the median over repeats is reported.
    """
    common = [f"train.batch_size={batch}", f"train.epochs={epochs}", "optim.lr=1e-3",
              "optim.momentum=0.9", "train.eval_every=1000000"]
    per: dict[str, list[float]] = {v: [] for v in variants}
    for rep in range(repeats):
        for v in variants:
            s, tr = train("admissions", common + ADM_VARIANTS[v] + [f"train.seed={rep}"])
            per[v].append(sum(tr.step_times[1:]) / max(len(tr.step_times) - 1, 1))
    ratios = {v: _med([a / b for a, b in zip(per[v], per[variants[0]], strict=True)])
              for v in variants}
    print("timing (per-step time ratio to sgd):", ratios, flush=True)
    return {"batch": batch, "epochs": epochs, "repeats": repeats, "mean_step_s": per,
            "ratio_median": ratios}


def burgers(steps: int, seeds: list[int]) -> dict[str, Any]:
    common = ["train.phases=none", f"train.epochs={steps}", "train.eval_every=" + str(max(steps // 10, 1)),
              "task.n_collocation=2000", "task.rar_every=0", "optim.lr=3e-3",
              "optim.schedule=cosine", "optim.min_lr_factor=0.03"]
    variants = {
        "adam": ["optim.name=adam"],
        "adam_aa": ["optim.name=anderson", "optim.aa_base=adam", "optim.aa_history=5",
                    "optim.aa_every=4", "optim.aa_safeguard=true"],
    }
    out: dict[str, Any] = {"steps": steps, "overrides": common, "variants": variants, "runs": {}}
    for seed in seeds:
        for v, ov in variants.items():
            s, tr = train("burgers", common + ov + [f"train.seed={seed}"])
            curve = eval_curve(tr, "rel_l2")
            out["runs"].setdefault(v, []).append({
                "seed": seed, "curve": curve, "final_rel_l2": curve[-1][1],
                "train_time_s": sum(tr.step_times),
                "counters": dict(getattr(tr.optimizer, "counters", {}))})
            print(f"burgers {v:15s} seed {seed}: rel_l2={curve[-1][1]:.4f} "
                  f"t={sum(tr.step_times):.1f}s", flush=True)
    return out


DIGITS_COMMON = ["train.drop_last=false", "optim.schedule=cosine", "train.eval_every=0"]
DIGITS_VARIANTS: dict[str, list[str]] = {
    "b64_sgd": ["train.batch_size=64", "optim.name=sgd", "optim.lr=0.05",
                "optim.warmup_steps=20"],
    "b1024_sgd_scaled": ["train.batch_size=1024", "optim.name=sgd", "optim.lr=0.05",
                         "optim.reference_batch=64", "optim.warmup_steps=10"],
    "b1024_sgd_unscaled": ["train.batch_size=1024", "optim.name=sgd", "optim.lr=0.05",
                           "optim.warmup_steps=10"],
    "b1024_lars": ["train.batch_size=1024", "optim.name=lars", "optim.lr=10",
                   "optim.trust_coefficient=0.001", "optim.warmup_steps=10"],
    "b1024_lamb": ["train.batch_size=1024", "optim.name=lamb", "optim.lr=0.03",
                   "optim.warmup_steps=10"],
}


def _scaled(ov: list[str]) -> list[str]:
    """Apply the linear scaling rule here when the trainer does not pass the global batch."""
    import inspect

    from scidl.train import trainer as T

    src = inspect.getsource(T.Trainer.__init__)
    if "global_batch" in src.split("build_scheduler", 1)[-1].split("\n", 1)[0]:
        return ov
    kv = dict(o.split("=", 1) for o in ov)
    if "optim.reference_batch" not in kv:
        return ov
    lr = float(kv["optim.lr"]) * int(kv["train.batch_size"]) / int(kv["optim.reference_batch"])
    return [o for o in ov if not o.startswith(("optim.lr=", "optim.reference_batch="))] + [
        f"optim.lr={lr}"]


def digits(epochs: int, seeds: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {"epochs": epochs, "common": DIGITS_COMMON, "variants": DIGITS_VARIANTS,
                           "runs": {}}
    for seed in seeds:
        for v, ov in DIGITS_VARIANTS.items():
            s, tr = train("digits", DIGITS_COMMON + _scaled(ov) + [f"train.epochs={epochs}",
                                                                   f"train.seed={seed}"])
            curve = eval_curve(tr, "accuracy")
            out["runs"].setdefault(v, []).append({
                "seed": seed, "accuracy": [c[1] for c in curve], "final": curve[-1][1],
                "eval_epochs": epochs_of(curve, tr.steps_per_epoch), "steps": s["steps"]})
            print(f"digits {v:20s} seed {seed}: acc={curve[-1][1]:.4f} steps={s['steps']}",
                  flush=True)
    out["table"] = {v: {"final_accuracy": [r["final"] for r in rs],
                        "median": _med([r["final"] for r in rs]), "steps": rs[0]["steps"]}
                    for v, rs in out["runs"].items()}
    return out


def _filtered_factory(fraction: float, drop: str, seed: int):
    def factory(ctx):
        from torch import nn

        from scidl.data.filtering import filter_dataset
        from scidl.workloads import get_workload

        wl = get_workload("digits")
        task = wl.build(wl.Config(), ctx)
        res = filter_dataset(
            task.model, task.train_data, task.loss,
            per_sample_loss=lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1],
                                                                     reduction="none"),
            fraction=fraction, drop=drop, warmup_epochs=2, batch_size=64, lr=1e-3, seed=seed)
        task.train_data = res.dataset
        return task

    return factory


def filtering(epochs: int, seeds: list[int], base: str = "b1024_lamb") -> dict[str, Any]:
    out: dict[str, Any] = {"epochs": epochs, "base": base, "fraction": 0.1, "runs": {}}
    ov = DIGITS_COMMON + _scaled(DIGITS_VARIANTS[base]) + [f"train.epochs={epochs}"]
    for seed in seeds:
        for mode in ("none", "easy", "hard"):
            t0 = time.perf_counter()
            fac = None if mode == "none" else _filtered_factory(0.1, mode, seed)
            s, tr = train("digits", ov + [f"train.seed={seed}"], task_factory=fac)
            curve = eval_curve(tr, "accuracy")
            out["runs"].setdefault(mode, []).append({
                "seed": seed, "final": curve[-1][1], "steps": s["steps"],
                "wall_s_incl_scoring": time.perf_counter() - t0})
            print(f"filtering {mode:5s} seed {seed}: acc={curve[-1][1]:.4f}", flush=True)
    out["table"] = {m: {"final_accuracy": [r["final"] for r in rs],
                        "median": _med([r["final"] for r in rs])}
                    for m, rs in out["runs"].items()}
    return out


def ensemble(epochs: int, seeds: list[int], cycles: int = 4) -> dict[str, Any]:
    from scidl.analysis.ensemble import SnapshotCollector, SnapshotEnsemble
    from scidl.optim.schedules import cycle_end_steps

    base = ["train.batch_size=64", "optim.name=sgd", "optim.lr=0.05", "train.drop_last=false",
            f"train.epochs={epochs}", "train.eval_every=0"]
    out: dict[str, Any] = {"epochs": epochs, "cycles": cycles, "overrides": base, "runs": []}
    for seed in seeds:
        s1, tr1 = train("digits", base + ["optim.schedule=cosine", f"train.seed={seed}"])
        single = tr1.last_eval
        total = tr1.total_steps
        from scidl.config import load_config

        cfg = load_config("digits", overrides=base + ["optim.schedule=cyclic",
                                                      f"optim.cycles={cycles}"])
        col = SnapshotCollector(cycle_end_steps(cfg.optim, total))
        s2, tr2 = train("digits", base + ["optim.schedule=cyclic", f"optim.cycles={cycles}",
                                          f"train.seed={seed}"], callbacks=[col])
        ens = SnapshotEnsemble(tr2.model, col.snapshots, kind="classification").eval()
        with torch.no_grad():
            ens_eval = tr2.task.evaluate(ens, tr2.task.val_data)
        row = {"seed": seed, "single_cosine": single, "cyclic_final": tr2.last_eval,
               "ensemble": dict(ens_eval), "snapshots_at": col.taken_at}
        out["runs"].append(row)
        print(f"ensemble seed {seed}: single acc={single['accuracy']:.4f} "
              f"loss={single['loss']:.4f} | cyclic final acc={tr2.last_eval['accuracy']:.4f} | "
              f"ensemble acc={ens_eval['accuracy']:.4f} loss={ens_eval['loss']:.4f}", flush=True)
    return out


# ----------------------------------------------------------------------------- plots


def plot(results: dict[str, Any]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    IMG.mkdir(parents=True, exist_ok=True)
    written = []
    for key in ("admissions_b40", "admissions_b8"):
        if key not in results:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for i, (v, rs) in enumerate(results[key]["runs"].items()):
            for j, r in enumerate(rs):
                ax.plot(r.get("eval_epochs") or range(1, len(r["mse"]) + 1), r["mse"],
                        color=f"C{i}", alpha=0.7, label=v if j == 0 else None)
        ax.axhline(0.01, color="k", ls=":", lw=1)
        ax.axhline(0.007, color="k", ls="--", lw=1)
        ax.set(yscale="log", xlabel="epoch", ylabel="validation MSE",
               title=f"admissions, batch {results[key]['batch']}, SGD m=0.9 lr=1e-3")
        ax.set_ylim(top=0.1)
        ax.legend()
        fig.tight_layout()
        path = IMG / f"optim_{key}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path.relative_to(ROOT)))
    if "burgers" in results:
        fig, ax = plt.subplots(figsize=(6, 4))
        for i, (v, rs) in enumerate(results["burgers"]["runs"].items()):
            for j, r in enumerate(rs):
                st, val = zip(*r["curve"], strict=True)
                ax.plot(st, val, color=f"C{i}", marker="o", ms=3, label=v if j == 0 else None)
        ax.set(yscale="log", xlabel="optimizer step", ylabel="relative L2 error",
               title="Burgers PINN: Adam vs Adam+AA")
        ax.legend()
        fig.tight_layout()
        path = IMG / "optim_burgers.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path.relative_to(ROOT)))
    if "digits" in results:
        fig, ax = plt.subplots(figsize=(6, 4))
        for i, (v, rs) in enumerate(results["digits"]["runs"].items()):
            r = rs[0]
            ax.plot(r.get("eval_epochs") or range(1, len(r["accuracy"]) + 1), r["accuracy"],
                    color=f"C{i}", label=v)
        ax.set(xlabel="epoch", ylabel="test accuracy", ylim=(0.5, 1.0),
               title="digits: batch 64 vs 1024 (seed 0)")
        ax.legend()
        fig.tight_layout()
        path = IMG / "optim_digits_large_batch.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path.relative_to(ROOT)))
    return written


# ----------------------------------------------------------------------------- tables


def _fmt(x: Any, nd: int = 2) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{nd}f}" if abs(x) >= 10 ** -nd else f"{x:.1e}"
    return str(x)


def tables(results: dict[str, Any]) -> str:
    """Markdown tables of the stored results (for docs/optimizers.md)."""
    out: list[str] = []
    timing_r = results.get("timing_b40", {}).get("ratio_median", {})
    for key in ("admissions_b40", "admissions_b8"):
        if key not in results:
            continue
        r = results[key]
        out.append(f"**admissions, batch {r['batch']}, {r['epochs']} epochs, seeds {r['seeds']}**"
                   " (epochs per seed; – = not reached)\n")
        out.append("| variant | epochs to MSE ≤ 0.01 | epochs to MSE ≤ 0.007 | median ratio to "
                   "SGD (≤ 0.01) | final MSE (median) | time/epoch ratio (this run) |"
                   + (" time/step ratio (timing) |" if key == "admissions_b40" else ""))
        out.append("|---|---|---|---|---|---|" + ("---|" if key == "admissions_b40" else ""))
        for v, row in r["table"].items():
            line = (f"| {v} | {row['epochs_to_0.01']} | {row['epochs_to_0.007']} | "
                    f"{_fmt(row['epochs_to_0.01_ratio_median'])} | "
                    f"{_fmt(row['final_mse_median'], 4)} | "
                    f"{_fmt(row['time_per_epoch_ratio_median'])} |")
            if key == "admissions_b40":
                line += f" {_fmt(timing_r.get(v))} |"
            out.append(line)
        out.append("")
    if "burgers" in results:
        b = results["burgers"]
        out.append(f"**burgers PINN, {b['steps']} full-batch steps**\n")
        out.append("| variant | rel. L2 at equal steps | extrapolations / rejected | train time (s) |")
        out.append("|---|---|---|---|")
        for v, rs in b["runs"].items():
            for r in rs:
                c = r["counters"]
                ex = f"{c.get('extrapolations', '–')} / {c.get('rejected', '–')}" if c else "–"
                out.append(f"| {v} | {r['final_rel_l2']:.4f} | {ex} | {r['train_time_s']:.1f} |")
        out.append("")
    if "digits" in results:
        d = results["digits"]
        out.append(f"**digits, {d['epochs']} epochs, test accuracy (per seed)**\n")
        out.append("| variant | optimizer steps | accuracy | median |")
        out.append("|---|---|---|---|")
        for v, row in d["table"].items():
            acc = ", ".join(f"{a:.4f}" for a in row["final_accuracy"])
            out.append(f"| {v} | {row['steps']} | {acc} | {row['median']:.4f} |")
        out.append("")
    if "filtering" in results:
        f = results["filtering"]
        out.append(f"**data filtering, digits, {f['base']}, drop {f['fraction']:.0%}, "
                   f"{f['epochs']} epochs**\n")
        out.append("| filter | accuracy (per seed) | median |")
        out.append("|---|---|---|")
        for m, row in f["table"].items():
            acc = ", ".join(f"{a:.4f}" for a in row["final_accuracy"])
            out.append(f"| {m} | {acc} | {row['median']:.4f} |")
        out.append("")
    if "ensemble" in results:
        e = results["ensemble"]
        out.append(f"**collapsed ensemble, digits, batch 64, {e['epochs']} epochs, "
                   f"{e['cycles']} cycles**\n")
        out.append("| seed | single model (cosine) acc / NLL | cyclic run, final model acc / NLL"
                   " | snapshot ensemble acc / NLL |")
        out.append("|---|---|---|---|")
        for r in e["runs"]:
            s1, c, en = r["single_cosine"], r["cyclic_final"], r["ensemble"]
            out.append(f"| {r['seed']} | {s1['accuracy']:.4f} / {s1['loss']:.3f} | "
                       f"{c['accuracy']:.4f} / {c['loss']:.3f} | "
                       f"{en['accuracy']:.4f} / {en['loss']:.3f} |")
        out.append("")
    return "\n".join(out)


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="*", default=None,
                    choices=["admissions", "timing", "admissions_b8", "burgers", "digits",
                             "filtering", "ensemble"])
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--b8-seeds", nargs="*", type=int, default=[0, 1])
    ap.add_argument("--digits-seeds", nargs="*", type=int, default=[0])
    ap.add_argument("--quick", action="store_true", help="tiny budgets (smoke run)")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--tables", action="store_true",
                    help="print markdown tables of the stored results and exit")
    ap.add_argument("--plots", action="store_true", help="redraw the plots and exit")
    ap.add_argument("--note", default=None,
                    help="recorded with each section run now (e.g. how busy the machine was)")
    args = ap.parse_args(argv)
    if args.tables or args.plots:
        stored = json.loads(Path(args.out).read_text())
        print(tables(stored) if args.tables else plot(stored))
        return 0
    torch.set_num_threads(1)
    todo = set(args.only or ["admissions", "timing", "admissions_b8", "burgers", "digits",
                             "filtering", "ensemble"])
    q = args.quick
    out_path = Path(args.out)
    results: dict[str, Any] = json.loads(out_path.read_text()) if out_path.exists() else {}
    t0 = time.perf_counter()

    command = "python benchmarks/optim.py " + " ".join(sys.argv[1:] if argv is None else argv)

    def stamp(section: dict[str, Any]) -> dict[str, Any]:
        """Record how and when a section was produced (sections come from several runs)."""
        section["generated"] = {"command": command,
                                "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
                                **({"note": args.note} if args.note else {})}
        return section

    def save() -> None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(results, indent=1, default=str))

    if "admissions" in todo:
        results["admissions_b40"] = stamp(admissions(
            40, args.seeds, 10 if q else 100, ["sgd", "aa", "aa_ma", "aa_k8", "aa_nosafe"]))
        save()
    if "timing" in todo:
        results["timing_b40"] = stamp(timing(2 if q else 5, 3 if q else 10,
                                             ["sgd", "aa", "aa_ma", "aa_k8", "aa_nosafe"]))
        save()
    if "admissions_b8" in todo:
        results["admissions_b8"] = stamp(admissions(
            8, args.b8_seeds, 5 if q else 15,
            ["sgd", "aa", "aa_ma", "aa_nosafe", "aa_ma_nosafe"]))
        save()
    if "burgers" in todo:
        results["burgers"] = stamp(burgers(50 if q else 400, [0]))
        save()
    if "digits" in todo:
        results["digits"] = stamp(digits(5 if q else 60, args.digits_seeds))
        save()
    if "filtering" in todo:
        results["filtering"] = stamp(filtering(5 if q else 60, args.digits_seeds))
        save()
    if "ensemble" in todo:
        results["ensemble"] = stamp(ensemble(8 if q else 60, args.digits_seeds))
        save()
    results["meta"] = {
        "command": command,
        "torch": torch.__version__, "python": platform.python_version(),
        "machine": platform.machine(), "processor": platform.processor(),
        "cpu_threads": torch.get_num_threads(), "wall_s_last_invocation": time.perf_counter() - t0,
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }
    results["plots"] = plot(results)
    save()
    print(f"wrote {out_path} in {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
