"""Four documented claims measured in the regime their papers describe → ``benchmarks/results/claims.json``.

One subcommand per claim; every run is stored the moment it finishes (per seed), so an
interrupted subcommand continues where it stopped (``--fresh`` recomputes):

``inverse``    Model-constrained loss (Nguyen & Bui-Thanh, arXiv 2105.12033): its advantage
               is claimed where the network must learn the inverse from the observation
               itself with few training pairs. ``inverse`` with ``task.input=data``
               (``Psi(y) = y + U(y)``, no Tikhonov step) at 16 and 64 training images and
               at 5× the noise (s = 0.1), and the documented post-processing setting
               (``task.input=tikhonov``) at 64 and, for comparison, at 1024;
               ``lambda`` = 0 (purely supervised), 1 and 10; 3 seeds (each seed draws its
               own phantoms, noise and initialisation; the variants of a seed share them).
``filtering``  Data filtering for large batches (Gahlot, Yin, Shankar 2020, arXiv
               2012.09272): claimed where the global batch is large enough that accuracy
               deteriorates, and where data points hurt feature learning. ``digits`` at
               batch 1024: plain SGD (the batch at which SGD loses accuracy here), LAMB
               (the documented setting), and LAMB with 10 % and 30 % of the training labels
               flipped;
               no filter vs dropping the 10 % easiest / hardest after a 2-epoch warm-up;
               3 seeds.
``pareto``     MENNDL (ORNL) reported a network with comparable accuracy and 16× faster
               inference than a hand-designed one. NSGA-II on ``digits --space cnn``
               (24 trials, population 8, 8 epochs), 3 search seeds, against two reference
               networks trained alike (3 seeds): the largest network of the space and the
               workload's default CNN. Latencies of every front member and of the
               references are re-measured side by side (interleaved rounds) at the end.
``workers``    DeepHyper reports > 95 % worker utilisation on 1,920 workers, where a trial
               lasts far longer than the scheduling work between trials. 2 worker
               processes on one journal-file study: real ``admissions`` trials (6 and 24
               trials) and the synthetic ``toy`` objective (sleeping trials of 0.5, 2 and
               8 s, 24 trials), 3 repeats each; utilisation decomposed into per-trial
               overhead and the tail.

Usage::

    python benchmarks/claims.py inverse [--seeds 0 1 2]
    python benchmarks/claims.py filtering
    python benchmarks/claims.py pareto
    python benchmarks/claims.py workers [--only toy]
    python benchmarks/claims.py tables            # markdown of the stored results
    python scripts/render_docs.py                 # the tables in docs/

Numbers are measured, never edited. Each run records the load average of the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "claims.json"
WORK = ROOT / "runs" / "claims"
SEEDS = [0, 1, 2]

# ----------------------------------------------------------------------------- storage


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock for ``path`` (several subcommands may run at once); the lock file
    lives in the temporary folder, named after the path, so the results folder stays clean."""
    import hashlib

    path.parent.mkdir(parents=True, exist_ok=True)
    tag = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    with open(Path(tempfile.gettempdir()) / f"scidl-claims-{tag}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def load_results(path: Path | None = None) -> dict[str, Any]:
    path = path or RESULTS
    return json.loads(path.read_text()) if path.is_file() else {}


def store(claim: str, key: str | None, value: Any, path: Path | None = None) -> None:
    """Set ``results[claim]["runs"][key] = value`` (``key`` None: ``results[claim][...]``
    updated with the dict ``value``), read-modify-write under a lock, atomic replace."""
    path = path or RESULTS
    with _locked(path):
        res = load_results(path)
        sec = res.setdefault(claim, {})
        if key is None:
            sec.update(value)
        else:
            sec.setdefault("runs", {})[key] = value
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(res, indent=1, default=str) + "\n")
        tmp.replace(path)


