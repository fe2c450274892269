"""Long-integration study for the neural Wisdom–Holman integrator (``docs/workloads/nbody.md``).

    scidl study nbody train  --model hamiltonian --out nbody_ham.pt
    scidl study nbody train  --model direct      --out nbody_dir.pt
    scidl study nbody kepler  --orbits 10000           # two-body check
    scidl study nbody long --kick classical --steps 100000
    scidl study nbody long --kick classical --scheme wh91 --steps 100000
    scidl study nbody long --kick nbody_ham.pt --steps 100000
    scidl study nbody long --kick nbody_dir.pt --steps 100000
    scidl study nbody general --kick nbody_ham.pt --steps 10000
    scidl study nbody report                          # table + plot

Every command appends its record to ``--json`` (default
``benchmarks/results/workloads_nbody.json``); energy errors are relative, ``|E(t)-E(0)| / |E(0)|``,
on the synchronised state; the secular drift is the slope of a least-squares line through
the signed energy error, expressed as the change over the whole run.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scidl.runtime.files import atomic_write_text
from scidl.workloads.base import BuildContext
from scidl.workloads.nbody.data import orbital_state
from scidl.workloads.nbody.wh import SCHEMES, KickFn, Masses, WHState, integrate, interaction_kick
from scidl.workloads.nbody.workload import NBody, NBodyConfig, build_model

H_STEP = 2.0 * math.pi / 40.0  # WH step: inner period / 40


def reference_system(
    masses: tuple[float, ...] = (1e-3, 3e-4),
    a: tuple[float, ...] = (1.0, 1.83),
    e: float = 0.04,
    inc: float = 0.015,
) -> tuple[np.ndarray, ...]:
    """A fixed star + planets system (Jupiter/Saturn-like for the defaults), COM frame."""
    n = len(masses)
    m = np.array([[1.0, *masses]])
    x = np.zeros((1, n + 1, 3))
    v = np.zeros_like(x)
    for i in range(n):
        x[0, i + 1], v[0, i + 1] = orbital_state(
            1.0, masses[i], a[i], e, inc * (i + 1), 0.3 * i, 1.1 * i, 2.0 * i + 0.5
        )
    x -= (m[..., None] * x).sum(1, keepdims=True) / m.sum()
    v -= (m[..., None] * v).sum(1, keepdims=True) / m.sum()
    return x, v, m


def neural_kick(model: torch.nn.Module) -> KickFn:
    """Wrap a kick network (float64 copy) as a numpy kick function."""
    net = model.double().eval()

    def kick(q: np.ndarray, ms: Masses) -> np.ndarray:
        out = net(torch.from_numpy(q), torch.from_numpy(ms.m))
        return out.detach().numpy()

    return kick


def load_kick(spec: str, scheme: str = "whfast") -> tuple[str, KickFn, str]:
    """(name, kick, scheme): the exact kick of ``scheme``'s split for ``classical``, else
    a trained network with the scheme it was trained for (its saved config)."""
    if spec == "classical":
        return ("classical" if scheme == "whfast" else f"classical_{scheme}"), interaction_kick, scheme
    blob = torch.load(spec, weights_only=True)
    # models saved before the scheme existed were trained on the wh91 split
    cfg = NBodyConfig.model_validate({"scheme": "wh91", **blob["cfg"]})
    model = build_model(cfg)
    model.load_state_dict(blob["state"])
    return cfg.model, neural_kick(model), cfg.scheme


def run_long(
    kick: KickFn,
    x: np.ndarray,
    v: np.ndarray,
    m: np.ndarray,
    steps: int,
    n_records: int = 200,
    partial: Path | None = None,
    scheme: str = "whfast",
) -> dict[str, Any]:
    """Integrate with ``scheme``, recording energy, angular momentum and planet positions.

    With ``partial``, the records so far are rewritten there at every record (so a run cut
    short still leaves its measured prefix)."""
    s0 = WHState.from_inertial(x, v, m, scheme)
    e0 = s0.energy()
    l0 = s0.angular_momentum()
    rows: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []

    def rec(step: int, s: WHState) -> None:
        xi, _ = s.inertial()
        rows.append(
            (
                step,
                (s.energy() - e0) / np.abs(e0),
                np.linalg.norm(s.angular_momentum() - l0, axis=1) / np.linalg.norm(l0, axis=1),
                xi,
            )
        )
        if partial is not None:
            atomic_write_text(  # a crash mid-write keeps the previous snapshot
                partial,
                json.dumps(
                    {
                        "scheme": scheme,
                        "steps_done": step,
                        "wall_s": time.perf_counter() - t0,
                        "steps": [r[0] for r in rows],
                        "dE": [r[1].tolist() for r in rows],
                        "dL": [r[2].tolist() for r in rows],
                        "x": [r[3].tolist() for r in rows],
                    }
                ),
                durable=False,  # rewritten at every record: atomic, without an fsync each time
            )

    t0 = time.perf_counter()
    integrate(s0, H_STEP, steps, kick, record_every=max(1, steps // n_records), on_record=rec)
    wall = time.perf_counter() - t0
    steps_arr = np.array([r[0] for r in rows])
    de = np.stack([r[1] for r in rows])  # (R, B)
    dl = np.stack([r[2] for r in rows])
    slope = np.polyfit(steps_arr, de, 1)[0] * steps  # change over the run from a linear fit
    return {
        "scheme": scheme,
        "steps": steps_arr.tolist(),
        "dE": de.T.tolist(),
        "dL_max": dl.max(0).tolist(),
        "dE_max": np.abs(de).max(0).tolist(),
        "dE_drift": slope.tolist(),
        "ms_per_step": 1000 * wall / steps,
        "positions": np.stack([r[3] for r in rows]),
    }


def cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    """Single-process training with the workload's loss (same as one trainer rank)."""
    torch.set_num_threads(1)
    cfg = NBodyConfig.model_validate({"model": args.model})
    torch.manual_seed(args.seed)
    task = NBody().build(cfg, BuildContext(seed=args.seed))
    model = task.model
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    dl = torch.utils.data.DataLoader(
        task.train_data,
        batch_size=128,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(args.seed),
    )
    total = args.epochs * len(dl)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    )
    t0 = time.perf_counter()
    for _ in range(args.epochs):
        for b in dl:
            opt.zero_grad()
            task.loss(model, b).backward()
            opt.step()
            sched.step()
    metrics = task.evaluate(model, task.val_data)
    torch.save({"cfg": cfg.model_dump(), "state": model.state_dict()}, args.out)
    return {
        "model": cfg.model,
        "epochs": args.epochs,
        "train_s": time.perf_counter() - t0,
        **metrics,
        "path": args.out,
    }


