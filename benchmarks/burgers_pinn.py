"""Burgers PINNs through the trainer: Adam then full-batch L-BFGS (``train.phases``).

Each run is a fresh ``scidl train`` process (the command recorded in the JSON is the one
a user types); per seed it records the final ``rel_l2`` (and the other metrics), each
phase's last evaluation, the training time (``wall_s`` of ``summary.json``: the training
loop, start-up excluded), the process's whole wall time and the machine's load average
before and after (the machine may be shared). Results are merged into
benchmarks/results/burgers_pinn.json, one entry per run label; render them into
docs/workloads/burgers.md and burgers_hd.md with ``python scripts/render_docs.py``.

    python benchmarks/burgers_pinn.py --only demo --seeds 0 1 2
    python benchmarks/burgers_pinn.py --only fp64 --seeds 0
    python benchmarks/burgers_pinn.py --eval-cost     # one loss + backward: the two residual forms
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "burgers_pinn.json"

#: label -> (what it shows, the target rel_l2, arguments after ``scidl train``)
RUNS: dict[str, tuple[str, float, list[str]]] = {
    "demo": ("`make demo`: the burgers defaults", 1e-2, ["burgers", "--nproc", "2"]),
    "fp64": ("float64, longer L-BFGS", 1e-3, [
        "burgers", "--nproc", "2", "train.precision=fp64",
        "train.phases=[{optim: adam, steps: 400}, {optim: lbfgs, steps: 100, lbfgs_max_iter: 50, "
        "lbfgs_tolerance_change: 0, lbfgs_tolerance_grad: 0}]"]),
    "hd_d2": ("burgers_hd, d = 2", 5e-3, [
        "burgers_hd", "--nproc", "2", "task.d=2", "train.phases=adam:200,lbfgs:20"]),
    "hd_d100": ("burgers_hd, d = 100 (sdgd-16)", 0.2, [
        "burgers_hd", "--nproc", "2", "task.d=100", "task.n_collocation=1000",
        "train.phases=adam:300"]),
}


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _children_cpu() -> float:
    """User + system CPU seconds of this process's finished children (all ranks)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_one(args: list[str], seed: int, root: Path) -> dict[str, Any]:
    """One ``scidl train`` process; the summary's results and timings."""
    run_dir = root / f"seed{seed}-{time.time_ns()}"
    cmd = [sys.executable, "-m", "scidl", "train", *args, f"train.seed={seed}",
           f"log.run_dir={run_dir}", "log.progress=false", "log.tensorboard=false",
           "log.pictures=false"]
    before = loadavg()
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=os.environ.copy())
    wall = time.perf_counter() - t0
    cpu = _children_cpu() - cpu0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    s = json.loads((run_dir / "summary.json").read_text())
    return {
        "seed": seed, "final_eval": s["final_eval"], "rel_l2": s["final_eval"].get("rel_l2"),
        "train_s": s["wall_s"], "process_s": round(wall, 1), "steps": s["steps"],
        # CPU seconds of all ranks together (start-up included): less sensitive to other
        # jobs on the machine than wall time
        "cpu_s": round(cpu, 1),
        "phases": [{"optim": p["optim"], "steps": p["trained_steps"],
                    "train_time_s": p["train_time_s"], "final_loss": p["final_loss"],
                    "rel_l2": p["final_eval"].get("rel_l2")} for p in s.get("phases") or []],
        "loadavg_before": before, "loadavg_after": loadavg(),
        "threads_per_proc": s.get("threads_per_proc"),
    }


def eval_cost(points: int, repeats: int, calls: int) -> dict[str, Any]:
    """Time of one loss + backward of the burgers defaults' network at ``points`` points
    (one rank's shard), forward-propagated derivatives vs nested reverse mode, float32 and
    float64, one thread; the forms alternate within each repeat (side by side)."""
    import statistics

    import torch

    from scidl.workloads.burgers.nets import BurgersNet
    from scidl.workloads.burgers.workload import autograd_residual, burgers_residual

    torch.set_num_threads(1)
    nu = 0.01 / 3.141592653589793
    forms = {"forward": burgers_residual, "nested_autograd": autograd_residual}
    out: dict[str, Any] = {"points": points, "repeats": repeats, "calls_per_repeat": calls,
                           "loadavg_before": loadavg(), "results": {}}
    for dtype in (torch.float32, torch.float64):
        torch.manual_seed(0)
        net = BurgersNet(32, 4, hard_constraints=True).to(dtype)
        xt = torch.rand(points, 2, dtype=dtype)
        xt[:, 0] = 2 * xt[:, 0] - 1
        wall: dict[str, list[float]] = {k: [] for k in forms}
        cpu: dict[str, list[float]] = {k: [] for k in forms}
        for rep in range(repeats):
            for name in (list(forms) if rep % 2 == 0 else list(forms)[::-1]):
                fn = forms[name]
                for _ in range(3):  # warm-up
                    fn(net, xt, nu)[1].pow(2).mean().backward()
                t0, c0 = time.perf_counter(), time.process_time()
                for _ in range(calls):
                    net.zero_grad()
                    fn(net, xt, nu)[1].pow(2).mean().backward()
                wall[name].append((time.perf_counter() - t0) / calls)
                cpu[name].append((time.process_time() - c0) / calls)
        key = str(dtype).replace("torch.", "")
        out["results"][key] = {k: {"wall_ms": 1e3 * statistics.median(wall[k]),
                                   "cpu_ms": 1e3 * statistics.median(cpu[k])} for k in forms}
        print(key, json.dumps(out["results"][key]), flush=True)
    out["loadavg_after"] = loadavg()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=sorted(RUNS), default=sorted(RUNS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--eval-cost", action="store_true",
                    help="only time one loss + backward (both residual forms)")
    args = ap.parse_args()
    if args.eval_cost:
        save(args.out, "eval_cost", eval_cost(points=2000, repeats=5, calls=20))
        return 0
    with tempfile.TemporaryDirectory(prefix="scidl-burgers-") as tmp:
        for label in args.only:
            what, target, cli = RUNS[label]
            entry: dict[str, Any] = {
                "what": what, "target_rel_l2": target,
                "command": "scidl train " + " ".join(a if " " not in a else f"'{a}'" for a in cli),
                "cpus": os.cpu_count(), "seeds": []}
            for seed in args.seeds:  # written after each seed: a cut-short run keeps its seeds
                r = run_one(cli, seed, Path(tmp))
                print(json.dumps({"run": label, **r}), flush=True)
                entry["seeds"].append(r)
                save(args.out, label, entry)
    return 0


def save(out: Path, label: str, entry: dict[str, Any]) -> None:
    """Replace ``label``'s entry in ``out``, re-reading the file first: runs of other labels
    (another invocation of this script) keep theirs, and seeds of the same command run by
    another invocation are kept (a seed run again replaces its earlier result)."""
    data = json.loads(out.read_text()) if out.exists() else {}
    old = data.get(label)
    if old and old.get("command") == entry.get("command") and "seeds" in entry:
        by_seed = {r["seed"]: r for r in old.get("seeds", [])}
        by_seed.update({r["seed"]: r for r in entry["seeds"]})
        entry = {**entry, "seeds": [by_seed[k] for k in sorted(by_seed)]}
    data[label] = entry
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(out)


if __name__ == "__main__":
    raise SystemExit(main())