def stamp() -> dict[str, Any]:
    return {"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "loadavg": list(os.getloadavg())}


def meta(argv: Sequence[str]) -> dict[str, Any]:
    import torch

    return {**stamp(), "command": " ".join(["python", "benchmarks/claims.py", *argv]),
            "python": sys.version.split()[0], "torch": torch.__version__,
            "platform": platform.platform(), "cpus": os.cpu_count()}


def have(claim: str, key: str, fresh: bool) -> bool:
    return not fresh and key in load_results().get(claim, {}).get("runs", {})


# ----------------------------------------------------------------------------- statistics


def mean_spread(values: Sequence[float | None], digits: int = 2, unit: str = "") -> str:
    """``mean [min–max]`` over the seeds that exist (``(k of N)`` if some are missing)."""
    have_ = [v for v in values if v is not None]
    if not have_:
        return "–"
    s = f"{statistics.fmean(have_):.{digits}f}{unit}"
    if len(have_) > 1:
        s += f" [{min(have_):.{digits}f}–{max(have_):.{digits}f}]"
    return s if len(have_) == len(values) else f"{s} ({len(have_)} of {len(values)})"


def per_seed(values: Sequence[float | None], digits: int = 2) -> str:
    return ", ".join("–" if v is None else f"{v:.{digits}f}" for v in values)


# ----------------------------------------------------------------------------- training


def _train(workload: str, overrides: list[str], task_factory: Callable[..., Any] | None = None,
           ) -> dict[str, Any]:
    """One in-process ``scidl.run``; its final evaluation, steps and wall time."""
    import scidl

    cfg = scidl.load_config(workload, overrides=overrides + [
        f"log.root={WORK / 'runs'}", "log.tensorboard=false", "log.progress=false",
        "checkpoint.final=false", "checkpoint.every_steps=1000000000"])
    t0 = time.perf_counter()
    res = scidl.run(cfg, task_factory=task_factory)
    s = res.summary
    shutil.rmtree(res.run_dir, ignore_errors=True)
    return {"final_eval": {k: float(v) for k, v in (s.get("final_eval") or {}).items()},
            "steps": s["steps"], "wall_s": time.perf_counter() - t0}


# ----------------------------------------------------------------------------- (a) inverse

INVERSE_REGIMES: dict[str, list[str]] = {
    # full data: whether a gain at 64 images is a low-data effect
    "post-processing, n=1024": ["task.input=tikhonov", "task.n_train=1024"],
    "post-processing, n=64": ["task.input=tikhonov", "task.n_train=64"],
    "learned inverse, n=64": ["task.input=data", "task.n_train=64"],
    "learned inverse, n=16": ["task.input=data", "task.n_train=16", "train.batch_size=16"],
    "learned inverse, n=64, noise 0.1": ["task.input=data", "task.n_train=64", "task.noise=0.1"],
}
INVERSE_LAMBDAS = [0.0, 1.0, 10.0]
INVERSE_STEPS = 320  # the workload's documented budget (Adam, cosine from 3e-3)


def claim_inverse(seeds: list[int], fresh: bool, steps: int = INVERSE_STEPS) -> None:
    steps = 10 if QUICK else steps
    store("inverse", None, {"regimes": INVERSE_REGIMES, "lambdas": INVERSE_LAMBDAS, "steps": steps})
    for seed in seeds:  # seed-major: a stopped run leaves whole seeds
        for regime, ov in INVERSE_REGIMES.items():
            for lam in INVERSE_LAMBDAS:
                key = f"{regime}|{lam:g}|{seed}"
                if have("inverse", key, fresh):
                    continue
                r = _train("inverse", ov + [f"task.mc_weight={lam}", f"train.seed={seed}",
                                            f"train.max_steps={steps}", "train.epochs=100000",
                                            "train.eval_every=100000"])
                ev = r["final_eval"]
                print(f"inverse {regime:24s} lambda={lam:<4g} seed {seed}: psnr {ev['psnr']:.2f} "
                      f"(tikhonov {ev['tikhonov_psnr']:.2f}) {r['wall_s']:.0f} s", flush=True)
                store("inverse", key, {"regime": regime, "lambda": lam, "seed": seed, **r, **stamp()})


def inverse_rows(d: dict[str, Any]) -> list[dict[str, Any]]:
    """Per regime and lambda: per-seed PSNR, and the per-seed difference to lambda = 0."""
    runs = d.get("runs", {})
    seeds = sorted({r["seed"] for r in runs.values()})
    rows = []
    for regime in d.get("regimes", {}):
        for lam in d.get("lambdas", []):
            ps = [runs.get(f"{regime}|{lam:g}|{s}", {}).get("final_eval", {}).get("psnr") for s in seeds]
            base = [runs.get(f"{regime}|0|{s}", {}).get("final_eval", {}).get("psnr") for s in seeds]
            tik = [runs.get(f"{regime}|{lam:g}|{s}", {}).get("final_eval", {}).get("tikhonov_psnr")
                   for s in seeds]
            res = [runs.get(f"{regime}|{lam:g}|{s}", {}).get("final_eval", {}).get("data_residual_rms")
                   for s in seeds]
            diff = [None if a is None or b is None else a - b for a, b in zip(ps, base, strict=True)]
            rows.append({"regime": regime, "lambda": lam, "psnr": ps, "diff": diff, "tikhonov": tik,
                         "residual": res, "seeds": seeds})
    return rows


def inverse_table(d: dict[str, Any]) -> str:
    rows = inverse_rows(d)
    if not rows:
        return "(no results)"
    n = len(rows[0]["seeds"])
    out = [f"{d.get('steps', INVERSE_STEPS)} Adam steps per network, {n} seed{'s' if n > 1 else ''} (mean [min–max]); "
           "Δ = PSNR − PSNR of λ = 0 on the same seed (same data and initialisation).", "",
           "| regime | λ (model-constrained) | PSNR per seed [dB] | PSNR [dB] | Δ vs λ = 0 [dB] | "
           "Tikhonov [dB] | data residual rms |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        diff = "–" if r["lambda"] == 0 else mean_spread(r["diff"], 2)
        out.append(f"| {r['regime']} | {r['lambda']:g} | {per_seed(r['psnr'])} | "
                   f"{mean_spread(r['psnr'])} | {diff} | {mean_spread(r['tikhonov'])} | "
                   f"{mean_spread(r['residual'], 4)} |")
    return "\n".join(out)


# ----------------------------------------------------------------------------- (b) filtering

DIGITS_COMMON = ["train.drop_last=false", "optim.schedule=cosine", "train.eval_every=0",
                 "train.epochs=60", "train.batch_size=1024", "optim.warmup_steps=10"]
FILTER_REGIMES: dict[str, dict[str, Any]] = {
    # the small batch the large ones are measured against (no filtering)
    "b64 SGD (small-batch reference)": {"overrides": ["optim.name=sgd", "optim.lr=0.05",
                                                      "train.batch_size=64", "optim.warmup_steps=20"],
                                        "label_noise": 0.0, "modes": ["none"]},
    "b1024 SGD": {"overrides": ["optim.name=sgd", "optim.lr=0.05"], "label_noise": 0.0},
    "b1024 LAMB": {"overrides": ["optim.name=lamb", "optim.lr=0.03"], "label_noise": 0.0},
    "b1024 LAMB, 10 % labels flipped": {"overrides": ["optim.name=lamb", "optim.lr=0.03"],
                                        "label_noise": 0.1},
    "b1024 LAMB, 30 % labels flipped": {"overrides": ["optim.name=lamb", "optim.lr=0.03"],
                                        "label_noise": 0.3},
}
FILTER_MODES = ["none", "easy", "hard"]
FILTER_FRACTION = 0.1


def flip_labels(y: Any, fraction: float, seed: int, classes: int = 10) -> tuple[Any, Any]:
    """A copy of ``y`` with ``fraction`` of the labels moved to another class; the indices."""
    import torch

    g = torch.Generator().manual_seed(10_007 + seed)
    n_flip = int(round(fraction * len(y)))
    idx = torch.randperm(len(y), generator=g)[:n_flip]
    shift = torch.randint(1, classes, (n_flip,), generator=g)
    out = y.clone()
    out[idx] = (y[idx] + shift) % classes
    return out, idx


def _filter_factory(mode: str, noise: float, seed: int, info: dict[str, Any]) -> Callable[..., Any]:
    def factory(ctx: Any) -> Any:
        from torch import nn
        from torch.utils.data import TensorDataset

        from scidl.data.filtering import filter_dataset
        from scidl.workloads import get_workload

        wl = get_workload("digits")
        task = wl.build(wl.Config(), ctx)
        x, y = task.train_data.tensors
        flipped: list[int] = []
        if noise > 0:
            y, idx = flip_labels(y, noise, seed)
            flipped = idx.tolist()
            task.train_data = TensorDataset(x, y)
        info["n_train"] = len(y)
        info["n_flipped"] = len(flipped)
        if mode != "none":
            res = filter_dataset(
                task.model, task.train_data, task.loss,
                per_sample_loss=lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1],
                                                                         reduction="none"),
                fraction=FILTER_FRACTION, drop=mode, warmup_epochs=2, batch_size=64, lr=1e-3,
                seed=seed)
            task.train_data = res.dataset
            dropped = set(range(len(y))) - set(res.kept.tolist())
            info["n_dropped"] = len(dropped)
            info["flipped_dropped"] = len(dropped & set(flipped))
        return task

    return factory