def cmd_kepler(args: argparse.Namespace) -> dict[str, Any]:
    """Two-body orbits (e = 0..0.99) for ``orbits`` periods with a step of 0.7131 periods."""
    es = np.array([0.0, 0.3, 0.6, 0.9, 0.99])
    m = np.tile([[1.0, 1e-3]], (len(es), 1))
    mu = m.sum(1)
    x = np.zeros((len(es), 2, 3))
    v = np.zeros_like(x)
    x[:, 1, 0] = 1 - es
    v[:, 1, 1] = np.sqrt(mu * (1 + es) / (1 - es))
    x -= (m[..., None] * x).sum(1, keepdims=True) / mu[:, None, None]
    v -= (m[..., None] * v).sum(1, keepdims=True) / mu[:, None, None]
    period = 2 * math.pi / np.sqrt(mu[0])
    h = 0.7131 * period
    steps = int(math.ceil(args.orbits / 0.7131))
    s0 = WHState.from_inertial(x, v, m, args.scheme)
    e0, l0 = s0.energy(), s0.angular_momentum()
    t0 = time.perf_counter()
    s = integrate(s0, h, steps)
    wall = time.perf_counter() - t0
    return {
        "scheme": args.scheme,
        "eccentricities": es.tolist(),
        "orbits": steps * 0.7131,
        "steps": steps,
        "dE_rel": (np.abs(s.energy() - e0) / np.abs(e0)).tolist(),
        "dL_rel": (
            np.linalg.norm(s.angular_momentum() - l0, axis=1) / np.linalg.norm(l0, axis=1)
        ).tolist(),
        "wall_s": wall,
    }


