"""``scidl bench-collectives``: time allreduce/allgather/reduce-scatter, fit α, β, γ."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from scidl.runtime.files import atomic_write_text

NAME = "bench-collectives"
HELP = "time collectives over message sizes, fit alpha/beta/gamma, save a hardware profile"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nproc", default="2", help="process counts, comma-separated")
    p.add_argument("--min-bytes", type=int, default=4096, help="smallest message (bytes)")
    p.add_argument("--max-bytes", type=int, default=16 * 2**20, help="largest message (bytes)")
    p.add_argument("--factor", type=int, default=4, help="size multiplier between points")
    p.add_argument("--iters", type=int, default=10, help="timed repeats per point (median)")
    p.add_argument("--ops", default="allreduce,allgather,reduce_scatter,allreduce:float16,"
                   "allreduce:bfloat16",
                   help="collectives to time (comma-separated); OP:TYPE times OP on "
                   "float16 or bfloat16 entries (e.g. allreduce:float16; default float32)")
    p.add_argument("--out", help="output folder (default: runs/bench-collectives/<time>)")
    p.add_argument("--no-compute-probe", action="store_true",
                   help="skip measuring the compute slowdown with p busy ranks")
    p.add_argument("--hardware-out", help="where to write the hardware YAML "
                   "(default: OUT/hardware.yaml)")
    p.add_argument("--cluster", metavar="NAME", default=None,
                   help="time across the nodes of virtual cluster NAME, one process per node "
                        "(scidl cluster up; --nproc is then the node count)")
    p.add_argument("--cores", metavar="COUNTS", default=None,
                   help="with --cluster: also time the ops on this machine's loopback at "
                        "these process counts (e.g. 2,4,8; sizes from 256 KiB) and write what "
                        "the shared cores alone sustain into the hardware file (cores_beta), "
                        "for node counts other than the calibrated one")


CORES_MIN_BYTES = 262_144  # the cores' rates: bandwidth-bound sizes only


def _counts(text: str, flag: str) -> list[int]:
    from scidl.cli import UserError

    try:
        counts = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{flag} {text!r}: expected integers like 2 or 2,4") from None
    if not counts or min(counts) < 2:
        raise UserError(f"{flag}: collectives need at least 2 processes")
    return counts


def _table(rows: list[dict]) -> str:
    lines = [f"{'op':15s} {'p':>3s} {'bytes':>10s} {'time_us':>10s} {'algbw_GB/s':>11s} "
             f"{'busbw_GB/s':>11s}"]
    for r in rows:
        lines.append(f"{r['op']:15s} {r['ranks']:3d} {r['bytes']:10d} {r['time_s'] * 1e6:10.1f} "
                     f"{r['algbw_Bps'] / 1e9:11.3f} {r['busbw_Bps'] / 1e9:11.3f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from scidl.cli import UserError
    from scidl.runtime.plotting import caption_text, provenance
    from scidl.scaling.collectives import (
        DTYPES,
        OPS,
        alpha_free_of_sharing,
        contention_fields,
        fit_alpha_beta_gamma,
        fit_by_ranks,
        local_hardware,
        measure_compute_slowdown_stats,
        measure_matmul_flops,
        run_bench,
        size_sweep,
        split_op,
    )
    from scidl.scaling.hardware import Hardware, save_hardware

    nprocs = _counts(args.nproc, "--nproc")
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    for o in ops:
        try:
            split_op(o)
        except KeyError as e:
            raise UserError(f"--ops: {e.args[0]} (choices: {', '.join(OPS)}, each optionally "
                            f":{'|:'.join(DTYPES[1:])})") from None
    if all(split_op(o)[1] != "float32" for o in ops):
        raise UserError("--ops: the α-β-γ fit needs at least one float32 collective "
                        "(a bare name such as allreduce)")
    if args.min_bytes < 4 or args.max_bytes < args.min_bytes or args.factor < 2:
        raise UserError("need 4 <= --min-bytes <= --max-bytes and --factor >= 2")
    sizes = size_sweep(args.min_bytes, args.max_bytes, args.factor)
    if len(sizes) < 2:
        raise UserError(f"--min-bytes {args.min_bytes} to --max-bytes {args.max_bytes} by "
                        f"--factor {args.factor} gives one message size; the fit needs two "
                        "or more (widen the range or lower --factor)")
    cores = _counts(args.cores, "--cores") if args.cores else []
    if cores and not args.cluster:
        raise UserError("--cores: only with --cluster (on one machine's own cores, --nproc "
                        "already times every count)")
    spec = _cluster(args.cluster) if args.cluster else None
    out = Path(args.out or Path("runs") / "bench-collectives" / time.strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    if spec is not None:
        from scidl.cluster.bench import cluster_hardware, cluster_probe_counts, run_on_cluster

        nprocs = [spec.nodes]
        try:
            rows = run_on_cluster(spec, sizes, ops, args.iters, out)
        except RuntimeError as e:
            print(f"scidl: error: {e}", file=sys.stderr)
            return 1
    else:
        rows = run_bench(nprocs, sizes, ops, iters=args.iters)
    fit = fit_alpha_beta_gamma(rows)
    per_p = fit_by_ranks(rows) if spec is None else {}
    flops = measure_matmul_flops()
    # a virtual cluster's nodes share this machine's cores: its ranks' compute contends
    # as p processes on one node do, so the probe runs for every node count up to its size
    probe = cluster_probe_counts(spec.nodes) if spec is not None else nprocs
    stats = None if args.no_compute_probe else measure_compute_slowdown_stats(probe)
    slowdown = stats["slowdown"] if stats else {}
    hw_dict = (cluster_hardware(spec, fit, flops, slowdown) if spec is not None
               else local_hardware(fit, flops, max(nprocs), per_p, slowdown))
    if stats:  # the contention model reads the probe against its one-rank step (the
        # paired probe's own one-rank blocks); its quartiles widen predict's band
        hw_dict.update(contention_fields(stats["probe_step_s"]))
        hw_dict["compute_slowdown_range"] = stats["range"]
        if spec is not None:  # the link's α without the ranks' wait for a core
            hw_dict = alpha_free_of_sharing(hw_dict, spec.nodes)
    cores_rows: list[dict] = []
    if cores:  # the shared cores' own rates, no link in the way
        from scidl.scaling.collectives import cores_rates, with_cores_rates

        cores_rows = run_bench(cores, size_sweep(max(args.min_bytes, CORES_MIN_BYTES),
                                                 max(args.max_bytes, 2 * CORES_MIN_BYTES),
                                                 args.factor), ops, iters=args.iters)
        hw_dict = with_cores_rates(hw_dict, cores_rates(cores_rows))
    hw = Hardware.model_validate(hw_dict)
    hw_path = save_hardware(hw, args.hardware_out or out / "hardware.yaml")
    prov = provenance()
    atomic_write_text(out / "bench.json", json.dumps(
        {"provenance": prov, "rows": rows, "fit": fit, "fit_by_ranks": per_p, "device_flops": flops,
         "compute_slowdown": slowdown, "cores_rows": cores_rows,
         "nproc": nprocs, "sizes": sizes},
        indent=2))
    _plot(rows, fit, out, caption_text(prov))
    print(_table(rows))
    print(f"\nfit: alpha = {fit['alpha'] * 1e6:.1f} us, beta = {fit['beta']:.3g} s/B "
          f"({fit['bandwidth'] / 1e9:.3f} GB/s), gamma = {fit['gamma']:.3g} s/B, "
          f"relative rms error {fit['rel_rms']:.2f} over {fit['n']} timings")
    for p, f in per_p.items():
        print(f"  p = {p}: alpha = {f['alpha'] * 1e6:.1f} us, {f['bandwidth'] / 1e9:.3f} GB/s, "
              f"gamma = {f['gamma']:.3g} s/B, rel. rms error {f['rel_rms']:.2f}")
    print(f"one-thread matmul: {flops / 1e9:.1f} GFLOP/s")
    for op, by in sorted((hw.inter.cores_beta if hw.inter else {}).items()):
        print(f"  cores alone, {op}: " + ", ".join(
            f"p = {p}: {1e-6 / b:.0f} MB/s" for p, b in sorted(by.items()) if b > 0))
    for p, factor in slowdown.items():
        print(f"  compute slowdown of the slowest of {p} busy ranks: x{factor:.2f}")
    if hw.probe_step_s:
        print(f"  probe step on one rank alone: {hw.probe_step_s * 1e3:.2f} ms "
              f"({hw.concurrent_devices} cores)")
    print(f"hardware profile: {hw_path}\nresults: {out / 'bench.json'}")
    return 0


def _cluster(name: str) -> Any:
    """The spec of the running virtual cluster ``name`` (UserError when it is not up)."""
    from scidl.cli import UserError
    from scidl.cluster import net

    try:
        spec = net.load(name)
    except net.ClusterError as e:
        raise UserError(str(e)) from None
    if spec.nodes < 2:
        raise UserError(f"--cluster {name}: collectives need at least 2 nodes")
    return spec


def busbw_curves(rows: list[dict]) -> dict[tuple[str, int], dict[str, list[float]]]:
    """Per (op, p): message sizes, bus bandwidth (B/s) and its spread over the timed repeats.

    busbw = n / t · busbw_factor(op, p) (nccl-tests), from each row's median time; the
    low/high ends use the slowest/fastest repeat (``time_s_max``/``time_s_min``) when the
    row has them.
    """
    from scidl.scaling.collectives import busbw_factor

    out: dict[tuple[str, int], dict[str, list[float]]] = {}
    for op, p in sorted({(r["op"], r["ranks"]) for r in rows}):
        pts = sorted((r for r in rows if r["op"] == op and r["ranks"] == p), key=lambda r: r["bytes"])
        f = busbw_factor(op, p)
        out[(op, p)] = {
            "bytes": [r["bytes"] for r in pts],
            "busbw": [r["bytes"] / r["time_s"] * f for r in pts],
            "busbw_low": [r["bytes"] / r.get("time_s_max", r["time_s"]) * f for r in pts],
            "busbw_high": [r["bytes"] / r.get("time_s_min", r["time_s"]) * f for r in pts],
        }
    return out


def _model_time(op: str, p: int, n: float, fit: dict) -> float:
    from scidl.scaling.collectives import model_coefficients

    coef = model_coefficients(op, p, n)
    return sum(c * x for c, x in zip(coef, (fit["alpha"], fit["beta"], fit["gamma"]), strict=True))


def busbw_figure(rows: list[dict], fit: dict, caption: str = "") -> Any:
    """Bus bandwidth against message size per (op, p): measured (median, bars from the
    fastest to the slowest repeat) and the fitted α-β-γ model."""
    from scidl.runtime.plotting import new_figure
    from scidl.scaling.collectives import busbw_factor

    fig = new_figure((6.6, 4.4))
    ax = fig.subplots()
    for (op, p), c in busbw_curves(rows).items():
        err = [[b - lo for b, lo in zip(c["busbw"], c["busbw_low"], strict=True)],
               [hi - b for b, hi in zip(c["busbw"], c["busbw_high"], strict=True)]]
        line = ax.errorbar(c["bytes"], c["busbw"], yerr=err, fmt="o", ms=4, capsize=2,
                           label=f"{op}, p = {p}")[0]
        f = busbw_factor(op, p)
        # a fit of zero cost (every coefficient clamped at 0 on a noisy run) draws no line
        times = [_model_time(op, p, n, fit) for n in c["bytes"]]
        model = [n / t * f if t > 0 else math.nan for n, t in zip(c["bytes"], times, strict=True)]
        ax.plot(c["bytes"], model, "-", color=line.get_color(), alpha=0.5)
    _log_axes(ax, "B/s", "bus bandwidth (busbw)",
              "Collective bus bandwidth: measured (dots) vs fitted α-β-γ model (lines)")
    return fig


def time_figure(rows: list[dict], fit: dict) -> Any:
    """Time per collective against message size, measured and fitted (the fit's check)."""
    from scidl.runtime.plotting import new_figure

    fig = new_figure((6.6, 4.4))
    ax = fig.subplots()
    for op, p in sorted({(r["op"], r["ranks"]) for r in rows}):
        pts = sorted((r for r in rows if r["op"] == op and r["ranks"] == p), key=lambda r: r["bytes"])
        n, t = [r["bytes"] for r in pts], [r["time_s"] for r in pts]
        err = [[r["time_s"] - r.get("time_s_min", r["time_s"]) for r in pts],
               [r.get("time_s_max", r["time_s"]) - r["time_s"] for r in pts]]
        line = ax.errorbar(n, t, yerr=err, fmt="o", ms=4, capsize=2, label=f"{op}, p = {p}")[0]
        ax.plot(n, [_model_time(op, p, b, fit) for b in n], "-", color=line.get_color(), alpha=0.5)
    _log_axes(ax, "s", "time per collective",
              "Collective time: measured (dots, median and min–max) vs α-β-γ fit (lines)")
    return fig


def _log_axes(ax: Any, y_unit: str, y_label: str, title: str) -> None:
    """Log-log axes over message size (binary prefixes) with SI units on y."""
    from scidl.runtime.plotting import si_axis

    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    si_axis(ax.xaxis, "B", binary=True)
    si_axis(ax.yaxis, y_unit)
    ax.set_xlabel("message size n")
    ax.set_ylabel(y_label)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")


def _plot(rows: list[dict], fit: dict, out: Path, caption: str = "") -> list[Path]:
    """``collectives_busbw.png`` (bus bandwidth) and ``collectives_time.png`` in ``out``."""
    from scidl.runtime.plotting import finish

    return [finish(busbw_figure(rows, fit), out / "collectives_busbw.png", caption),
            finish(time_figure(rows, fit), out / "collectives_time.png", caption)]