def claim_filtering(seeds: list[int], fresh: bool) -> None:
    store("filtering", None, {"regimes": FILTER_REGIMES, "modes": FILTER_MODES,
                              "fraction": FILTER_FRACTION, "common": DIGITS_COMMON})
    for seed in seeds:
        for regime, spec in FILTER_REGIMES.items():
            for mode in spec.get("modes", FILTER_MODES):
                key = f"{regime}|{mode}|{seed}"
                if have("filtering", key, fresh):
                    continue
                info: dict[str, Any] = {}
                r = _train("digits", DIGITS_COMMON + spec["overrides"] + [f"train.seed={seed}"]
                           + (["train.epochs=3"] if QUICK else []),
                           task_factory=_filter_factory(mode, spec["label_noise"], seed, info))
                acc = r["final_eval"]["accuracy"]
                print(f"filtering {regime:32s} {mode:5s} seed {seed}: acc {acc:.4f} "
                      f"{r['wall_s']:.0f} s {info}", flush=True)
                store("filtering", key, {"regime": regime, "mode": mode, "seed": seed, **r,
                                         **info, **stamp()})


def filtering_table(d: dict[str, Any]) -> str:
    runs = d.get("runs", {})
    if not runs:
        return "(no results)"
    seeds = sorted({r["seed"] for r in runs.values()})
    out = [f"digits, 60 epochs; drop {d['fraction']:.0%} of the training set after a "
           f"2-epoch warm-up; {len(seeds)} seed{'s' if len(seeds) > 1 else ''} (mean [min–max]); Δ = accuracy − accuracy "
           "without filter on the same seed, in points.", "",
           "| regime | filter | accuracy per seed | accuracy | Δ vs none [points] | "
           "flipped labels among the dropped |", "|---|---|---|---|---|---|"]
    for regime in d["regimes"]:
        base = [runs.get(f"{regime}|none|{s}", {}).get("final_eval", {}).get("accuracy") for s in seeds]
        for mode in d["regimes"][regime].get("modes", d["modes"]):
            rs = [runs.get(f"{regime}|{mode}|{s}", {}) for s in seeds]
            acc = [r.get("final_eval", {}).get("accuracy") for r in rs]
            diff = [None if a is None or b is None else 100 * (a - b) for a, b in zip(acc, base, strict=True)]
            noisy = d["regimes"][regime]["label_noise"] > 0 and mode != "none"
            caught = (", ".join(f"{r.get('flipped_dropped', '–')} of {r.get('n_flipped', '–')}" for r in rs)
                      if noisy else "–")
            out.append(f"| {regime} | {mode} | {per_seed(acc, 4)} | {mean_spread(acc, 4)} | "
                       f"{'–' if mode == 'none' else mean_spread(diff, 2)} | {caught} |")
    return "\n".join(out)


