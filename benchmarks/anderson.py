"""Anderson acceleration: epochs and wall time vs plain SGD → ``benchmarks/results/anderson.json``.

Two experiments, single process on CPU through the SciDL trainer (the code path of
``scidl train``):

1. ``admissions`` (batch 40, SGD momentum 0.9, lr 1e-3): epochs to validation MSE ≤ 0.01
   (evaluated after every epoch) and time per epoch for plain SGD, safeguarded AA with the
   forward-only safeguard (``aa``, the default ``aa_safeguard_eval=forward``), the same AA
   with the earlier full-closure safeguard (``aa_full``: forward + backward twice per
   extrapolation) and unguarded AA. Per seed the variants run side by side, interleaved,
   ``--repeats`` times in alternating order; the time ratio of a seed is the median over
   its repeats of (median epoch time of the variant) / (median epoch time of SGD in the
   same repeat). Epoch time on both clocks (wall, main-thread CPU) spans each step from
   the previous step's end: batch fetch, step and bookkeeping, evaluation left out.
   Wall time to the target = epochs ratio × time-per-epoch ratio, per seed.
   Forward and backward passes are counted (``passes_per_epoch``).
2. ``burgers`` PINN (Adam, full batch, 2,000 collocation points, no RAR): Adam with and
   without AA, AA at a lower relaxation and AA started late, relative L2 at equal steps.

The load average of the machine is recorded before and after every run: wall-time ratios
are only meaningful when measured side by side; rerun on a quiet machine with

    python benchmarks/anderson.py --only admissions --repeats 5

Usage::

    python benchmarks/anderson.py                      # both (~10 min on 2 busy cores)
    python benchmarks/anderson.py --only burgers --burgers-steps 400
    python benchmarks/anderson.py --quick              # smoke run

Before/after a change of the optimizer, side by side (CPU time per epoch, for a machine
shared with other jobs): export the earlier source tree and alternate the two::

    git archive <commit> src | tar -x -C /tmp/before
    python benchmarks/anderson.py --compare-before /tmp/before/src --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "anderson.json"
sys.path.insert(0, str(Path(__file__).resolve().parent))

AA = ["optim.name=anderson", "optim.aa_base=sgd", "optim.aa_history=5", "optim.aa_every=4",
      "optim.aa_store_every=1", "optim.aa_safeguard=true"]
ADM_VARIANTS: dict[str, list[str]] = {
    "sgd": ["optim.name=sgd"],
    "aa": AA + ["optim.aa_safeguard_eval=forward"],
    "aa_deferred": AA + ["optim.aa_safeguard_eval=forward", "optim.aa_safeguard_sync=deferred"],
    "aa_full": AA + ["optim.aa_safeguard_eval=full"],
    "aa_nosafe": [o for o in AA if "safeguard" not in o] + ["optim.aa_safeguard=false"],
}
ADM_COMMON = ["train.batch_size=40", "optim.lr=1e-3", "optim.momentum=0.9", "train.eval_every=0"]

BURGERS_AA = ["optim.name=anderson", "optim.aa_base=adam", "optim.aa_history=5",
              "optim.aa_every=4", "optim.aa_safeguard=true"]
BURGERS_VARIANTS: dict[str, list[str]] = {
    "adam": ["optim.name=adam"],
    "adam_aa": BURGERS_AA,
    "adam_aa_beta0.5": BURGERS_AA + ["optim.aa_relaxation=0.5"],
    "adam_aa_m10k10": [o for o in BURGERS_AA if "history" not in o and "every" not in o]
    + ["optim.aa_history=10", "optim.aa_every=10"],
    # late start: after 300 of the default 400 steps Adam's second moments have settled and the cosine
    # rate is small, so one Adam step is closest to a fixed map there
    "adam_aa_late": BURGERS_AA + ["optim.aa_wait=300"],
}


def load() -> float:
    return os.getloadavg()[0]


@contextlib.contextmanager
def count_passes() -> Iterator[dict[str, int]]:
    """Count the plans' forward+backward calls and forward-only loss calls (this process)."""
    from scidl.parallel.plan import ParallelPlan

    counts = {"forward_backward": 0, "forward_only": 0}
    plans = [c for c in _subclasses(ParallelPlan) if "forward_backward" in c.__dict__]
    saved = {c: c.__dict__["forward_backward"] for c in plans}
    saved_fl = ParallelPlan.forward_loss

    def wrap(fn: Any) -> Any:
        def inner(self: Any, micro: Any) -> Any:
            counts["forward_backward"] += 1
            return fn(self, micro)
        return inner

    def fl(self: Any, *args: Any, **kwargs: Any) -> Any:
        counts["forward_only"] += 1
        return saved_fl(self, *args, **kwargs)

    for c in plans:
        c.forward_backward = wrap(saved[c])
    ParallelPlan.forward_loss = fl  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        for c, fn in saved.items():
            c.forward_backward = fn
        ParallelPlan.forward_loss = saved_fl  # type: ignore[method-assign]


