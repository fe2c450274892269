"""``scidl predict``: step time and efficiency curves from a step profile and a machine."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from scidl.runtime.files import atomic_write_text
from scidl.runtime.plotting import provenance

NAME = "predict"
HELP = "predict step time and scaling efficiency on a hardware profile (cost model)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from scidl.commands.options import option

    p.add_argument("--profile", required=True, metavar="RUN_DIR|FILE",
                   help="a finished run folder (train or scale point, any process count: "
                   "one rank's compute is used, and a multi-process run's measured step is "
                   "shown beside the prediction at its process count), or a YAML/JSON step "
                   "profile")
    option(p, "--hardware", required=True, choices_from="scidl.scaling.hardware:preset_names",
           help="a preset name or a YAML written by `scidl bench-collectives`")
    p.add_argument("--ranks", default="1,2,4,...,1024",
                   help="process counts: '1,2,4' or 'A,B,...,Z' (doubling up to Z)")
    option(p, "--comm", default=None, choices_from="scidl.comm.registry:STRATEGIES",
           help="comma-separated comm strategies, one curve each: NAME[:VALUE]"
                   "[:key=value...], e.g. dense,fp16,hierarchical,topk:0.01,powersgd:4,"
                   "grouped:4,lag:powersgd")
    p.add_argument("--algorithm", help="ring | tree | rabenseifner | two-level[:tree|:rabenseifner]"
                   " (default: the hardware profile's)")
    p.add_argument("--mode", choices=["weak", "strong"], default="weak",
                   help="weak: fixed per-rank batch; strong: fixed global batch")
    p.add_argument("--compute-s", type=float,
                   help="override the per-step compute time on the target (seconds; "
                   "default: the profile's)")
    p.add_argument("--recommend", action="store_true",
                   help="rank comm strategies (dense, hierarchical, fp16, bf16, topk:0.01, "
                   "powersgd:4, or --comm's list if given) and node layouts (ranks per node) "
                   "at the largest --ranks, with expected efficiency and the reason")
    p.add_argument("--top", type=int, default=10,
                   help="recommendations printed (all are stored in prediction.json)")
    p.add_argument("--out", help="output folder (default: runs/predict/<time>)")


def run(args: argparse.Namespace) -> int:
    from scidl.cli import UserError
    from scidl.scaling.costmodel import ALGORITHMS, parse_comm
    from scidl.scaling.hardware import load_hardware
    from scidl.scaling.predict import (
        measured_comparison,
        parse_ranks,
        per_rank_profile,
        predict_curve,
    )
    from scidl.scaling.profile import load_profile
    from scidl.scaling.report import render_predict

    try:
        ranks = parse_ranks(args.ranks)
    except ValueError as e:
        raise UserError(f"--ranks: {e}") from None
    if args.algorithm and args.algorithm.partition(":")[0] not in ALGORITHMS:
        raise UserError(f"--algorithm {args.algorithm!r}; choices: {', '.join(ALGORITHMS)}, "
                        "two-level:tree, two-level:rabenseifner")
    hw = load_hardware(args.hardware)
    prof, notes = per_rank_profile(load_profile(args.profile), hw, args.mode)
    if args.compute_s:  # the compute notes no longer apply; the communication one does
        notes = [n for n in notes if "measured communication" in n]
        # no FLOP/s conversion (neither FLOPs nor the profile's device rate is known),
        # while hw keeps saying which machine it is (its noise terms stay its own)
        prof = prof.model_copy(update={"compute_s": args.compute_s, "flops_per_step": None,
                                       "device_flops": None})
        notes.append(f"compute time set to {args.compute_s} s per step by --compute-s")
    elif (prof.measured_here and not hw.measured_here and not prof.flops_per_step
          and not prof.device_flops):
        from scidl.scaling.collectives import measure_matmul_flops

        local_flops = measure_matmul_flops()
        prof = prof.model_copy(update={"device_flops": local_flops})
        notes.append(f"profile measured here; compute moved to {hw.name} by the ratio of "
                     f"one-thread matmul FLOP/s ({local_flops / 1e9:.1f} GFLOP/s) to "
                     f"its sustained FLOP/s")
    curves: dict[str, list[dict[str, Any]]] = {}
    specs = [s.strip() for s in (args.comm or "dense").split(",") if s.strip()]
    for spec in specs:
        comp, forced = parse_comm(spec)
        alg = forced or args.algorithm or hw.algorithm
        curves[f"{spec} ({alg})"] = predict_curve(prof, hw, ranks, algorithm=alg, comp=comp,
                                                  mode=args.mode)
    out = Path(args.out or Path("runs") / "predict" / time.strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    measured = {name: m for name, pts in curves.items()
                if (m := measured_comparison(prof, pts)) is not None}
    ranked: list[dict[str, Any]] = []
    if args.recommend:
        from scidl.scaling.predict import RECOMMEND_COMMS, recommend

        ranked = recommend(prof, hw, max(ranks), mode=args.mode,
                           comms=specs if args.comm else RECOMMEND_COMMS,
                           algorithm=args.algorithm)
    data = {"hardware": hw.name, "hardware_profile": hw.model_dump(mode="json"),
            "profile": prof.model_dump(mode="json"), "mode": args.mode, "ranks": ranks,
            "notes": notes, "provenance": provenance(), "curves": curves,
            "measured": measured, "recommend": ranked}
    atomic_write_text(out / "prediction.json", json.dumps(data, indent=2))
    report = render_predict(out)
    for name, pts in curves.items():
        print(f"\n{name} on {hw.name}, {args.mode} scaling")
        print(f"{'ranks':>7s} {'compute_s':>10s} {'codec_s':>9s} {'comm_s':>10s} {'exposed_s':>10s} "
              f"{'interf_s':>9s} {'straggl_s':>9s} {'input_s':>9s} "
              f"{'step_s':>10s} {'samples/s':>12s} {'E(p)':>6s} {'E band':>13s}")
        for p in pts:
            print(f"{p['ranks']:7d} {p['compute_s']:10.4g} {p.get('codec_s', 0.0):9.3g} "
                  f"{p['comm_s']:10.4g} "
                  f"{p['exposed_comm_s']:10.4g} {p['interference_s']:9.3g} "
                  f"{p['straggler_s']:9.3g} {p['io_stall_s']:9.3g} "
                  f"{p['step_s']:10.4g} {p['samples_per_s']:12.4g} "
                  f"{p['efficiency']:6.3f} {p['efficiency_lo']:6.3f}-{p['efficiency_hi']:.3f}")
    if ranked:
        print(f"\nrecommended at {max(ranks)} ranks on {hw.name} ({args.mode} scaling), "
              "best first:")
        for i, r in enumerate(ranked[:args.top], 1):
            print(f"{i:3d}. {r['comm']} ({r['algorithm']}), {r['ranks_per_node']} rank(s)/node: "
                  f"E = {r['efficiency']:.3f} [{r['efficiency_lo']:.3f}-{r['efficiency_hi']:.3f}], "
                  f"step {r['step_s']:.4g} s: {r['reason']}")
        if len(ranked) > args.top:
            print(f"  ... {len(ranked) - args.top} more in prediction.json (--top)")
    for name, m in measured.items():
        print(f"measured at p = {m['ranks']}: step {m['measured_step_s']:.4g} s, "
              f"predicted {m['predicted_step_s']:.4g} s ({name})")
    for n in notes:
        print(f"note: {n}")
    print(f"\nreport: {report}")
    return 0