# ----------------------------------------------------------------------------- (c) pareto

PARETO_TRIALS, PARETO_POPULATION, PARETO_EPOCHS = 24, 8, 8  # 8 = the cnn space's own budget
REFERENCES: dict[str, list[str]] = {
    # the corner of the space: 3 convolutions 48/96/192, one 128-unit head layer
    "largest in the space": ["task.model=cnn", "task.channels=[48,96,192]", "task.hidden=[128]",
                             "task.activation=relu", "optim.lr=0.003"],
    # what the workload uses when nobody searches
    "workload default CNN": ["task.model=cnn", "task.channels=[16,32]", "task.hidden=[128,64]",
                             "task.activation=relu", "optim.lr=0.003"],
}
LATENCY_ROUNDS = 7


def _search_seed(seed: int, trials: int) -> dict[str, Any]:
    import optuna

    from scidl.search.runner import describe_objective, run_search
    from scidl.search.settings import SearchSettings
    from scidl.search.space import load_space

    d = WORK / (f"pareto-seed{seed}" if PARETO_EPOCHS == 8 else f"pareto-e{PARETO_EPOCHS}-seed{seed}")
    db = d / "study.db"
    name = f"claims-pareto-{PARETO_EPOCHS}-{seed}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    want = {"trials": trials, "epochs": PARETO_EPOCHS, "population": PARETO_POPULATION}
    marker = d / "budget.json"
    if db.exists() and (not marker.is_file() or json.loads(marker.read_text()) != want):
        shutil.rmtree(d)  # a study with another budget is never resumed
    d.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(want))
    t0 = time.time()
    if db.exists():  # an interrupted search continues
        res = run_search(str(db), name, None, resume=True, quiet=True)
    else:
        s = describe_objective(SearchSettings(
            workload="digits", strategy="evolution", trials=trials, population=PARETO_POPULATION,
            space=load_space("digits", "cnn"), out=str(d), metric="accuracy", seed=seed,
            heartbeat_s=5.0,
            base={"train": {"epochs": PARETO_EPOCHS, "seed": seed}, "log": {"tensorboard": False},
                  "checkpoint": {"final": False}}))
        res = run_search(str(db), name, s, quiet=True)
    trials_all = [{"number": t.number, "accuracy": t.values[0], "latency_ms": t.values[1],
                   "n_params": t.user_attrs["result"]["n_params"], "params": t.params,
                   "task": t.user_attrs["config"]["task"]}
                  for t in res.study.trials if t.state.name == "COMPLETE"]
    front = [t["number"] for t in res.summary.get("pareto") or []]
    return {"seed": seed, "trials": trials, "wall_s": time.time() - t0, "trials_all": trials_all,
            "front": front}


