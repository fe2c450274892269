"""``scidl bench-collectives``: time allreduce/allgather/reduce-scatter, fit α, β, γ."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from scidl.runtime.files import atomic_write_text

NAME = "bench-collectives"
HELP = "time collectives over message sizes, fit alpha/beta/gamma, save a hardware profile"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nproc", default="2", help="process counts, comma-separated (default 2)")
    p.add_argument("--min-bytes", type=int, default=4096, help="smallest message (bytes)")
    p.add_argument("--max-bytes", type=int, default=16 * 2**20, help="largest message (bytes)")
    p.add_argument("--factor", type=int, default=4, help="size multiplier between points")
    p.add_argument("--iters", type=int, default=10, help="timed repeats per point (median)")
    p.add_argument("--ops", default="allreduce,allgather,reduce_scatter",
                   help="collectives to time (comma-separated)")
    p.add_argument("--out", help="output folder (default runs/bench-collectives/<time>)")
    p.add_argument("--no-compute-probe", action="store_true",
                   help="skip measuring the compute slowdown with p busy ranks")
    p.add_argument("--hardware-out", help="where to write the hardware YAML "
                   "(default OUT/hardware.yaml)")


def _table(rows: list[dict]) -> str:
    lines = [f"{'op':15s} {'p':>3s} {'bytes':>10s} {'time_us':>10s} {'algbw_GB/s':>11s} "
             f"{'busbw_GB/s':>11s}"]
    for r in rows:
        lines.append(f"{r['op']:15s} {r['ranks']:3d} {r['bytes']:10d} {r['time_s'] * 1e6:10.1f} "
                     f"{r['algbw_Bps'] / 1e9:11.3f} {r['busbw_Bps'] / 1e9:11.3f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from scidl.cli import UserError
    from scidl.scaling.collectives import (
        OPS,
        fit_alpha_beta_gamma,
        fit_by_ranks,
        local_hardware,
        measure_compute_slowdown,
        measure_matmul_flops,
        run_bench,
        size_sweep,
    )
    from scidl.scaling.hardware import Hardware, save_hardware

    try:
        nprocs = [int(x) for x in str(args.nproc).split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--nproc {args.nproc!r}: expected integers like 2 or 2,4") from None
    if not nprocs or min(nprocs) < 2:
        raise UserError("--nproc: collectives need at least 2 processes")
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    bad = [o for o in ops if o not in OPS]
    if bad:
        raise UserError(f"--ops: unknown {', '.join(bad)}; choices: {', '.join(OPS)}")
    if args.min_bytes < 4 or args.max_bytes < args.min_bytes or args.factor < 2:
        raise UserError("need 4 <= --min-bytes <= --max-bytes and --factor >= 2")
    out = Path(args.out or Path("runs") / "bench-collectives" / time.strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    sizes = size_sweep(args.min_bytes, args.max_bytes, args.factor)
    rows = run_bench(nprocs, sizes, ops, iters=args.iters)
    fit = fit_alpha_beta_gamma(rows)
    per_p = fit_by_ranks(rows)
    flops = measure_matmul_flops()
    slowdown = {} if args.no_compute_probe else measure_compute_slowdown(nprocs)
    hw = Hardware.model_validate(local_hardware(fit, flops, max(nprocs), per_p, slowdown))
    hw_path = save_hardware(hw, args.hardware_out or out / "hardware.yaml")
    atomic_write_text(out / "bench.json", json.dumps(
        {"rows": rows, "fit": fit, "fit_by_ranks": per_p, "device_flops": flops,
         "compute_slowdown": slowdown,
         "nproc": nprocs, "sizes": sizes},
        indent=2))
    _plot(rows, fit, out / "collectives_busbw.png")
    print(_table(rows))
    print(f"\nfit: alpha = {fit['alpha'] * 1e6:.1f} us, beta = {fit['beta']:.3g} s/B "
          f"({fit['bandwidth'] / 1e9:.3f} GB/s), gamma = {fit['gamma']:.3g} s/B, "
          f"relative rms error {fit['rel_rms']:.2f} over {fit['n']} timings")
    for p, f in per_p.items():
        print(f"  p = {p}: alpha = {f['alpha'] * 1e6:.1f} us, {f['bandwidth'] / 1e9:.3f} GB/s, "
              f"gamma = {f['gamma']:.3g} s/B, rel. rms error {f['rel_rms']:.2f}")
    print(f"one-thread matmul: {flops / 1e9:.1f} GFLOP/s")
    for p, factor in slowdown.items():
        print(f"  compute slowdown of the slowest of {p} busy ranks: x{factor:.2f}")
    print(f"hardware profile: {hw_path}\nresults: {out / 'bench.json'}")
    return 0


def _plot(rows: list[dict], fit: dict, path: Path) -> None:
    from scidl.scaling.collectives import model_coefficients
    from scidl.scaling.report import _save, new_figure

    fig = new_figure()
    ax = fig.subplots()
    for (op, p) in sorted({(r["op"], r["ranks"]) for r in rows}):
        pts = [r for r in rows if r["op"] == op and r["ranks"] == p]
        n = [r["bytes"] for r in pts]
        line = ax.loglog(n, [r["time_s"] for r in pts], "o", label=f"{op} p={p}")[0]
        model = [sum(c * x for c, x in zip(model_coefficients(op, p, b),
                                            (fit["alpha"], fit["beta"], fit["gamma"]),
                                            strict=True)) for b in n]
        ax.loglog(n, model, "-", color=line.get_color(), alpha=0.6)
    ax.set_xlabel("message size n (bytes)")
    ax.set_ylabel("time (s)")
    ax.set_title("measured (dots) vs fitted alpha-beta-gamma model (lines)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    _save(fig, path)
