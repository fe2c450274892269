"""How much of the optimizer's update each compressor keeps, and whether that predicts
which compressors reach dense's accuracy sooner (``scidl.comm.fidelity``).

For each model of the time-to-accuracy benchmark (``benchmarks/comm_tta.py``: digits
ResNet, weather U-Net, transformer LM, their batch sizes and learning rates) and each
optimizer (Adam; SGD with momentum 0.9), one process trains with exact gradients for
``--steps`` steps. Every step, ``--ranks`` simulated ranks each compute the gradient of
their own share of the global batch; alongside, each compressor sees the same gradients:

- ``powersgd:R`` (error feedback, warm-started power iteration) on the ranks' mean
  gradient, which is what the distributed version reduces to (it is linear in the
  gradient);
- ``topk:D`` on each rank's own gradient with that rank's error feedback, per tensor,
  the results averaged (SciDL's ``topk`` selects per parameter too);
- ``quant:B`` (B-bit integers in blocks of 1,024 entries, the workers' and the owner's
  error feedback) on the ranks' mean gradient: SciDL's ``quant`` quantizes each rank's
  gradient before the sum, so this is close to it, not the same.

A shadow optimizer fed the compressed mean and one fed the exact mean each give the
update they would apply; the figure is the cosine between the two, per step, and
δ = cos², averaged over the steps after the first five. Then, for the rows the
time-to-accuracy benchmark measured at 100 Mbit/s, the predicted time to dense's final
metric, (compressed step time ÷ dense step time) ÷ δ, next to the measured one.

    python benchmarks/comm_fidelity.py [--models digits weather lm] [--optimizers adam sgd]
        [--seeds 0 1 2] [--steps 30] [--ranks 4] [--compressors powersgd:4 topk:0.01]

Resumable: cases already in the JSON are skipped. Writes
benchmarks/results/comm_fidelity.json (render with ``python scripts/render_docs.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import comm_tta  # noqa: E402

import scidl  # noqa: E402
from scidl.comm.fidelity import EFCompressor, UpdateShadow, cosine  # noqa: E402
from scidl.train.api import build_task  # noqa: E402
from scidl.workloads.base import BuildContext  # noqa: E402

OUT = HERE / "results" / "comm_fidelity.json"
SKIP = 5  # first steps left out of the mean (Adam's first updates are sign-like)


def _task(model: str, seed: int, root: Path) -> tuple[Any, int, dict[str, float]]:
    """The model's task, its per-rank batch and learning rates, as comm_tta runs it."""
    spec = comm_tta.MODELS[model]
    sets = [s for s in spec["set"] if not s.startswith("train.batch_size=")]
    batch = int(next(s for s in spec["set"] if s.startswith("train.batch_size=")).split("=")[1])
    cfg = scidl.load_config(spec["workload"], overrides=[*sets, f"train.seed={seed}"])
    ctx = BuildContext(seed=seed, device=torch.device("cpu"), run_dir=root, data_dir=root / ".data")
    return build_task(cfg, ctx, None), batch, spec["lr"]


def _compressor(label: str, seed: int) -> EFCompressor:
    name, _, value = label.partition(":")
    if name == "powersgd":
        return EFCompressor("powersgd", rank=int(value or 4), seed=seed)
    if name == "topk":
        return EFCompressor("topk", density=float(value or 0.01))
    if name == "quant":
        return EFCompressor("quant", bits=int(value or 8))
    raise SystemExit(f"unknown compressor {label!r} (powersgd:R, topk:D or quant:B)")