def _cnn_task(task_cfg: dict[str, Any]) -> Any:
    from scidl.workloads import BuildContext, get_workload

    wl = get_workload("digits")
    return wl.build(wl.Config(**task_cfg), BuildContext(seed=0))


def remeasure_latency(tasks: dict[str, dict[str, Any]], rounds: int = LATENCY_ROUNDS) -> dict[str, float]:
    """Min over interleaved rounds (random order each round) of each network's latency."""
    from scidl.search.objective import measure_latency_ms

    built = {k: _cnn_task(v) for k, v in tasks.items()}
    best: dict[str, float] = {}
    rng = random.Random(0)
    for _ in range(rounds):
        order = list(built)
        rng.shuffle(order)
        for k in order:
            ms = measure_latency_ms(built[k], 64, repeats=5)
            best[k] = min(best.get(k, float("inf")), ms)
    return best


def pareto_claim(epochs: int) -> str:
    """Results section of a budget: ``pareto`` for the space's 8 epochs, else ``pareto_eN``."""
    return "pareto" if epochs == 8 else f"pareto_e{epochs}"


def claim_pareto(seeds: list[int], fresh: bool, trials: int = PARETO_TRIALS, epochs: int = 8) -> None:
    import torch

    global PARETO_EPOCHS, PARETO_POPULATION, LATENCY_ROUNDS
    PARETO_EPOCHS = epochs
    if QUICK:
        trials, PARETO_EPOCHS, PARETO_POPULATION, LATENCY_ROUNDS = 3, 1, 2, 2
    claim = pareto_claim(PARETO_EPOCHS)

    torch.set_num_threads(1)
    store(claim, None, {"trials": trials, "population": PARETO_POPULATION,
                        "epochs": PARETO_EPOCHS, "references": REFERENCES})
    for seed in seeds:
        for ref, ov in REFERENCES.items():
            key = f"ref|{ref}|{seed}"
            if have(claim, key, fresh):
                continue
            r = _train("digits", ov + [f"train.epochs={PARETO_EPOCHS}", f"train.seed={seed}"])
            print(f"pareto reference {ref}: seed {seed} acc {r['final_eval']['accuracy']:.4f}", flush=True)
            store(claim, key, {"reference": ref, "seed": seed, **r, **stamp()})
        key = f"search|{seed}"
        if have(claim, key, fresh):
            continue
        if fresh:
            shutil.rmtree(WORK / f"pareto-seed{seed}", ignore_errors=True)
            shutil.rmtree(WORK / f"pareto-e{PARETO_EPOCHS}-seed{seed}", ignore_errors=True)
        r = _search_seed(seed, trials)
        print(f"pareto search seed {seed}: {len(r['trials_all'])} trials, front {r['front']}, "
              f"{r['wall_s']:.0f} s", flush=True)
        store(claim, key, {**r, **stamp()})
    # side-by-side latencies of every front member and the references
    d = load_results()[claim]
    tasks: dict[str, dict[str, Any]] = {}
    for key, r in d["runs"].items():
        if key.startswith("search|"):
            by = {t["number"]: t for t in r["trials_all"]}
            for num in r["front"]:
                tasks[f"{r['seed']}/{num}"] = by[num]["task"]
    for ref, ov in REFERENCES.items():
        import scidl

        tasks[f"ref/{ref}"] = scidl.load_config("digits", overrides=ov).task_config().model_dump()
    t0 = time.time()
    lat = remeasure_latency(tasks)
    store(claim, None, {"latency": {"ms": lat, "rounds": LATENCY_ROUNDS, "wall_s": time.time() - t0,
                                       **stamp()}})
    print(f"pareto: re-measured {len(lat)} latencies", flush=True)