def cmd_long(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    name, kick, scheme = load_kick(args.kick, args.scheme)
    x, v, m = reference_system()
    out = run_long(
        kick,
        x,
        v,
        m,
        args.steps,
        partial=Path(args.json).with_suffix(f".{name}.partial.json"),
        scheme=scheme,
    )
    pos = out.pop("positions")
    np.save(Path(args.json).with_suffix(f".{name}.pos.npy"), pos)
    return {"kick": name, "n_steps": args.steps, **out}


def cmd_general(args: argparse.Namespace) -> dict[str, Any]:
    """Systems outside the training set: other masses, and a fourth body."""
    torch.set_num_threads(1)
    name, kick, scheme = load_kick(args.kick, args.scheme)
    res: dict[str, Any] = {"kick": name, "n_steps": args.steps, "scheme": scheme}
    cases = {
        "heavy_masses": reference_system((5e-3, 4e-3)),
        "light_masses": reference_system((3e-5, 2e-5)),
        "four_body": reference_system((1e-3, 3e-4, 2e-4), (1.0, 1.83, 3.3)),
    }
    for case, (x, v, m) in cases.items():
        out = run_long(kick, x, v, m, args.steps, n_records=50, scheme=scheme)
        ref = (
            run_long(interaction_kick, x, v, m, args.steps, n_records=50, scheme=scheme)
            if not name.startswith("classical")
            else out
        )
        s = WHState.from_inertial(x, v, m, scheme)
        kick_err = np.linalg.norm(kick(s.q, s.ms) - interaction_kick(s.q, s.ms)) / np.linalg.norm(
            interaction_kick(s.q, s.ms)
        )
        pos_err = np.abs(out["positions"] - ref["positions"]).max(axis=(1, 2, 3))
        res[case] = {
            "dE_max": out["dE_max"][0],
            "dE_drift": out["dE_drift"][0],
            "dE_max_classical": ref["dE_max"][0],
            "kick_rel_err_t0": float(kick_err),
            "pos_err_end": float(pos_err[-1]),
            "masses": m[0].tolist(),
        }
    return res


def cmd_speed(args: argparse.Namespace) -> dict[str, Any]:
    """Time per WH step (and per kick) for each kick, interleaved repeats, median."""
    torch.set_num_threads(1)
    kicks = {n: (k, s) for n, k, s in (load_kick(k, args.scheme) for k in ["classical", *args.models])}
    x, v, m = reference_system()
    step_t: dict[str, list[float]] = {k: [] for k in kicks}
    kick_t: dict[str, list[float]] = {k: [] for k in kicks}
    for _ in range(args.repeats):
        for name, (kick, scheme) in kicks.items():
            s0 = WHState.from_inertial(x, v, m, scheme)
            t0 = time.perf_counter()
            integrate(s0, H_STEP, args.steps, kick)
            step_t[name].append((time.perf_counter() - t0) / args.steps)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                kick(s0.q, s0.ms)
            kick_t[name].append((time.perf_counter() - t0) / args.steps)
    med = {k: float(np.median(v)) * 1e3 for k, v in step_t.items()}
    return {
        "scheme": {k: s for k, (_, s) in kicks.items()},
        "ms_per_step": med,
        "ms_per_kick": {k: float(np.median(v)) * 1e3 for k, v in kick_t.items()},
        "ratio_to_classical": {k: v / next(iter(med.values())) for k, v in med.items()},
        "steps": args.steps,
        "repeats": args.repeats,
    }


def cmd_report(args: argparse.Namespace) -> dict[str, Any]:
    """Plot energy error and position error vs the classical run from the long-run records
    (``<json>.<kick>.partial.json``, written during ``long``), and summarise them."""
    from matplotlib.figure import Figure

    from scidl.runtime.files import save_figure

    base = Path(args.json)
    runs = {
        k: json.loads(base.with_suffix(f".{k}.partial.json").read_text())
        for k in ("classical", "classical_wh91", "hamiltonian", "direct")
        if base.with_suffix(f".{k}.partial.json").exists()
    }
    ref = (
        {
            s: np.array(x)
            for s, x in zip(runs["classical"]["steps"], runs["classical"]["x"], strict=True)
        }
        if "classical" in runs
        else {}
    )
    fig = Figure(figsize=(12, 4))
    ax = fig.subplots(1, 2)
    summary: dict[str, Any] = {}
    for kick, rec in runs.items():
        steps = np.array(rec["steps"])
        de = np.array(rec["dE"])[:, 0]
        half = len(steps) // 2
        summary[kick] = {
            "scheme": rec.get("scheme", "wh91"),  # records without the field predate whfast
            "steps_done": rec["steps_done"],
            "dE_max": float(np.abs(de).max()),
            "dE_mean_first_half": float(np.abs(de[1:half]).mean()),
            "dE_mean_second_half": float(np.abs(de[half:]).mean()),
            "dE_fit_change_per_1e5_steps": float(np.polyfit(steps, de, 1)[0] * 1e5),
            "dL_max": float(np.array(rec["dL"]).max()),
        }
        color = {"classical": "C0", "classical_wh91": "C3", "hamiltonian": "C1", "direct": "C2"}[kick]
        ax[0].plot(steps[1:], np.abs(de[1:]) + 1e-18, label=kick, color=color)
        if ref and not kick.startswith("classical"):
            pairs = [
                (s, float(np.abs(np.array(x) - ref[s]).max()))
                for s, x in zip(rec["steps"], rec["x"], strict=True)
                if s in ref and s > 0
            ]
            ax[1].plot([p[0] for p in pairs], [p[1] for p in pairs], label=kick, color=color)
            summary[kick]["pos_err"] = {str(s): e for s, e in pairs[:: max(1, len(pairs) // 8)]}
    for a, lab in zip(
        ax, ("|E(t) - E(0)| / |E(0)|", "max position error vs classical WH"), strict=True
    ):
        a.set_yscale("log")
        a.set_xlabel("WH step (inner period / 40)")
        a.set_ylabel(lab)
        a.legend()
    fig.tight_layout()
    save_figure(fig, Path(args.plot), dpi=90)
    return {"kick": "all", **summary}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The options of ``scidl study nbody``."""
    ap.add_argument("command", choices=["train", "kepler", "long", "general", "speed", "report"])
    ap.add_argument("--models", nargs="*", default=[], help="speed: trained model files")
    ap.add_argument("--repeats", type=int, default=5, help="speed: interleaved repeats")
    ap.add_argument("--model", default="hamiltonian", choices=["hamiltonian", "direct"])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="nbody_model.pt")
    ap.add_argument("--orbits", type=int, default=10000)
    ap.add_argument("--kick", default="classical", help="'classical' or a trained model file")
    ap.add_argument(
        "--scheme",
        default="whfast",
        choices=SCHEMES,
        help="Wisdom-Holman scheme of the classical integrator (a trained kick uses its own)",
    )
    ap.add_argument("--steps", type=int, default=100000)
    ap.add_argument("--json", default="benchmarks/results/workloads_nbody.json")
    ap.add_argument("--plot", default="docs/img/nbody_energy.png")


def run(args: argparse.Namespace) -> int:
    """Run one study command and merge its record into ``--json``."""
    fn = {
        "train": cmd_train,
        "kepler": cmd_kepler,
        "long": cmd_long,
        "general": cmd_general,
        "speed": cmd_speed,
        "report": cmd_report,
    }[args.command]
    rec = fn(args)
    if rec:
        key = {
            "train": f"train_{args.model}",
            "kepler": "kepler",
            "long": f"long_{rec.get('kick')}",
            "general": f"general_{rec.get('kick')}",
            "speed": "speed",
            "report": "report",
        }[args.command]
        path = Path(args.json)
        data = json.loads(path.read_text()) if path.exists() else {}
        data[key] = rec
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(data, indent=1))
        print(json.dumps({k: v for k, v in rec.items() if k not in ("steps", "dE")}, indent=1))
    return 0