def run_case(model: str, optimizer: str, seed: int, steps: int, ranks: int,
             compressors: list[str], root: Path) -> dict[str, Any]:
    """Cosines between compressed and exact updates along an exact training run."""
    torch.manual_seed(seed)
    task, batch, lrs = _task(model, seed, root)
    net = task.model
    params = [p for p in net.parameters() if p.requires_grad]
    lr = lrs[optimizer]
    opt = (torch.optim.Adam(params, lr=lr) if optimizer == "adam"
           else torch.optim.SGD(params, lr=lr, momentum=0.9))

    def shadow() -> UpdateShadow:
        return UpdateShadow("adam") if optimizer == "adam" else UpdateShadow("sgd", momentum=0.9)

    exact = shadow()
    per = {c: {"shadow": shadow(),
               "comp": ([_compressor(c, seed)] if not c.startswith("topk")
                        else [_compressor(c, seed) for _ in range(ranks)])} for c in compressors}
    cos: dict[str, list[float]] = {c: [] for c in compressors}
    loader = DataLoader(task.train_data, batch_size=batch, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    it = iter(loader)
    losses = []
    t0 = time.perf_counter()
    for _ in range(steps):
        local = []
        for _r in range(ranks):
            try:
                b = next(it)
            except StopIteration:
                it = iter(loader)
                b = next(it)
            net.zero_grad(set_to_none=True)
            loss = task.loss(net, b)
            loss.backward()
            losses.append(loss.detach().item())
            local.append([p.grad.detach().clone() for p in params])
        mean = [torch.stack(gs).mean(0) for gs in zip(*local, strict=True)]
        u = exact.update(mean)
        for c, st in per.items():
            if len(st["comp"]) == 1:
                sent = st["comp"][0].compress(mean)
            else:
                parts = [comp.compress(g) for comp, g in zip(st["comp"], local, strict=True)]
                sent = [torch.stack(xs).mean(0) for xs in zip(*parts, strict=True)]
            cos[c].append(cosine(u, st["shadow"].update(sent)))
        for p, g in zip(params, mean, strict=True):
            p.grad = g
        opt.step()
    return {"model": model, "optimizer": optimizer, "seed": seed, "steps": steps, "ranks": ranks,
            "cos_update": cos,
            "delta": {c: statistics.mean(x * x for x in v[SKIP:]) for c, v in cos.items()},
            "loss_first_last": [losses[0], losses[-1]], "seconds": time.perf_counter() - t0}


SETTING = {"powersgd": "rank", "topk": "density", "quant": "quant_bits"}  # the label's value


def tta_label(comp: str) -> str:
    """The time-to-accuracy benchmark's label of the strategy a compressor models:
    ``powersgd:4`` → ``powersgd`` (its setting there), ``quant:4`` → ``quant:quant_bits=4``."""
    from scidl.comm import CommConfig

    strat, _, value = comp.partition(":")
    key = SETTING[strat]
    default = comm_tta.STRATEGY_SETTINGS.get(strat, {}).get(key, getattr(CommConfig(), key))
    if not value or float(value) == float(default):
        return strat
    return f"{strat}:{key}={value}"


def predictions(cases: list[dict[str, Any]], tta: dict[str, Any]) -> list[dict[str, Any]]:
    """Per model, optimizer and compressor: δ over the seeds (mean, min, max), and where
    comm_tta measured the strategy at 100 Mbit/s with its default settings, the step-time
    ratio to dense, the predicted time to dense's final metric (ratio ÷ mean δ) and the
    measured one (mean over the seeds that reached it, and how many did)."""
    rows = comm_tta.summarise(tta)
    by = {}
    for r in rows:
        if r["link"] != "100mbit" or r["steps"] != 60:
            continue
        by[(r["model"], r["optimizer"], r["strategy"])] = r
    groups: dict[tuple[str, str, str], list[float]] = {}
    for c in cases:
        for comp, d in c["delta"].items():
            groups.setdefault((c["model"], c["optimizer"], comp), []).append(d)
    out = []
    for (model, optimizer, comp), ds in sorted(groups.items()):
        label = tta_label(comp)
        row: dict[str, Any] = {"model": model, "optimizer": optimizer, "compressor": comp,
                               "delta": {"mean": statistics.mean(ds), "min": min(ds), "max": max(ds),
                                         "n": len(ds)}}
        r, d = by.get((model, optimizer, label)), by.get((model, optimizer, "dense"))
        if r and d and r.get("step_s") and d.get("step_s"):
            ratio = r["step_s"]["mean"] / d["step_s"]["mean"]
            row.update({"step_vs_dense": ratio, "predicted_tta_vs_dense": ratio / statistics.mean(ds),
                        "measured_tta_vs_dense": r["tta_vs_dense"]["mean"] if r["tta_vs_dense"] else None,
                        "reached": r["reached"], "seeds_measured": r["seeds"],
                        "steps_run": r["steps_run"]})
        out.append(row)
    return out


def markdown(data: dict[str, Any]) -> str:
    """The table of ``rows``: δ per model, optimizer and compressor, and the predicted
    against the measured time to dense's final metric where it was measured."""
    def f2(x: float | None) -> str:
        return "–" if x is None else f"{x:.2f}"

    head = ["model", "optimizer", "compressor", "δ = cos² of the update, mean [min–max]",
            "step time ÷ dense (100 Mbit/s)", "predicted time to dense's final ÷ dense",
            "measured (seeds that reached it)"]
    rows = []
    for r in data["rows"]:
        d = r["delta"]
        measured = "–"
        if "reached" in r:
            measured = (f"{f2(r['measured_tta_vs_dense'])} ({r['reached']}/{r['seeds_measured']})"
                        if r["reached"] else
                        f"not within {max(r['steps_run'])} steps (0/{r['seeds_measured']})")
        rows.append([r["model"], "Adam" if r["optimizer"] == "adam" else "SGD + momentum",
                     f"`{r['compressor']}`",
                     f"{d['mean']:.3f} [{d['min']:.3f}–{d['max']:.3f}] ({d['n']} seeds)",
                     f2(r.get("step_vs_dense")), f2(r.get("predicted_tta_vs_dense")), measured])
    cases = data["cases"]
    note = (f"{len(cases)} runs of {cases[0]['steps']} steps with exact gradients, "
            f"{cases[0]['ranks']} simulated ranks, δ averaged over the steps after the first "
            f"{SKIP}; the step-time ratio and the measured times come from "
            "`benchmarks/results/comm_tta.json` (4 virtual nodes at 100 Mbit/s, dense's "
            f"60-step budget); torch {data['versions']['torch']}, {data['date']}. "
            + "Commands: " + ", ".join(f"`{c.strip()}`" for c in _commands(data)) + ".")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n\n" + note


def _commands(data: dict[str, Any]) -> list[str]:
    """Every invocation that added cases (files from before kept one, ``command``)."""
    return list(data.get("commands") or ([data["command"]] if "command" in data else []))


def _save(data: dict[str, Any], out_path: Path) -> None:
    """Write the results file whole or not at all."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(out_path)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(comm_tta.MODELS), choices=list(comm_tta.MODELS))
    ap.add_argument("--optimizers", nargs="+", default=["adam", "sgd"], choices=["adam", "sgd"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--ranks", type=int, default=4, help="simulated ranks (comm_tta: 4 nodes)")
    ap.add_argument("--compressors", nargs="+", default=["powersgd:4", "topk:0.01"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    if args.steps <= SKIP:
        ap.error(f"--steps must be more than {SKIP}")
    torch.set_num_threads(args.threads)
    out_path = Path(args.out)
    data = json.loads(out_path.read_text()) if out_path.exists() else {"cases": []}
    done = {(c["model"], c["optimizer"], c["seed"], c["steps"], c["ranks"], tuple(c["cos_update"]))
            for c in data["cases"]}
    root = Path(os.environ.get("TMPDIR", "/tmp")) / "scidl-comm-fidelity"
    for model in args.models:
        for optimizer in args.optimizers:
            for seed in args.seeds:
                key = (model, optimizer, seed, args.steps, args.ranks, tuple(args.compressors))
                if key in done:
                    continue
                case = run_case(model, optimizer, seed, args.steps, args.ranks, args.compressors, root)
                data["cases"].append(case)
                print(f"{model} {optimizer} seed {seed}: " + ", ".join(
                    f"{c} δ {d:.3f}" for c, d in case["delta"].items())
                    + f" ({case['seconds']:.0f} s)", flush=True)
                data["rows"] = predictions(data["cases"], json.loads(comm_tta.RESULTS.read_text()))
                command = "python benchmarks/comm_fidelity.py " + " ".join(sys.argv[1:])
                data["commands"] = [c for c in _commands(data) if c != command] + [command]
                data["command"] = command
                data["date"] = time.strftime("%Y-%m-%d")
                data["versions"] = {"torch": torch.__version__}
                _save(data, out_path)
    rows = predictions(data["cases"], json.loads(comm_tta.RESULTS.read_text()))
    if data.get("cases") and rows != data.get("rows"):  # comm_tta's runs changed since
        data["rows"] = rows
        _save(data, out_path)
    for r in rows:
        pred = r.get("predicted_tta_vs_dense")
        meas = r.get("measured_tta_vs_dense")
        print(f"{r['model']:8} {r['optimizer']:5} {r['compressor']:12} δ {r['delta']['mean']:.3f}"
              + (f"  step {r['step_vs_dense']:.2f}  predicted {pred:.2f}  measured "
                 + (f"{meas:.2f}" if meas is not None else "never")
                 + f" ({r['reached']}/{r['seeds_measured']})" if pred is not None else ""))


if __name__ == "__main__":
    main()