def pareto_summary(d: dict[str, Any]) -> list[dict[str, Any]]:
    """Per search seed: the front-internal speed-up and the speed-up over each reference."""
    runs, lat = d.get("runs", {}), d.get("latency", {}).get("ms", {})
    rows = []
    for key, r in sorted(runs.items()):
        if not key.startswith("search|"):
            continue
        seed = r["seed"]
        by = {t["number"]: t for t in r["trials_all"]}
        front = [{**by[n], "lat": lat.get(f"{seed}/{n}", by[n]["latency_ms"])} for n in r["front"]]
        top = max(front, key=lambda t: t["accuracy"])
        near = [t for t in front if t["accuracy"] >= top["accuracy"] - 0.01]
        fast = min(near, key=lambda t: t["lat"])
        row: dict[str, Any] = {"seed": seed, "front_size": len(front), "top": top, "fast": fast,
                               "internal": top["lat"] / fast["lat"], "refs": {}}
        for ref in d.get("references", {}):
            rr = runs.get(f"ref|{ref}|{seed}")
            if rr is None or f"ref/{ref}" not in lat:
                continue
            acc = rr["final_eval"]["accuracy"]
            ok = [t for t in front if t["accuracy"] >= acc - 0.01]
            pick = min(ok, key=lambda t: t["lat"]) if ok else None
            row["refs"][ref] = {"accuracy": acc, "lat": lat[f"ref/{ref}"], "pick": pick,
                                "speedup": None if pick is None else lat[f"ref/{ref}"] / pick["lat"]}
        rows.append(row)
    return rows


def pareto_table(d: dict[str, Any]) -> str:
    rows = pareto_summary(d)
    if not rows:
        return "(no results)"
    lat = d.get("latency", {})
    out = [f"NSGA-II on digits (`--space cnn`), {d['trials']} trials, population {d['population']}, "
           f"{d['epochs']} epochs per trial and per reference, {len(rows)} search seeds; latency = "
           f"inference time per sample (batch 64, one thread), re-measured for all networks side by "
           f"side (minimum over {lat.get('rounds', '–')} interleaved rounds).", "",
           "| seed | front size | most accurate on the front (acc, ms) | fastest within 1 point "
           "of it (acc, ms) | speed-up |" + "".join(f" vs {ref}: front pick (acc, ms) | speed-up |"
                                                  for ref in d["references"]),
           "|---|---|---|---|---|" + "---|---|" * len(d["references"])]

    def at(t: dict[str, Any] | None) -> str:
        return "none within 1 point" if t is None else \
            f"#{t['number']} ({t['accuracy']:.4f}, {t['lat']:.4f})"

    for r in rows:
        cells = [str(r["seed"]), str(r["front_size"]), at(r["top"]), at(r["fast"]), f"{r['internal']:.1f}×"]
        for ref in d["references"]:
            x = r["refs"].get(ref)
            cells += ["–", "–"] if x is None else [at(x["pick"]), "–" if x["speedup"] is None
                                                   else f"{x['speedup']:.1f}×"]
        out.append("| " + " | ".join(cells) + " |")
    out += ["", "| reference network | accuracy per seed | accuracy | latency (ms/sample) | "
            "speed-up of the front's pick | ≥ 5× on |", "|---|---|---|---|---|---|"]
    runs = d["runs"]
    for ref in d["references"]:
        acc = [runs.get(f"ref|{ref}|{s}", {}).get("final_eval", {}).get("accuracy") for s in SEEDS]
        sp = [r["refs"].get(ref, {}).get("speedup") for r in rows]
        ms = lat.get("ms", {}).get(f"ref/{ref}")
        met = sum(x is not None and x >= 5 for x in sp)
        out.append(f"| {ref} | {per_seed(acc, 4)} | {mean_spread(acc, 4)} | "
                   f"{'–' if ms is None else f'{ms:.4f}'} | {mean_spread(sp, 1, '×')} | "
                   f"{met} of {len(sp)} seeds |")
    internal = [r["internal"] for r in rows]
    out += ["", f"Front-internal speed-up (fastest front member within 1 point of the front's most "
            f"accurate): {mean_spread(internal, 1, '×')} (target ≥ 5×: "
            f"{'met' if min(internal) >= 5 else 'not met'} on {sum(x >= 5 for x in internal)} of "
            f"{len(internal)} seeds)."]
    return "\n".join(out)


# ----------------------------------------------------------------------------- (d) workers

WORKER_CASES: dict[str, dict[str, Any]] = {
    "admissions, 6 trials": {"objective": "train", "trials": 6},
    "admissions, 24 trials": {"objective": "train", "trials": 24},
    "toy 0.5 s, 24 trials": {"objective": "toy", "trials": 24, "seconds": 0.5},
    "toy 2 s, 24 trials": {"objective": "toy", "trials": 24, "seconds": 2.0},
    "toy 8 s, 24 trials": {"objective": "toy", "trials": 24, "seconds": 8.0},
}
WORKERS = 2
QUICK = False  # --quick: tiny budgets, everything under runs/claims-quick/