def _subclasses(cls: type) -> list[type]:
    import scidl.parallel.ddp  # noqa: F401  (register the plan classes)

    out, todo = [], [cls]
    while todo:
        c = todo.pop()
        for s in c.__subclasses__():
            out.append(s)
            todo.append(s)
    return out


class _Clocks:
    """Callbacks: per optimizer step, the main thread's CPU time (the work a step costs,
    insensitive to other jobs competing for the cores) and the wall time, both from one
    step's end to the next, so both clocks span the same work: the batch fetch, the
    step and its bookkeeping, with the per-epoch evaluation left out (``evaluator`` is
    the benchmark's per-epoch evaluation callback)."""

    def __init__(self, evaluator: Any) -> None:
        self.steps: list[float] = []
        self.walls: list[float] = []
        self.last: tuple[float, float] | None = None
        self.evaluator = evaluator

    def on_step_end(self, trainer: Any, row: dict[str, Any]) -> None:
        now = (time.thread_time(), time.perf_counter())
        if self.last is not None:
            self.steps.append(now[0] - self.last[0])
            self.walls.append(now[1] - self.last[1])
        self.evaluator.on_step_end(trainer, row)  # evaluation outside the measured span
        self.last = (time.thread_time(), time.perf_counter())


def _med(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def run_once(variant: str, seed: int, common: list[str]) -> dict[str, Any]:
    """One admissions training run in this process (one rank of it, under a launcher):
    epochs to the targets, median epoch wall and CPU time, passes, counters, load."""
    import optim as ob  # benchmarks/optim.py: the shared harness

    ev = ob._EpochEval()
    cpu = _Clocks(ev)
    l0 = load()
    with count_passes() as passes:
        s, tr = ob.train("admissions", common + ADM_VARIANTS[variant] + [f"train.seed={seed}"],
                         callbacks=[cpu])
    spe = tr.steps_per_epoch
    curve = ob.eval_curve(tr, "mse", ev)
    return {
        "epochs_to_0.01": ob.first_epoch_below(curve, 0.01, spe),
        "epochs_to_0.007": ob.first_epoch_below(curve, 0.007, spe),
        "final_mse": curve[-1][1] if curve else None,
        "epoch_time_median_s": _med(ob.epoch_times(cpu.walls, spe)),
        # the trainer's own step time only (no batch fetch, no bookkeeping), for reference
        "epoch_step_time_median_s": _med(ob.epoch_times(tr.step_times[1:], spe)),
        "epoch_cpu_median_s": _med(ob.epoch_times(cpu.steps, spe)),
        "passes_per_epoch": {k: n / (s["steps"] / spe) for k, n in passes.items()},
        "counters": dict(getattr(tr.optimizer, "counters", {})),
        "load_before": l0, "load_after": load(),
    }


def _free_port() -> int:
    import socket

    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return int(sk.getsockname()[1])


def run_ranks(variant: str, seed: int, common: list[str], nproc: int) -> dict[str, Any]:
    """:func:`run_once` on ``nproc`` gloo processes (torchrun's environment variables);
    rank 0's record (its evaluation, its clocks)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rank0.json"
        job = json.dumps({"variant": variant, "seed": seed, "common": common, "out": str(out)})
        port = str(_free_port())
        procs = []
        for r in range(nproc):
            env = {**os.environ, "RANK": str(r), "WORLD_SIZE": str(nproc), "LOCAL_RANK": str(r),
                   "LOCAL_WORLD_SIZE": str(nproc), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
                   "OMP_NUM_THREADS": "1"}
            procs.append(subprocess.Popen([sys.executable, __file__, "--run-one", job], env=env,
                                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        logs = [p.communicate(timeout=1800)[0].decode(errors="replace") for p in procs]
        if any(p.returncode for p in procs):
            raise SystemExit(f"{variant} seed {seed}: a rank failed:\n" + "\n".join(logs)[-3000:])
        return json.loads(out.read_text())


def _run_one_worker(job: str) -> int:
    """``--run-one``: one rank of :func:`run_ranks` (rank 0 writes the record)."""
    import torch

    torch.set_num_threads(1)
    j = json.loads(job)
    rec = run_once(j["variant"], j["seed"], j["common"])
    if int(os.environ.get("RANK", "0")) == 0:
        Path(j["out"]).write_text(json.dumps(rec))
    return 0


def admissions(seeds: list[int], epochs: int, repeats: int, variants: list[str],
               nproc: int = 1) -> dict[str, Any]:
    common = ADM_COMMON + [f"train.epochs={epochs}"]
    if nproc > 1:  # the same global batch of 40, split over the ranks
        common = [f"train.batch_size={40 // nproc}" if o == "train.batch_size=40" else o
                  for o in common]
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for seed in seeds:
        per: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
        for rep in range(repeats):
            order = variants if rep % 2 == 0 else variants[::-1]  # alternate the order
            for v in order:
                per[v].append(run_once(v, seed, common) if nproc == 1
                              else run_ranks(v, seed, common, nproc))
                l0 = per[v][-1]["load_before"]
                r = per[v][-1]
                print(f"seed {seed} rep {rep} {v:10s} e(0.01)={r['epochs_to_0.01']} "
                      f"epoch={1e3 * r['epoch_time_median_s']:.1f}ms "
                      f"cpu={1e3 * r['epoch_cpu_median_s']:.1f}ms load={l0:.1f}", flush=True)
        for v in variants:
            first = per[v][0]  # epochs are deterministic: every repeat gives the same
            ratios = [a["epoch_time_median_s"] / b["epoch_time_median_s"]
                      for a, b in zip(per[v], per[variants[0]], strict=True)]
            cpu_ratios = [a["epoch_cpu_median_s"] / b["epoch_cpu_median_s"]
                          for a, b in zip(per[v], per[variants[0]], strict=True)]
            runs[v].append({
                "seed": seed, **{k: first[k] for k in ("epochs_to_0.01", "epochs_to_0.007",
                                                     "final_mse", "counters", "passes_per_epoch")},
                "epochs_identical_over_repeats": all(
                    p["epochs_to_0.01"] == first["epochs_to_0.01"] for p in per[v]),
                "epoch_time_median_s": [p["epoch_time_median_s"] for p in per[v]],
                "time_per_epoch_ratio": _med(ratios), "time_per_epoch_ratios": ratios,
                "epoch_cpu_median_s": [p["epoch_cpu_median_s"] for p in per[v]],
                "cpu_per_epoch_ratio": _med(cpu_ratios), "cpu_per_epoch_ratios": cpu_ratios,
                "load": [(p["load_before"], p["load_after"]) for p in per[v]],
            })
    table: dict[str, Any] = {}
    base = runs[variants[0]]
    for v in variants:
        rs = runs[v]
        e_ratio = [r["epochs_to_0.01"] / p["epochs_to_0.01"] for r, p in zip(rs, base, strict=True)
                   if r["epochs_to_0.01"] and p["epochs_to_0.01"]]
        reached = [r["epochs_to_0.01"] for r in rs if r["epochs_to_0.01"]]
        base_reached = [p["epochs_to_0.01"] for r, p in zip(rs, base, strict=True)
                        if r["epochs_to_0.01"] and p["epochs_to_0.01"]]
        wall = [r["epochs_to_0.01"] * r["time_per_epoch_ratio"] / p["epochs_to_0.01"]
                for r, p in zip(rs, base, strict=True) if r["epochs_to_0.01"] and p["epochs_to_0.01"]]
        cpu = [r["epochs_to_0.01"] * r["cpu_per_epoch_ratio"] / p["epochs_to_0.01"]
               for r, p in zip(rs, base, strict=True) if r["epochs_to_0.01"] and p["epochs_to_0.01"]]
        table[v] = {
            "epochs_to_0.01": [r["epochs_to_0.01"] for r in rs],
            "epochs_ratio_median": _med(e_ratio),
            "epochs_ratio_of_sums": (sum(reached) / sum(base_reached)
                                     if len(reached) == len(rs) and base_reached else None),
            "time_per_epoch_ratio_median": _med([r["time_per_epoch_ratio"] for r in rs]),
            "wall_to_0.01_ratio_median": _med(wall),
            "cpu_per_epoch_ratio_median": _med([r["cpu_per_epoch_ratio"] for r in rs]),
            "cpu_to_0.01_ratio_median": _med(cpu),
            "passes_per_epoch": rs[0]["passes_per_epoch"],
            "rejected_fraction": _med([
                r["counters"]["rejected"] / max(r["counters"]["rejected"] + r["counters"]["extrapolations"], 1)
                for r in rs if "rejected" in r["counters"]]),
        }
    return {"seeds": seeds, "epochs": epochs, "repeats": repeats, "nproc": nproc, "overrides": common,
            "variants": {v: ADM_VARIANTS[v] for v in variants}, "runs": runs, "table": table}


def burgers(steps: int, seeds: list[int], variants: list[str]) -> dict[str, Any]:
    import optim as ob

    common = ["train.phases=none", f"train.epochs={steps}", f"train.eval_every={max(steps // 10, 1)}",
              "task.n_collocation=2000", "task.rar_every=0", "optim.lr=3e-3",
              "optim.schedule=cosine", "optim.min_lr_factor=0.03"]
    out: dict[str, Any] = {"steps": steps, "overrides": common,
                           "variants": {v: BURGERS_VARIANTS[v] for v in variants}, "runs": {}}
    for seed in seeds:
        for v in variants:
            l0 = load()
            with count_passes() as passes:
                s, tr = ob.train("burgers", common + BURGERS_VARIANTS[v] + [f"train.seed={seed}"])
            curve = ob.eval_curve(tr, "rel_l2")
            out["runs"].setdefault(v, []).append({
                "seed": seed, "curve": curve, "final_rel_l2": curve[-1][1],
                "train_time_s": sum(tr.step_times), "passes": dict(passes),
                "counters": dict(getattr(tr.optimizer, "counters", {})),
                "load": (l0, load())})
            print(f"burgers {v:16s} seed {seed}: rel_l2={curve[-1][1]:.4f} "
                  f"t={sum(tr.step_times):.1f}s {out['runs'][v][-1]['counters']}", flush=True)
    return out


# ----------------------------------------------------------------------------- tables


def _f(x: Any, nd: int = 2) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def table_admissions(d: dict[str, Any], key: str = "admissions") -> str:
    s = d[key]
    loads = [x for rs in s["runs"].values() for r in rs for pair in r["load"] for x in pair]
    head = ("| variant | epochs to MSE ≤ 0.01 per seed | epochs ÷ SGD (median of seeds; ratio of sums) "
            "| time per epoch ÷ SGD (median) | wall time to MSE ≤ 0.01 ÷ SGD (median) "
            "| CPU per epoch ÷ SGD (median) | CPU to MSE ≤ 0.01 ÷ SGD (median) "
            "| extra ms per epoch over SGD, wall / CPU (median) "
            "| fwd+bwd / fwd-only passes per epoch | rejected |\n|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    base = next(iter(s["table"]))
    for v, t in s["table"].items():
        p = t["passes_per_epoch"]
        rej = "–" if t["rejected_fraction"] is None else f"{t['rejected_fraction']:.0%}"
        extra = [_extra_ms(s["runs"][v], s["runs"][base], k)
                 for k in ("epoch_time_median_s", "epoch_cpu_median_s")]
        rows.append(
            f"| {v} | {', '.join('–' if e is None else str(e) for e in t['epochs_to_0.01'])} "
            f"| {_f(t['epochs_ratio_median'])}; {_f(t['epochs_ratio_of_sums'])} "
            f"| {_f(t['time_per_epoch_ratio_median'])} | {_f(t['wall_to_0.01_ratio_median'])} "
            f"| {_f(t['cpu_per_epoch_ratio_median'])} | {_f(t['cpu_to_0.01_ratio_median'])} "
            f"| {_f(extra[0])} / {_f(extra[1])} "
            f"| {p['forward_backward']:.1f} / {p['forward_only']:.1f} "
            f"| {rej} |")
    nproc = s.get("nproc", 1)
    procs = "1 process" if nproc == 1 else f"{nproc} gloo processes (batch {40 // nproc} each)"
    return (f"**admissions, batch 40, {procs}, {s['epochs']} epochs, seeds {s['seeds']}, "
            f"{s['repeats']} interleaved repeats per seed; load average during the runs "
            f"{min(loads):.1f}–{max(loads):.1f} on {d['meta']['cpus']} CPUs**\n\n" + head + "\n"
            + "\n".join(rows) + "\n\n" + verdicts(s))


def _extra_ms(runs: list[dict[str, Any]], base: list[dict[str, Any]], key: str) -> float | None:
    """Median over seeds and repeats of (variant - SGD) epoch time in ms, same repeat:
    the variant's absolute cost, comparable between the wall and the CPU clock, which
    cover different spans of a step (the CPU clock also counts loading the batch)."""
    diffs = [1e3 * (a - b) for r, q in zip(runs, base, strict=True)
             for a, b in zip(r[key], q[key], strict=True) if a is not None and b is not None]
    return _med(diffs)


#: goals for safeguarded AA against SGD on admissions (ratios, lower is better)
GOALS = {"epochs_ratio_median": ("epochs to MSE ≤ 0.01", 0.55),
         "time_per_epoch_ratio_median": ("wall time per epoch", 1.3),
         "wall_to_0.01_ratio_median": ("wall time to MSE ≤ 0.01", 0.7),
         "cpu_per_epoch_ratio_median": ("CPU time per epoch", 1.3),
         "cpu_to_0.01_ratio_median": ("CPU time to MSE ≤ 0.01", 0.7)}


def verdicts(s: dict[str, Any]) -> str:
    """One line per goal for ``aa`` (and ``aa_full`` for comparison)."""
    lines = []
    for key, (what, goal) in GOALS.items():
        parts = []
        for v in ("aa", "aa_deferred", "aa_full"):
            x = s["table"].get(v, {}).get(key)
            if x is not None:
                parts.append(f"`{v}` {x:.2f}× ({'met' if x <= goal else 'not met'})")
        if parts:
            lines.append(f"- {what} ÷ SGD, goal ≤ {goal}: " + ", ".join(parts) + ".")
    t = s["table"].get("aa", {})
    if t.get("epochs_ratio_of_sums") is not None:
        lines.append(f"- epochs ratio as a ratio of the seeds' sums (not medians): "
                     f"`aa` {t['epochs_ratio_of_sums']:.2f}.")
    return "\n".join(lines)


def table_burgers(d: dict[str, Any]) -> str:
    s = d["burgers"]
    rows = []
    base = statistics.mean(r["final_rel_l2"] for r in s["runs"]["adam"]) if "adam" in s["runs"] else None
    for v, rs in s["runs"].items():
        c = rs[0]["counters"]
        ex = f"{c['extrapolations']} / {c['rejected']}" if "extrapolations" in c else "–"
        errs = ", ".join(f"{r['final_rel_l2']:.4f}" for r in rs)
        ratio = statistics.mean(r["final_rel_l2"] for r in rs) / base if base else None
        rows.append(f"| {v} | {errs} | {_f(ratio)} | {ex} "
                    f"| {rs[0]['passes']['forward_backward']} / {rs[0]['passes']['forward_only']} "
                    f"| {statistics.mean(r['train_time_s'] for r in rs):.1f} |")
    loads = [x for rs in s["runs"].values() for r in rs for x in r["load"]]
    return (f"**burgers PINN, Adam, {s['steps']} full-batch steps, "
            f"{len(next(iter(s['runs'].values())))} seed(s); load average "
            f"{min(loads):.1f}–{max(loads):.1f}**\n\n"
            "| variant | rel. L2 at equal steps | ÷ Adam | accepted / rejected "
            "| fwd+bwd / fwd-only passes | train time (s) |\n|---|---|---|---|---|---|\n"
            + "\n".join(rows))


# ----------------------------------------------------------------------------- before/after


def compare_before_after(before_src: Path, rounds: int, repeats: int, epochs: int,
                         seeds: list[int]) -> dict[str, Any]:
    """``sgd`` and ``aa`` on admissions with the source tree ``before_src`` and with this
    tree, each in a fresh process, alternating which goes first, ``rounds`` times; per
    tree the per-seed ratios ``aa ÷ sgd`` of CPU (and wall) time per epoch."""
    import subprocess
    import tempfile

    trees = {"before": str(before_src), "after": str(ROOT / "src")}
    out: dict[str, Any] = {"rounds": rounds, "repeats": repeats, "epochs": epochs,
                           "seeds": seeds, "before_src": str(before_src), "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for tree in (["before", "after"] if r % 2 == 0 else ["after", "before"]):
                path = Path(tmp) / f"{tree}{r}.json"
                env = {**os.environ, "PYTHONPATH": trees[tree]}
                cmd = [sys.executable, __file__, "--only", "admissions", "--variants", "sgd", "aa",
                       "--repeats", str(repeats), "--epochs", str(epochs), "--out", str(path),
                       "--seeds", *map(str, seeds)]
                l0 = load()
                subprocess.run(cmd, check=True, env=env, cwd=ROOT, capture_output=True)
                adm = json.loads(path.read_text())["admissions"]
                out["runs"].setdefault(tree, []).append({
                    "cpu_ratio_per_seed": [x["cpu_per_epoch_ratio"] for x in adm["runs"]["aa"]],
                    "wall_ratio_per_seed": [x["time_per_epoch_ratio"] for x in adm["runs"]["aa"]],
                    "epochs_to_0.01": adm["table"]["aa"]["epochs_to_0.01"],
                    "sgd_epochs_to_0.01": adm["table"]["sgd"]["epochs_to_0.01"],
                    "load": [l0, load()]})
                print(tree, r, out["runs"][tree][-1], flush=True)
    return summarize_before_after(out)


def summarize_before_after(out: dict[str, Any]) -> dict[str, Any]:
    """Per tree, the medians over every round and seed."""
    for tree, rs in out["runs"].items():
        out[tree] = {"cpu_per_epoch_ratio_median": _med([x for q in rs for x in q["cpu_ratio_per_seed"]]),
                     "wall_per_epoch_ratio_median": _med([x for q in rs for x in q["wall_ratio_per_seed"]])}
    return out


def combine_before_after(prev: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new`` with the rounds of ``prev`` (same trees, seeds, epochs and repeats) in front:
    on a busy machine one invocation's rounds scatter, so ``--append`` pools them."""
    keys = ("before_src", "seeds", "epochs", "repeats")
    if any(prev.get(k) != new.get(k) for k in keys):
        raise SystemExit(f"--append: the stored comparison differs in one of {keys}")
    out = {**new, "rounds": prev["rounds"] + new["rounds"],
           "runs": {t: prev["runs"][t] + new["runs"][t] for t in new["runs"]},
           "commands": [*prev.get("commands", [prev.get("command")]), new.get("command")]}
    return summarize_before_after(out)


def table_before_after(d: dict[str, Any], key: str = "admissions_before_after") -> str:
    s = d[key]
    loads = [x for rs in s["runs"].values() for q in rs for x in q["load"]]
    rows = []
    for tree in ("before", "after"):
        rs = s["runs"][tree]
        rows.append(f"| {tree} | {_f(s[tree]['cpu_per_epoch_ratio_median'])} "
                    f"| {', '.join(_f(x) for q in rs for x in q['cpu_ratio_per_seed'])} "
                    f"| {_f(s[tree]['wall_per_epoch_ratio_median'])} "
                    f"| {', '.join('–' if e is None else str(e) for e in rs[0]['epochs_to_0.01'])} |")
    return (f"**admissions, `aa` ÷ `sgd` per epoch, before and after the change, {s['rounds']} "
            f"alternating rounds × {s['repeats']} repeats × seeds {s['seeds']}, {s['epochs']} "
            f"epochs; load average {min(loads):.1f}–{max(loads):.1f} on {d['meta']['cpus']} CPUs**\n\n"
            "| source | CPU per epoch ÷ SGD (median) | per seed and round | wall per epoch ÷ SGD (median; "
            "noisy under load) | `aa` epochs to MSE ≤ 0.01 per seed |\n|---|---|---|---|---|\n"
            + "\n".join(rows))


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="*", default=None, choices=["admissions", "burgers"])
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=40, help="admissions epochs per run")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved timing repeats per seed")
    ap.add_argument("--variants", nargs="*", default=list(ADM_VARIANTS), choices=list(ADM_VARIANTS))
    ap.add_argument("--burgers-steps", type=int, default=400)
    ap.add_argument("--burgers-variants", nargs="*", default=list(BURGERS_VARIANTS),
                    choices=list(BURGERS_VARIANTS))
    ap.add_argument("--nproc", type=int, default=1,
                    help="admissions on N gloo processes (global batch 40 split over them); "
                         "stored as admissions_<N>proc")
    ap.add_argument("--run-one", default=None, help=argparse.SUPPRESS)  # a rank of --nproc
    ap.add_argument("--quick", action="store_true", help="tiny budgets (smoke run)")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--tables", action="store_true", help="print the tables of the stored JSON")
    ap.add_argument("--compare-before", type=Path, default=None, metavar="SRC",
                    help="before/after: alternate admissions runs of SRC (an earlier src/) and "
                         "of this tree (see the module docstring)")
    ap.add_argument("--rounds", type=int, default=3, help="--compare-before: alternating rounds")
    ap.add_argument("--compare-key", default="admissions_before_after",
                    help="--compare-before: the results key to write (one per compared change)")
    ap.add_argument("--append", action="store_true",
                    help="--compare-before: pool the new rounds with the stored comparison")
    args = ap.parse_args(argv)
    if args.run_one is not None:
        return _run_one_worker(args.run_one)
    if args.nproc < 1:
        ap.error("--nproc must be >= 1")
    out_path = Path(args.out)
    if args.tables:
        stored = json.loads(out_path.read_text())
        keys = [k for k in stored if k.startswith("admissions") and "table" in stored[k]]
        print("\n\n".join([table_admissions(stored, k) for k in keys] + [table_burgers(stored)]))
        return 0
    import torch

    torch.set_num_threads(1)
    todo = set(args.only or ["admissions", "burgers"])
    results: dict[str, Any] = json.loads(out_path.read_text()) if out_path.exists() else {}
    stored_meta = results.get("meta")
    command = "python benchmarks/anderson.py " + " ".join(sys.argv[1:] if argv is None else argv)
    results["meta"] = {"command": command, "torch": torch.__version__,
                       "python": platform.python_version(), "cpus": os.cpu_count(),
                       "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}

    def save() -> None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(results, indent=1, default=str) + "\n")

    if args.compare_before is not None:  # its own meta: the stored runs' meta stays
        meta = results["meta"]
        if stored_meta is not None:
            results["meta"] = stored_meta
        new = compare_before_after(args.compare_before, args.rounds, args.repeats, args.epochs,
                                   args.seeds)
        new.update(command=command, meta=meta)
        prev = results.get(args.compare_key)
        results[args.compare_key] = (combine_before_after(prev, new)
                                     if args.append and prev else new)
        save()
        print(f"wrote {out_path}")
        return 0
    if "admissions" in todo:
        key = "admissions" if args.nproc == 1 else f"admissions_{args.nproc}proc"
        results[key] = admissions(args.seeds, 8 if args.quick else args.epochs,
                                  1 if args.quick else args.repeats, args.variants, args.nproc)
        results[key]["command"] = command
        save()
    if "burgers" in todo:
        results["burgers"] = burgers(20 if args.quick else args.burgers_steps, [0],
                                     args.burgers_variants)
        results["burgers"]["command"] = command
        save()
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
