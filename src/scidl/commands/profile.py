"""``scidl profile``: calibrate the cost model's step terms on one node."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

from scidl.runtime.files import atomic_write_text

NAME = "profile"
HELP = ("measure a workload's step profile on this machine (compute, per-step spread, bucket "
        "timeline, batch-efficiency curve, loader time, interference) for `scidl predict`")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from scidl.commands.options import option

    option(p, "workload", choices_from="scidl.workloads.registry:WORKLOADS",
           help="workload name (see `scidl workloads`) or a task factory module:attr")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--config", "-c", help="YAML run config (default: the workload's defaults)")
    option(p, "--max-steps", type=int, default=10, aliases=("--steps",),
           help="timed steps at the run's batch size (after one warm-up)")
    p.add_argument("--batches", help="local batch sizes of the batch-efficiency curve, "
                   "comma-separated (default: b/4, b/2, b of train.batch_size)")
    p.add_argument("--no-interference", action="store_true",
                   help="skip the backward-with-concurrent-allreduce measurement (it starts "
                   "one helper process)")
    p.add_argument("--comm", help="comm strategies whose own computation (compression, "
                   "decompression) to measure, comma-separated specs as in `scidl predict "
                   "--comm` (e.g. fp16,topk:0.01,powersgd:4; it starts one helper process)")
    p.add_argument("--out", help="output folder (default: LOG_ROOT/profile/<workload>-<time>)")


def run(args: argparse.Namespace) -> int:
    from scidl.cli import UserError
    from scidl.config import load_config
    from scidl.scaling.calibrate import measure_profile

    if args.max_steps < 3:
        raise UserError("--max-steps: need at least 3 timed steps (the spread needs them)")
    batches = None
    if args.batches:
        try:
            batches = [int(x) for x in args.batches.split(",") if x.strip()]
        except ValueError:
            raise UserError(f"--batches {args.batches!r}: expected integers like 8,16,32") from None
        if not batches or min(batches) < 1:
            raise UserError("--batches: need positive batch sizes")
    comms = None
    if args.comm:
        from scidl.scaling.costmodel import parse_comm

        comms = [c.strip() for c in args.comm.split(",") if c.strip()]
        for c in comms:
            try:
                parse_comm(c)
            except KeyError as e:
                raise UserError(str(e).strip("'\"")) from None
    cfg = load_config(args.workload, args.config, list(args.overrides), None)
    out = Path(args.out or Path(cfg.log.root) / "profile"
               / f"{cfg.workload_label()}-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    prof, raw = measure_profile(cfg, steps=args.max_steps, batches=batches,
                                interference=not args.no_interference, comms=comms)
    atomic_write_text(out / "profile.yaml",
                      yaml.safe_dump(prof.model_dump(mode="json"), sort_keys=False))
    atomic_write_text(out / "measurements.json", json.dumps(raw, indent=2))
    print(f"{cfg.workload_label()}: compute {prof.compute_s * 1e3:.3g} ms per step "
          f"(batch {prof.samples_per_step}, backward {prof.backward_fraction:.0%}), "
          f"spread σ/step {prof.step_cv:.3f}")
    print("batch-efficiency curve: " + ", ".join(
        f"b={b:g}: {t * 1e3:.3g} ms ({b / t:.4g} samples/s)" for b, t in prof.batch_curve or []))
    if prof.loader_s is not None:
        print(f"loader {prof.loader_s * 1e3:.3g} ms per step, {prof.input_bytes_per_step:.0f} "
              "input bytes per step")
    if prof.bucket_ready:
        print(f"{len(prof.bucket_ready)} gradient buckets ready at "
              + ", ".join(f"{f:.2f}" for f in prof.bucket_ready) + " of the backward pass")
    if prof.interference is not None:
        i = raw["interference"]
        print(f"interference: backward {i['backward_alone_s'] * 1e3:.3g} ms alone, "
              f"{i['backward_with_allreduce_s'] * 1e3:.3g} ms with a concurrent allreduce "
              f"(x{prof.interference:.2f})")
    for spec, frac in (prof.codec_fraction or {}).items():
        print(f"{spec}: its own computation adds {frac:.0%} to the step's compute")
    print(f"\nprofile: {out / 'profile.yaml'}  (scidl predict --profile {out / 'profile.yaml'} "
          "--hardware PRESET|hardware.yaml)")
    return 0