def decompose(spans: list[tuple[str, float, float]], workers: int) -> dict[str, float]:
    """Steady-state utilisation (first start → last end) and where the idle time went.

    ``spans`` are (worker, start, end) of finished trials. Idle worker-time splits into
    ``gap`` (between consecutive trials of a worker: the scheduling work), ``head`` (before a
    worker's first trial) and ``tail`` (after its last, while another still runs); the
    three shares and the utilisation add up to 1.
    """
    t0, t1 = min(a for _, a, _ in spans), max(b for _, _, b in spans)
    total = workers * (t1 - t0)
    busy = sum(b - a for _, a, b in spans)
    by: dict[str, list[tuple[float, float]]] = {}
    for w, a, b in spans:
        by.setdefault(w, []).append((a, b))
    gap = head = tail = 0.0
    for s in by.values():
        s.sort()
        head += s[0][0] - t0
        tail += t1 - s[-1][1]
        gap += sum(max(0.0, s[i + 1][0] - s[i][1]) for i in range(len(s) - 1))
    head += (workers - len(by)) * (t1 - t0)  # a worker that ran nothing was idle throughout
    mean_trial = busy / len(spans)
    mean_gap = gap / max(1, len(spans) - len(by))
    return {"utilisation": busy / total, "gap": gap / total, "head": head / total,
            "tail": tail / total, "mean_trial_s": mean_trial, "mean_gap_s": mean_gap,
            "wall_s": t1 - t0, "trials": len(spans)}


def _worker_case(case: str, spec: dict[str, Any], rep: int) -> dict[str, Any]:
    import optuna

    from scidl.search.runner import describe_objective, run_search
    from scidl.search.settings import SearchSettings
    from scidl.search.space import load_space
    from scidl.search.toy import TOY_SPACE

    d = Path(tempfile.mkdtemp(prefix="claims-workers-", dir=WORK))
    name = f"w-{rep}"
    if spec["objective"] == "toy":
        s = SearchSettings(workload="toy", strategy="random", trials=spec["trials"], space=TOY_SPACE,
                           objective="toy", objective_args={"seconds": spec["seconds"], "steps": 4},
                           out=str(d), metric="accuracy", direction="maximize", seed=rep,
                           heartbeat_s=5.0)
    else:
        s = describe_objective(SearchSettings(
            workload="admissions", strategy="random", trials=spec["trials"],
            space=load_space("admissions"), out=str(d), metric="r2", seed=rep, heartbeat_s=5.0,
            base={"train": {"epochs": 8}, "log": {"tensorboard": False}, "checkpoint": {"final": False}}))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = time.time()
    res = run_search("journal:" + str(d / "study.log"), name, s, workers=WORKERS, quiet=True,
                     spawn=True)
    wall = time.time() - t0
    done = [t for t in res.study.trials if t.state.name == "COMPLETE"]
    spans = [(str(t.user_attrs.get("worker")), t.datetime_start.timestamp(),
              t.datetime_complete.timestamp()) for t in done]
    # the objective's own time (training, or the toy's sleep) inside each trial's span
    objective_s = [float(t.user_attrs["result"]["wall_s"]) for t in done]
    parts = decompose(spans, WORKERS)
    out = {"case": case, "rep": rep, "wall_from_start_s": wall,
           "utilisation_from_start": res.summary.get("utilisation"),
           "states": res.summary.get("states"), "spans": spans, "objective_s": objective_s,
           "objective_share": sum(objective_s) / (WORKERS * parts["wall_s"]), **parts}
    shutil.rmtree(d, ignore_errors=True)
    return out


def claim_workers(reps: list[int], fresh: bool, only: str = "") -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    store("workers", None, {"cases": WORKER_CASES, "workers": WORKERS})
    cases = WORKER_CASES
    if QUICK:
        cases = {"admissions, 2 trials": {"objective": "train", "trials": 2},
                 "toy 0.2 s, 4 trials": {"objective": "toy", "trials": 4, "seconds": 0.2}}
        store("workers", None, {"cases": cases})
    for rep in reps:
        for case, spec in cases.items():
            key = f"{case}|{rep}"
            if only not in case or have("workers", key, fresh):
                continue
            la = list(os.getloadavg())
            r = _worker_case(case, spec, rep)
            print(f"workers {case:24s} rep {rep}: steady {r['utilisation']:.3f} (gap {r['gap']:.3f}, "
                  f"head {r['head']:.3f}, tail {r['tail']:.3f}), trial {r['mean_trial_s']:.2f} s, "
                  f"gap {r['mean_gap_s']:.3f} s", flush=True)
            store("workers", key, {**r, "loadavg_before": la, **stamp()})


def workers_table(d: dict[str, Any]) -> str:
    runs = d.get("runs", {})
    if not runs:
        return "(no results)"
    out = [f"{d['workers']} worker processes (`--workers {d['workers']}`), journal storage, random "
           "sampler; utilisation = busy worker-time ÷ (workers × time from the first trial's start "
           "to the last one's end); the idle rest splits into the gaps between a worker's trials "
           "(scheduling), the head (a worker's first trial starts late) and the tail (one worker "
           "has no trial left while the other finishes); the objective's own time share counts only the "
           "time inside the objective (training, or the toy's sleep), not the trial's storage writes. "
           "Mean [min–max] over the repeats.", "",
           "| case | repeats | mean trial (s) | mean gap between trials (s) | utilisation | gap share | "
           "head share | tail share | objective's own time share | utilisation incl. worker "
           "start-up |", "|---|---|---|---|---|---|---|---|---|---|"]
    for case in d["cases"]:
        rs = [r for r in runs.values() if r["case"] == case]
        if not rs:
            continue
        rs.sort(key=lambda r: r["rep"])

        def col(k: str, digits: int = 3, rs: list[dict[str, Any]] = rs) -> str:
            return mean_spread([r.get(k) for r in rs], digits)

        out.append(f"| {case} | {len(rs)} | {col('mean_trial_s', 2)} | {col('mean_gap_s', 3)} | "
                   f"{col('utilisation')} | {col('gap')} | {col('head')} | {col('tail')} | "
                   f"{col('objective_share')} | {col('utilisation_from_start')} |")
    la = [r["loadavg_before"][0] for r in runs.values() if "loadavg_before" in r]
    if la:
        out += ["", f"Load average (1 min) before the runs: {min(la):.1f}–{max(la):.1f} on "
                f"{load_results().get('meta', {}).get('cpus', os.cpu_count())} cores."]
    return "\n".join(out)


# ----------------------------------------------------------------------------- main

TABLES: dict[str, Callable[[dict[str, Any]], str]] = {
    "inverse": inverse_table, "filtering": filtering_table, "pareto": pareto_table,
    "workers": workers_table,
}


def render(claim: str, section: str | None = None) -> Callable[[dict[str, Any]], str]:
    """The renderer of one claim's ``section`` (default: the claim's name), for
    scripts/render_docs.py."""
    return lambda res: TABLES[claim](res.get(section or claim, {}))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("claim", choices=[*TABLES, "tables"])
    ap.add_argument("--seeds", type=int, nargs="+", default=SEEDS, help="seeds (workers: repeats)")
    ap.add_argument("--fresh", action="store_true", help="recompute runs already stored")
    ap.add_argument("--only", default="", help="workers: only the cases whose name contains this")
    ap.add_argument("--epochs", type=int, default=8,
                    help="pareto: epochs per trial and per reference (8: the space's own; other "
                         "budgets go to their own section pareto_eN)")
    ap.add_argument("--quick", action="store_true",
                    help="tiny budgets (a smoke run), in runs/claims-quick/ (claims.quick.json)")
    args = ap.parse_args(argv)
    global QUICK, RESULTS, WORK
    if args.quick:  # a separate folder: a quick study must never be resumed by a real run
        WORK = ROOT / "runs" / "claims-quick"
        QUICK, RESULTS = True, WORK / "claims.quick.json"
    if args.claim == "tables":
        res = load_results()
        for claim, fn in TABLES.items():
            for sec in [k for k in res if k == claim or k.startswith(f"{claim}_e")] or [claim]:
                print(f"## {sec}\n\n{fn(res.get(sec, {}))}\n")
        return 0
    import torch

    torch.set_num_threads(1)
    WORK.mkdir(parents=True, exist_ok=True)
    os.chdir(WORK)  # data caches and search folders stay under runs/claims
    section = pareto_claim(args.epochs) if args.claim == "pareto" else args.claim
    store(section, None, {"meta": meta(argv)})
    {"inverse": lambda: claim_inverse(args.seeds, args.fresh),
     "filtering": lambda: claim_filtering(args.seeds, args.fresh),
     "pareto": lambda: claim_pareto(args.seeds, args.fresh, epochs=args.epochs),
     "workers": lambda: claim_workers(args.seeds, args.fresh, args.only)}[args.claim]()
    store(section, None, {"meta_end": stamp()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
