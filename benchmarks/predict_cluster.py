"""Validation of ``scidl predict`` on the virtual cluster: predicted vs measured step time.

From a one-process profile (``scidl profile``), the compute slowdown of p busy ranks
sharing this machine's cores (the virtual nodes share them; measured once per sweep at
every node count of the sweep, paired against one-rank blocks, and shared by the links:
it does not depend on the link rate) and the links calibrated on a virtual cluster
(``scidl bench-collectives --cluster``, one calibration per link rate, at the sweep's
fewest nodes of at least 3: :func:`calibration_nodes`), the cost model predicts the step time of ``scidl train --cluster`` at
each node count for each communication strategy; the same runs are then measured
(median step time over the steps after the warm-up, rank 0's rows: a synchronous step
ends on every rank together), each ``--repeats`` times in interleaved order (the
strategies in turn, then again in reverse), the row's figure the median of its repeats
and their spread kept beside it.

Rows are appended to the results file as they finish, so an interrupted run resumes
where it stopped (``--fresh`` starts over). The predictions are recomputed from the
stored profile, hardware files and measurements at every write, so a change of the
cost model is re-checked with ``python benchmarks/predict_cluster.py predict`` without
running anything again.

    python benchmarks/predict_cluster.py [--links 100mbit 1gbit] [--nodes 2 4 8] [--repeats 2]
    python benchmarks/predict_cluster.py --ranks-per-node 2 --nodes 2 4 --comms dense hierarchical

With ``--ranks-per-node g`` > 1 each virtual node runs g ranks (p = nodes·g), which share
its one shaped link and talk to each other over the node's loopback: the prediction
then prices a two-level machine whose node level is the cores' own loopback rates, timed
once per sweep at each rank count (``cores_rows``, :func:`node_level`), and
``hierarchical`` is measured where it differs from a flat ring.
    python benchmarks/predict_cluster.py predict    # recompute predictions and errors
    python benchmarks/predict_cluster.py table      # the markdown of docs/scaling.md
    python benchmarks/predict_cluster.py profile    # take the one-process profile again

Needs root, ``ip`` and ``tc`` (see docs/cluster.md). Uses the cluster name ``pv`` and
brings it down at the end, also when a run fails.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "predict_cluster.json"
CLUSTER = "pv"
WORKLOAD = "digits"
# a 1.1 M-parameter MLP (4.5 MB of fp32 gradients), batch 64 per rank: ~20 ms of
# compute, 0.04 to 0.7 s of communication at 1 Gbit/s to 100 Mbit/s
OVERRIDES = ["task.hidden=[1024,1024]", "train.batch_size=64", "optim.name=adam"]
COMMS = ["dense", "hierarchical", "fp16", "topk:0.01", "powersgd:4"]
LINKS = ["100mbit", "1gbit"]
NODES = [2, 4, 8]
STEPS, WARMUP = 16, 4  # timed: the steps after the warm-up
REPEATS = 2  # runs of each (link, nodes, comm), interleaved; the row takes their median
RUN_TIMEOUT_S = 240
# the link's calibration (calibration_nodes) times these sizes too, and every other node count
# of the sweep times them alone: what a small collective costs there (op_latency)
LATENCY_SIZES = (1024, 65536)
LATENCY_ITERS = 20
CALIBRATION_ITERS = 8
# the link's calibration: float16 as well, the type `fp16` sends
CALIBRATION_OPS = ("allreduce", "allgather", "allreduce:float16")
# the same ops on loopback (no link in the way) at every node count of the sweep: the rate
# the shared cores alone sustain (cores_beta; scidl.scaling.contention.cores_bound_rates)
CORES_SIZES = (262144, 4194304)
CORES_ITERS = 8
# steps of the one-process profile: one step's compute on this machine varies by ±30 %
# from step to step (and in spells), and the median of 20 steps read 7.5 ms where the
# same command read 11.7 to 13.0 ms minutes later
PROFILE_STEPS = 60
# the one-process reference step timed right after the profile and again before each
# (link, nodes) block of runs: this machine's compute speed drifts in spells of minutes,
# and the predictions take the profile's compute times the drift between the two
REFERENCE_STEPS = 40
REFERENCE_BUILDS = 3


# ----------------------------------------------------------------------------- pure parts


def comm_overrides(spec: str) -> list[str]:
    """``topk:0.01`` → the ``comm.*`` overrides of ``scidl train`` (the same parsing as
    ``scidl predict --comm``)."""
    from scidl.scaling.costmodel import parse_comm

    comp, _ = parse_comm(spec)
    out = [f"comm.strategy={comp.kind}"]
    if comp.density is not None:
        out.append(f"comm.density={comp.density}")
    out += [f"comm.{k}={v}" for k, v in comp.options]
    return out


def measured_step(rows: list[dict[str, Any]], warmup: int = WARMUP) -> dict[str, float]:
    """Median, min and max of ``step_time_s`` over the rows after ``warmup`` steps."""
    times = [float(r["step_time_s"]) for r in rows if "step_time_s" in r][warmup:]
    if not times:
        raise ValueError("no timed steps after the warm-up")
    return {"step_s": statistics.median(times), "step_min_s": min(times),
            "step_max_s": max(times), "steps": len(times)}


def by_op_per_step(path: Path) -> dict[str, float]:
    """Rank 0's seconds per step in each of the run's collectives (``comm.json``'s
    ``by_op``: launch to completion, the wait for the other ranks included), over all
    the run's steps; {} without the file."""
    if not path.is_file():
        return {}
    d = json.loads(path.read_text())
    steps = max(int(d.get("steps") or 0), 1)
    return {op: float(v["seconds"]) / steps for op, v in (d.get("by_op") or {}).items()
            if v.get("seconds") is not None}


def aggregate_repeats(reps: list[dict[str, Any]]) -> dict[str, Any]:
    """A row's measured figures from its repeats (each a :func:`measured_step` with its
    run's ``load_before``, ``load_after``, ``wall_s``): ``measured_s`` the median of the
    repeats' step times, ``repeat_lo_s``/``repeat_hi_s`` their extremes and
    ``repeat_spread`` their half-range relative to the median (how precisely the
    measurement itself pins the step: a prediction can't be judged more finely), the
    step range over all the repeats' timed steps, the first run's load."""
    if not reps:
        raise ValueError("no repeats")
    steps = [float(r["step_s"]) for r in reps]
    mid = statistics.median(steps)
    ops = sorted({op for r in reps for op in r.get("by_op_s") or {}})
    by_op = {op: statistics.median(float(r["by_op_s"][op]) for r in reps
                                   if op in (r.get("by_op_s") or {})) for op in ops}
    return {"measured_s": mid, **({"measured_by_op_s": by_op} if by_op else {}),
            "measured_min_s": min(float(r.get("step_min_s", r["step_s"])) for r in reps),
            "measured_max_s": max(float(r.get("step_max_s", r["step_s"])) for r in reps),
            "repeat_lo_s": min(steps), "repeat_hi_s": max(steps),
            "repeat_spread": (max(steps) - min(steps)) / (2 * mid) if mid > 0 else 0.0,
            "timed_steps": sum(int(r.get("steps", 0)) for r in reps),
            "load_before": reps[0].get("load_before", float("nan")),
            "load_after": reps[-1].get("load_after", float("nan")),
            "wall_s": sum(float(r.get("wall_s", 0.0)) for r in reps)}


def row_repeats(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The repeats of a stored row (a row from before repeats: its one run)."""
    if "repeats" in row:
        return list(row["repeats"])
    return [{"step_s": row["measured_s"], "step_min_s": row.get("measured_min_s"),
             "step_max_s": row.get("measured_max_s"), "steps": row.get("timed_steps", 0),
             "load_before": row.get("load_before"), "load_after": row.get("load_after"),
             "wall_s": row.get("wall_s", 0.0)}]


def blocks(nodes: list[int], ranks_per_node: list[int]) -> list[tuple[int, int]]:
    """(ranks per node, nodes) of a sweep's blocks of runs, in the order they run: one
    rank per node first, then each larger count, nodes from most to fewest."""
    return [(g, n) for g in sorted(set(ranks_per_node)) for n in sorted(set(nodes), reverse=True)]


def interleaved(comms: list[str], repeats: int) -> list[tuple[int, str]]:
    """(repeat, comm) in the order a cluster's runs take: the strategies in turn, then
    again in reverse, and so on, so a drift of the machine's load hits every strategy's
    median alike."""
    return [(r, c) for r in range(repeats) for c in (comms if r % 2 == 0 else comms[::-1])]


def with_probe(hardware: dict[str, Any], probe: dict[str, Any] | None) -> dict[str, Any]:
    """The hardware file with the sweep's one compute-slowdown calibration in it
    (``compute_slowdown``, its ``compute_slowdown_range``, ``probe_step_s`` and the cores
    as ``concurrent_devices``): the slowdown of p ranks sharing the cores does not depend
    on the link rate, so every link's file gets the same one. None: unchanged (a file
    from before, with a probe per link)."""
    if not probe:
        return hardware
    return {**hardware,
            "compute_slowdown": {int(k): float(v) for k, v in probe["slowdown"].items()},
            "compute_slowdown_range": {int(k): [float(x) for x in v]
                                       for k, v in (probe.get("range") or {}).items()},
            "probe_step_s": float(probe["probe_step_s"]),
            "concurrent_devices": int(probe["cores"])}


def sharing_of(d: dict[str, Any], link: str) -> dict[str, Any] | None:
    """The contention calibration (``cores``, ``probe_step_s``) that applies to ``link``:
    the sweep's shared probe, else (files from before) the link's own."""
    probe = d.get("compute_probe")
    if probe:
        return {"cores": int(probe["cores"]), "probe_step_s": float(probe["probe_step_s"])}
    return (d.get("contention") or {}).get(link)


def rel_error(predicted: float, measured: float) -> float:
    """(predicted − measured) / measured."""
    return (predicted - measured) / measured


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and worst absolute relative error over the rows that have both numbers."""
    errs = [(abs(r["error"]), r) for r in rows if r.get("error") is not None]
    if not errs:
        return {"rows": 0}
    worst = max(errs, key=lambda e: e[0])[1]
    out = {"rows": len(errs), "median_abs_error": statistics.median(e for e, _ in errs),
           "worst_abs_error": abs(worst["error"]),
           "worst": {**{k: worst[k] for k in ("link", "nodes", "comm")},
                     "ranks_per_node": int(worst.get("ranks_per_node", 1))},
           "within_10pct": sum(e <= 0.10 for e, _ in errs),
           "within_20pct": sum(e <= 0.20 for e, _ in errs)}
    spreads = [r["repeat_spread"] for _, r in errs if r.get("repeat_spread") is not None
               and len(r.get("repeats", [])) > 1]
    if spreads:
        out["median_repeat_spread"] = statistics.median(spreads)
        out["max_repeat_spread"] = max(spreads)
    return out


def sync_count(profile: dict[str, Any], hardware: dict[str, Any], nodes: int, comm: str,
               ranks_per_node: int = 1) -> int:
    """Collectives per step of ``comm`` on ``nodes`` nodes of ``ranks_per_node`` ranks
    (:func:`scidl.scaling.predict.sync_count`: ``hierarchical`` waits on three phases
    when a node holds several ranks)."""
    from scidl.scaling import predict as pr
    from scidl.scaling.costmodel import parse_comm
    from scidl.scaling.hardware import Hardware

    prof = pr.StepProfile.model_validate(profile)
    comp, _ = parse_comm(comm)
    return pr.sync_count(pr.comm_buckets(prof, Hardware.model_validate(hardware), comp),
                         nodes * ranks_per_node, comp, per_node=ranks_per_node)


def with_sharing(hardware: dict[str, Any], sharing: dict[str, Any] | None) -> dict[str, Any]:
    """The hardware file with the contention calibration (``cores``, ``probe_step_s``) in
    it, as ``scidl bench-collectives`` now writes it (a file from before lacks it)."""
    if sharing is None or not hardware.get("compute_slowdown"):
        return hardware
    return {**hardware, "probe_step_s": float(sharing["probe_step_s"]),
            "concurrent_devices": int(sharing["cores"])}


def contention_factor(profile: dict[str, Any], hardware: dict[str, Any], nodes: int, comm: str,
                      sharing: dict[str, Any]) -> float:
    """Compute slowdown of one rank at ``nodes`` ranks sharing the machine's cores, as
    ``scidl predict`` computes it (:func:`scidl.scaling.predict.contention`, the model of
    :mod:`scidl.scaling.contention`): processor sharing plus the probe's delay per
    collective, spread over this step's compute (the profile's compute and the
    strategy's own computation, one rank alone)."""
    return predict_row(profile, hardware, nodes, comm, sharing)["slowdown"]


def with_burst(hardware: dict[str, Any], link: str) -> dict[str, Any]:
    """The hardware file with its link levels' ``burst_bytes`` set to the depth of the
    token bucket that shapes ``link`` (what ``bench-collectives --cluster`` writes; files
    from before it have none)."""
    from scidl.cluster.spec import parse_rate, tbf_burst_bytes

    burst = tbf_burst_bytes(parse_rate(link))
    out = dict(hardware)
    for key in ("inter", "intra"):
        if out.get(key) and "burst_bytes" not in out[key]:
            out[key] = {**out[key], "burst_bytes": burst}
    return out


def calibration_nodes(nodes: list[int]) -> int:
    """The node count each link is calibrated at: the fewest of the sweep with at least 3
    nodes (else the fewest). Two ranks make a degenerate ring, each one's two neighbours
    the same peer, so every link carries a rank's data one way and its peer's
    acknowledgements the other: gloo's allgather between 2 nodes moved about two thirds
    of what it moves per link between 4 on the same 100 Mbit/s links, and a rate fitted
    there over-priced every allgather of the larger counts. Few nodes keep the ranks'
    wait for a core out of the link's α, β (the contention model charges it)."""
    ring = [n for n in nodes if n >= 3]
    return min(ring) if ring else min(nodes)


def refit_link(hardware: dict[str, Any], rows: list[dict[str, Any]],
               latency_rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The hardware file with its link levels refitted from the calibration's timings by
    the current fit (:func:`scidl.scaling.collectives.fit_alpha_beta_gamma`), their
    small collectives' measured times (``op_latency``) from those timings and
    ``latency_rows`` (the small messages timed at the sweep's other node counts,
    :func:`scidl.scaling.collectives.fit_op_latency`)."""
    from scidl.scaling.collectives import fit_alpha_beta_gamma, fit_op_latency

    fit = fit_alpha_beta_gamma(rows)
    latency = fit_op_latency([*rows, *(latency_rows or [])])
    out = dict(hardware)
    for key in ("inter", "intra"):
        if out.get(key):
            out[key] = {**out[key], "alpha": fit["alpha"], "beta": fit["beta"],
                        "gamma": fit["gamma"], "op_beta": fit["op_beta"],
                        "op_beta_ranks": fit["op_beta_ranks"], "op_latency": latency,
                        "note": f"{fit['method']} fit of {fit['n']} timings (calibration_rows), "
                                f"rel. rms error {fit['rel_rms']:.2f}"}
    return out


def with_cores(hardware: dict[str, Any], rows: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The hardware file with the cores' own rates (``cores_beta`` of each link level) from
    the sweep's loopback timings; unchanged without them (a sweep from before)."""
    from scidl.scaling.collectives import cores_rates, with_cores_rates

    return with_cores_rates(hardware, cores_rates(rows)) if rows else hardware


def missing_ops(d: dict[str, Any], link: str) -> list[str]:
    """The ops of ``CALIBRATION_OPS`` that ``link``'s stored calibration did not time (a
    sweep from before float16 was timed): the link is calibrated again, all ops at once."""
    timed = {r["op"] for r in (d.get("calibration_rows") or {}).get(link) or []}
    return [op for op in CALIBRATION_OPS if op not in timed]


def latency_rows_of(d: dict[str, Any], link: str) -> list[dict[str, Any]]:
    """The small-message timings of ``link`` at the sweep's node counts other than the
    calibration's (``latency_rows``: {link: {nodes: rows}})."""
    return [r for rows in ((d.get("latency_rows") or {}).get(link) or {}).values() for r in rows]


def node_level(cores_rows: list[dict[str, Any]], g: int) -> dict[str, Any]:
    """The node level of a virtual node running ``g`` ranks: its ranks talk over the
    node's loopback, so its rates are the cores' own (the sweep's loopback timings,
    ``cores_rows``): α, β, γ fitted to the timings at ``g`` ranks
    (:func:`scidl.scaling.collectives.fit_alpha_beta_gamma`), each op at its own rate
    there (``op_beta`` at ``op_beta_ranks`` = g), and the rates at every timed count
    (``cores_beta``), so p ranks busy on the cores see the rate at p
    (:meth:`scidl.scaling.hardware.Level.at_ranks`). ValueError without timings at g."""
    from scidl.scaling.collectives import cores_rates, fit_alpha_beta_gamma

    at_g = [r for r in cores_rows if int(r["ranks"]) == g]
    if not at_g:
        have = sorted({int(r["ranks"]) for r in cores_rows})
        raise ValueError(f"no loopback timings at {g} ranks (timed at {have})")
    fit = fit_alpha_beta_gamma(at_g)
    table = cores_rates(cores_rows)
    return {"alpha": fit["alpha"], "beta": fit["beta"], "gamma": fit["gamma"],
            "op_beta": {op: by[g] for op, by in table.items() if g in by},
            "op_beta_ranks": g, "cores_beta": table,
            "note": f"loopback ({fit['method']} fit of {fit['n']} timings at {g} ranks, "
                    "cores_rows)"}


def with_ranks_per_node(hardware: dict[str, Any], g: int,
                        cores_rows: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The hardware file for ``g`` ranks per virtual node: ``devices_per_node`` g and the
    node level (``intra``) of :func:`node_level`; the link (``inter``) as calibrated
    (one rank per node: what a node's one link carries). ``g`` = 1: unchanged."""
    if g <= 1:
        return hardware
    if not cores_rows:
        raise ValueError("ranks per node > 1 needs the sweep's loopback timings (cores_rows)")
    inter = hardware.get("inter") or hardware["intra"]
    return {**hardware, "devices_per_node": g, "intra": node_level(cores_rows, g),
            "inter": inter}


def predict_row(profile: dict[str, Any], hardware: dict[str, Any], nodes: int, comm: str,
                sharing: dict[str, Any] | None = None, ranks_per_node: int = 1,
                cores_rows: list[dict[str, Any]] | None = None) -> dict[str, float]:
    """The cost model's step breakdown for one row (weak scaling: batch per rank fixed),
    by :func:`scidl.scaling.predict.predict_point`, as ``scidl predict`` computes it.

    ``sharing`` (``cores``, ``probe_step_s``): the ranks share this machine's cores; the
    compute slowdown at ``nodes`` is the contention model's (:func:`with_sharing`)
    instead of the probe's factor as it was measured. None: the probe's factor.
    ``ranks_per_node`` > 1: ``nodes``·``ranks_per_node`` ranks on a two-level machine
    whose node level is the cores' loopback rates of ``cores_rows``
    (:func:`with_ranks_per_node`)."""
    from scidl.scaling.costmodel import parse_comm
    from scidl.scaling.hardware import Hardware
    from scidl.scaling.predict import StepProfile, predict_point

    prof = StepProfile.model_validate(profile)
    hw = Hardware.model_validate(with_ranks_per_node(with_sharing(hardware, sharing),
                                                     ranks_per_node, cores_rows))
    comp, alg = parse_comm(comm)
    pt = predict_point(prof, hw, nodes * ranks_per_node, algorithm=alg, comp=comp)
    keys = ("step_s", "compute_s", "codec_s", "comm_s", "burst_s", "exposed_comm_s",
            "interference_s", "straggler_s", "io_stall_s", "slowdown", "step_lo_s",
            "step_hi_s")
    return {k: float(pt[k]) for k in keys}


def repredict(d: dict[str, Any]) -> dict[str, Any]:
    """Recompute every row's prediction and error and the summary from the stored
    profile, hardware files and contention calibration (``compute_probe``: the sweep's
    one compute-slowdown probe, shared by the links; files from before hold one per link
    in the hardware files and ``contention``: cores and the probe's step length; without
    either, the probe's factor as measured). A row's measured figures are recomputed
    from its repeats (:func:`aggregate_repeats`). A link
    whose calibration timings are stored (``calibration_rows``) is refitted first, so a
    change of the link fit is re-checked too, and its α taken net of the scheduling delay
    of the ranks that shared the cores during the calibration
    (:func:`scidl.scaling.collectives.alpha_free_of_sharing`)."""
    from scidl.scaling.collectives import alpha_free_of_sharing

    for link, hw in d["hardware"].items():  # files written before links had a burst
        d["hardware"][link] = with_cores(with_probe(with_burst(hw, link), d.get("compute_probe")),
                                         d.get("cores_rows"))
    as_fitted = dict(d["hardware"])
    for link, rows in (d.get("calibration_rows") or {}).items():
        if link in d["hardware"]:
            hw = as_fitted[link] = refit_link(d["hardware"][link], rows,
                                              latency_rows_of(d, link))
            at = (d.get("calibrated_at_nodes") or {}).get(link)
            sharing = sharing_of(d, link)
            if at and sharing:  # the raw fit's α, net of the calibration's core sharing
                hw = alpha_free_of_sharing(with_sharing(hw, sharing), int(at))
            d["hardware"][link] = hw
    for r in d["rows"]:
        if "repeats" in r:
            r.update(aggregate_repeats(r["repeats"]))
        pred = _predict_stored(d, d["hardware"], r)
        if pred is None:
            continue
        r["predicted"] = pred
        r["predicted_s"] = pred["step_s"]
        r["error"] = rel_error(pred["step_s"], r["measured_s"])
    d["summary"] = summarize(d["rows"])
    if as_fitted != d["hardware"]:  # the same rows with α as fitted, for comparison
        d["summary_alpha_as_fitted"] = summarize([
            {**r, "error": rel_error(pred["step_s"], r["measured_s"])} for r in d["rows"]
            if (pred := _predict_stored(d, as_fitted, r)) is not None])
    return d


def block_key(link: str, nodes: int, g: int = 1) -> str:
    """The name of a block of runs (one link, node count and ranks per node):
    ``<link>/<nodes>``, or ``<link>/<nodes>x<g>`` with g > 1 ranks per node."""
    return f"{link}/{nodes}" if g <= 1 else f"{link}/{nodes}x{g}"


def drift(d: dict[str, Any], link: str, nodes: int, g: int = 1) -> float:
    """How much faster (< 1) or slower (> 1) this machine computed when the block of runs
    at (``link``, ``nodes``, ``g`` ranks per node) started than right after the profile:
    the ratio of the one-process reference steps timed at those two moments
    (``reference``: {"profile": s, :func:`block_key`: s}); 1 where either is missing
    (files from before)."""
    ref = d.get("reference") or {}
    base, now = ref.get("profile"), ref.get(block_key(link, nodes, g))
    return float(now) / float(base) if base and now else 1.0


def drifted_profile(profile: dict[str, Any], factor: float) -> dict[str, Any]:
    """The profile with its compute (and its batch curve) times ``factor``: the
    strategies' own computation (``codec_fraction``) is a fraction of it and follows."""
    if factor == 1.0:
        return profile
    out = {**profile, "compute_s": float(profile["compute_s"]) * factor}
    if profile.get("batch_curve"):
        out["batch_curve"] = [[b, float(t) * factor] for b, t in profile["batch_curve"]]
    return out


def _predict_stored(d: dict[str, Any], hardware: dict[str, Any], r: dict[str, Any]
                    ) -> dict[str, float] | None:
    hw = hardware.get(r["link"])
    if hw is None:
        return None
    g = int(r.get("ranks_per_node", 1))
    prof = drifted_profile(d["profile"], drift(d, r["link"], r["nodes"], g))
    return predict_row(prof, hw, r["nodes"], r["comm"], sharing_of(d, r["link"]), g,
                       d.get("cores_rows"))


# ----------------------------------------------------------------------------- rendering


#: hierarchical's collectives in the order they run
_PHASES = {"reduce_scatter_intra": 0, "allreduce_inter": 1, "allgather_intra": 2}


def _pct(x: float) -> str:
    return f"{x * 100:+.0f}%"


def _band(pred: dict[str, float]) -> str:
    """The predicted step, with its band where the calibration's spreads give one."""
    lo, hi = pred.get("step_lo_s", pred["step_s"]), pred.get("step_hi_s", pred["step_s"])
    if hi - lo < 5e-4:
        return f"{pred['step_s']:.3f}"
    return f"{pred['step_s']:.3f} [{lo:.3f}–{hi:.3f}]"


def _repeats(row: dict[str, Any]) -> str:
    """How many runs the row's figure is the median of, and their half-range."""
    n = len(row_repeats(row))
    return f"{n}: ±{row['repeat_spread'] * 100:.0f}%" if n > 1 else "1"


def _op_rates(level: dict[str, Any]) -> str:
    """The link level's own per-op rates (``op_beta``), as MB/s, or nothing."""
    rates = level.get("op_beta") or {}
    if not rates:
        return ""
    at = level.get("op_beta_ranks")
    return " (each op at its own measured rate" + (f" at {at} nodes" if at else "") + ": " + \
        ", ".join(f"{op} {1e-6 / b:.1f} MB/s" for op, b in sorted(rates.items()) if b > 0) + ")"


def _block(key: str) -> tuple[str, int, int]:
    """(link, nodes, ranks per node) of a :func:`block_key`."""
    link, rest = key.rsplit("/", 1)
    nodes, _, g = rest.partition("x")
    return link, int(nodes), int(g or 1)


def _block_order(key: str) -> tuple[int, int, int]:
    from scidl.cluster.spec import parse_rate

    link, nodes, g = _block(key)
    return parse_rate(link), g, nodes


def _run_dates(d: dict[str, Any]) -> str:
    """``run 2026-12-03``, or with rows of several days (each row's ``date``; a row
    without one: the file's) ``rows run on 2026-12-03 (24) and 2026-12-04 (20), the
    profile and link calibrations of 2026-12-03``."""
    days: dict[str, int] = {}
    for r in d["rows"]:
        day = str(r.get("date", d["date"]))
        days[day] = days.get(day, 0) + 1
    if len(days) <= 1:
        return f"run {d['date']}"
    listed = [f"{day} ({n})" for day, n in sorted(days.items())]
    text = "rows run on " + ", ".join(listed[:-1]) + " and " + listed[-1]
    made = str(d.get("profile_date") or "")[:10]
    return text + (f", the profile and link calibrations of {made}" if made else "")


def _layout(nodes: int, g: int) -> str:
    """``4`` (one rank per node) or ``2 × 2`` (nodes × ranks per node)."""
    return str(nodes) if g <= 1 else f"{nodes} × {g}"


def _latency_ranges(table: dict[str, Any]) -> str:
    """``allreduce p = 2: 0.52–1.80 ms, ...`` of a level's ``op_latency``."""
    out = []
    for op, by_p in sorted(table.items()):
        for p, rows in sorted(((int(k), v) for k, v in by_p.items())):
            ts = [float(t) for _, t in rows]
            out.append(f"{op} p = {p}: {min(ts) * 1e3:.2f}–{max(ts) * 1e3:.2f} ms")
    return ", ".join(out)


def render(d: dict[str, Any]) -> str:
    """The generated block of docs/scaling.md."""
    s = d["summary"]
    prof = d["profile"]
    lines = [
        f"`{WORKLOAD}` with `{' '.join(d['overrides'])}` ({prof['grad_bytes'] / 1e6:.1f} MB of "
        f"fp32 gradients, {prof['compute_s'] * 1e3:.1f} ms compute per step on one process), "
        + ("one rank per virtual node unless the nodes column says nodes × ranks per node"
           if any(r.get("ranks_per_node", 1) > 1 for r in d["rows"])
           else "one rank per virtual node") + f", {d['steps']} steps of which the first {d['warmup']} are "
        f"warm-up; {_run_dates(d)} on {d['cpus']} cores with load average "
        f"{d['load_before']:.1f} before and {d['load_after']:.1f} after "
        f"(`python benchmarks/predict_cluster.py`)."
        + (f" The strategies' own computation (`codec_fraction`) was measured at load average "
           f"{d['codec_load']:.0f}, after the profile." if d.get("codec_load") is not None
           else ""),
        "",
        "| link | nodes | comm | predicted (s) [band] | measured (s) [range] | repeats | error | "
        "slowdown | compute (s) | codec (s) | exposed comm (s) | straggler (s) | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(d["rows"], key=lambda r: (r["link_bits"], r.get("ranks_per_node", 1),
                                              r["nodes"],
                                              COMMS.index(r["comm"]) if r["comm"] in COMMS
                                              else 99)):
        p = r["predicted"]
        lines.append(
            f"| {r['link']} | {_layout(r['nodes'], r.get('ranks_per_node', 1))} | "
            f"{r['comm']} | {_band(p)} | "
            f"{r['measured_s']:.3f} [{r['measured_min_s']:.3f}–{r['measured_max_s']:.3f}] | "
            f"{_repeats(r)} | {_pct(r['error'])} | ×{p.get('slowdown', 1.0):.2f} | {p['compute_s']:.3f} | "
            f"{p.get('codec_s', 0.0):.3f} | "
            f"{p['exposed_comm_s']:.3f} | "
            f"{p['straggler_s']:.3f} | {r.get('load_before', float('nan')):.0f} |")
    phased = [r for r in d["rows"] if len(r.get("measured_by_op_s") or {}) > 1
              and r["comm"] == "hierarchical"]
    if phased:
        lines.append("")
        lines.append(
            "Measured time per step in each of `hierarchical`'s collectives (rank 0's "
            "`comm.json`, launch to completion, the wait for the other ranks included; "
            "median of the repeats), against the predicted communication: " + "; ".join(
                f"{r['link']} {_layout(r['nodes'], r.get('ranks_per_node', 1))}: " + ", ".join(
                    f"{op} {t * 1e3:.1f} ms" for op, t in sorted(
                        r["measured_by_op_s"].items(), key=lambda kv: _PHASES.get(kv[0], 9)))
                + f" (predicted {r['predicted']['comm_s'] * 1e3:.1f} ms)"
                for r in sorted(phased, key=lambda r: (r["link_bits"], r["nodes"],
                                                       r.get("ranks_per_node", 1)))) + ".")
    lines.append("")
    share = d.get("contention") or {}
    probe = d.get("compute_probe")
    lines.append(
        "`slowdown` is the compute slowdown of p ranks sharing the cores"
        + (" (contention model: processor sharing max(1, p/C) plus the probe's delay per "
           "collective, spread over the step's compute)" if share or probe else
           " (the probe's factor as measured)")
        + ", `compute` the profile's compute times it, `codec` the strategy's own "
        f"computation (slowed alike), `load` the machine's load average when the row's first "
        f"run started ({d['cpus']} cores). `band`: the predicted step with compute one measured "
        "spread of the profile (`step_cv`) below and above, widened by the probe's "
        "quartiles where it has them; `repeats`: the runs whose median is the measured "
        "step, ± half their range.")
    lines.append("")
    if s.get("rows"):
        w = s["worst"]
        lines.append(
            f"Median |error| {s['median_abs_error'] * 100:.1f}% over {s['rows']} rows "
            f"(target ≤ 10%), worst {s['worst_abs_error'] * 100:.1f}% ({w['comm']}, "
            f"{_layout(w['nodes'], w.get('ranks_per_node', 1))} nodes, {w['link']}; "
            f"target ≤ 20%); {s['within_10pct']} rows within "
            f"10%, {s['within_20pct']} within 20%.")
        links = sorted({r["link"] for r in d["rows"]}, key=lambda k: min(
            r["link_bits"] for r in d["rows"] if r["link"] == k))
        if len(links) > 1:
            per = [(k, summarize([r for r in d["rows"] if r["link"] == k])) for k in links]
            lines.append("By link: " + "; ".join(
                f"{k}: median |error| {x['median_abs_error'] * 100:.1f}%, worst "
                f"{x['worst_abs_error'] * 100:.1f}% ({x['rows']} rows)" for k, x in per) + ".")
        gs = sorted({int(r.get("ranks_per_node", 1)) for r in d["rows"]})
        if len(gs) > 1:
            per = [(g, summarize([r for r in d["rows"] if int(r.get("ranks_per_node", 1)) == g]))
                   for g in gs]
            lines.append("By ranks per node: " + "; ".join(
                f"{g}: median |error| {x['median_abs_error'] * 100:.1f}%, worst "
                f"{x['worst_abs_error'] * 100:.1f}% ({x['rows']} rows)" for g, x in per) + ".")
        if s.get("median_repeat_spread") is not None:
            lines.append(f"The measurement's own precision: the repeats of a row lie within "
                         f"±{s['median_repeat_spread'] * 100:.1f}% of their median (median "
                         f"over the rows), ±{s['max_repeat_spread'] * 100:.1f}% at most.")
    if probe:
        rng = probe.get("range") or {}
        lines.append("")
        lines.append(
            "Measured compute slowdown of p busy ranks on the shared cores, one probe for "
            "the sweep shared by every link's hardware file (`compute_probe` in the results "
            f"file; median of {probe['groups'] * probe['blocks']} busy blocks per count, each "
            "read against the one-rank blocks right before and after it; quartiles in "
            "brackets): " + ", ".join(
                f"p = {p}: ×{f:.2f}" + (f" [{rng[k][0]:.2f}–{rng[k][1]:.2f}]" if k in rng else "")
                for p, f, k in sorted((int(k), float(v), k) for k, v in probe["slowdown"].items()))
            + f"; one-rank probe step w = {probe['probe_step_s'] * 1e3:.2f} ms on "
              f"{probe['cores']} cores, load {probe['load']:.1f}.")
    slow = {} if probe else {link: hw.get("compute_slowdown", {})
                             for link, hw in d["hardware"].items()}
    parts = [f"{link}: " + ", ".join(f"p = {p}: ×{f:.2f}" for p, f in sorted(
        ((int(k), v) for k, v in sl.items()))) for link, sl in slow.items() if sl]
    if parts:
        lines.append("")
        lines.append("Measured compute slowdown of p busy ranks on the shared cores "
                     "(`compute_slowdown` of each hardware file, the probe): "
                     + "; ".join(parts) + ".")
    raw = d.get("summary_alpha_as_fitted")
    if raw and raw.get("rows"):
        lines.append(f"With each link's α as fitted (the calibration's wait for a core left in "
                     f"it): median |error| {raw['median_abs_error'] * 100:.1f}%, worst "
                     f"{raw['worst_abs_error'] * 100:.1f}%; {raw['within_20pct']} of "
                     f"{raw['rows']} rows within 20%.")
    fits = [(link, hw["inter"]) for link, hw in d["hardware"].items() if hw.get("inter")]
    if fits:
        lines.append("Link fit (the `inter` level of each hardware file"
                     + (", refitted from the stored calibration timings, `calibration_rows`"
                        if d.get("calibration_rows") else "") + "): "
                     + "; ".join(f"{link}: α = {lv['alpha'] * 1e3:.2f} ms, allreduce per-byte "
                                 f"rate 1/(β + γ/2) = {1e-6 / (lv['beta'] + lv.get('gamma', 0.0) / 2):.1f} "
                                 f"MB/s" + _op_rates(lv) for link, lv in fits) + ".")
    ref = d.get("reference") or {}
    if ref.get("profile") and len(ref) > 1:
        lines.append(
            "Machine drift: the predictions take the profile's compute times the one-process "
            "reference step timed before each block of runs ÷ the same step timed right "
            f"after the profile ({ref['profile'] * 1e3:.2f} ms, `reference` in the results "
            "file): " + ", ".join(
                f"{_block(k)[0]} {_layout(*_block(k)[1:])} nodes ×{drift(d, *_block(k)):.2f}"
                for k in sorted((k for k in ref if k != "profile"), key=_block_order)) + ".")
    floors = [(link, hw["inter"]["op_latency"]) for link, hw in d["hardware"].items()
              if (hw.get("inter") or {}).get("op_latency")]
    if floors:
        lines.append("Small collectives as measured (`op_latency` of each link level: the mean "
                     "time per call of the calibration's and each node count's messages of "
                     f"{LATENCY_SIZES[0] // 1024} KiB to {LATENCY_SIZES[-1] // 1024} KiB, "
                     "smallest to largest; the model prices no collective below them): "
                     + "; ".join(f"{link}: " + _latency_ranges(t) for link, t in floors) + ".")
    if d.get("cores_rows"):
        from scidl.scaling.collectives import cores_rates

        table = cores_rates(d["cores_rows"])
        lines.append("The cores alone (`cores_beta` of each link level: the same ops on "
                     "loopback, no link in the way, "
                     f"{CORES_SIZES[0] // 1024} KiB to {CORES_SIZES[1] // 2**20} MiB; a "
                     "node count's rate over the link adds the cores' cost per byte beyond "
                     "the calibration's count): " + "; ".join(
                         f"{op} " + ", ".join(f"p = {p}: {1e-6 / b:.0f} MB/s"
                                              for p, b in sorted(by.items()) if b > 0)
                         for op, by in sorted(table.items())) + ".")
    if share and not probe:
        lines.append("Probe step on one rank alone (w, `contention` in the results file): "
                     + "; ".join(f"{link}: {c['probe_step_s'] * 1e3:.2f} ms on {c['cores']} "
                                 f"cores, load {c['load']:.1f}"
                                 + (" (measured after the sweep)" if c.get("note") else "")
                                 for link, c in share.items()) + ".")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- running


def _scidl(args: list[str], timeout: float, log: Path | None = None) -> str:
    proc = subprocess.run([sys.executable, "-m", "scidl", *args], capture_output=True,
                          text=True, timeout=timeout)
    if log is not None:
        log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"scidl {' '.join(args[:3])} failed ({proc.returncode}): "
                           + " | ".join(tail))
    return proc.stdout


def _load() -> float:
    return os.getloadavg()[0]


def _save(d: dict[str, Any], path: Path) -> None:
    repredict(d)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(d, indent=1))
    tmp.replace(path)


def _versions() -> dict[str, str]:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__}


def _codec() -> dict[str, float]:
    from scidl.config import load_config
    from scidl.scaling.calibrate import measure_codec

    cfg = load_config(WORKLOAD, None, list(OVERRIDES), None)
    return measure_codec(cfg, [c for c in COMMS if c != "dense"], steps=20)


def _sharing(later: bool = False) -> dict[str, Any]:
    """The contention calibration beside a link's probe: this machine's cores and one
    probe step's length on one rank alone (the probe's defaults), with the load."""
    from scidl.scaling.collectives import measure_probe_step

    load = _load()
    # after the sweep the machine may be busy: the fastest of 12 single steps is the
    # quiet step the sweep's probe was read against
    step = measure_probe_step(blocks=12, fastest=True) if later else measure_probe_step()
    out: dict[str, Any] = {"cores": os.cpu_count() or 1, "probe_step_s": step,
                           "load": load, "date": datetime.date.today().isoformat()}
    if later:
        out["note"] = ("measured after the sweep, to re-predict its stored rows: the "
                       "fastest of 12 single steps")
    return out


def _probe(counts: list[int]) -> dict[str, Any]:
    """The sweep's one compute-slowdown calibration: p busy ranks at every node count of
    the sweep, each in a group of exactly p processes, paired against one-rank blocks
    (:func:`scidl.scaling.collectives.measure_compute_slowdown_stats`), with the cores,
    the load and the time it took."""
    from scidl.scaling.collectives import measure_compute_slowdown_stats

    load, t0 = _load(), time.time()
    out = measure_compute_slowdown_stats(counts)
    return {**out, "cores": os.cpu_count() or 1, "load": load, "load_after": _load(),
            "wall_s": time.time() - t0, "date": datetime.date.today().isoformat()}


def _cores(counts: list[int], tmp: Path) -> list[dict[str, Any]]:
    """The calibration's ops on loopback (no cluster, no link) at each of ``counts``
    ranks: what the shared cores alone sustain per byte."""
    bench = tmp / "cores"
    _scidl(["bench-collectives", "--nproc", ",".join(map(str, counts)), "--ops",
            ",".join(CALIBRATION_OPS), "--min-bytes", str(CORES_SIZES[0]), "--max-bytes",
            str(CORES_SIZES[1]), "--iters", str(CORES_ITERS), "--no-compute-probe",
            "--out", str(bench)], 900)
    return json.loads((bench / "bench.json").read_text())["rows"]


def _cluster_up(nodes: int, link: str) -> None:
    _scidl(["cluster", "down", "--name", CLUSTER], 120)
    _scidl(["cluster", "up", "--name", CLUSTER, "--nodes", str(nodes), "--link", link], 120)


def _train(comm: str, nodes: int, tmp: Path, g: int = 1) -> dict[str, Any]:
    import yaml  # noqa: F401  (the run folder's files are read by scidl.scaling.report)

    from scidl.scaling.report import read_jsonl

    out = tmp / f"run-{nodes}x{g}-{comm.replace(':', '_')}-{time.time_ns()}"
    _scidl(["train", WORKLOAD, "--cluster", CLUSTER, "--ranks-per-node", str(g),
            "--max-steps", str(STEPS),
            *OVERRIDES, *comm_overrides(comm), "train.log_every=1", "train.eval_every=0",
            "dist.threads_per_proc=1", f"log.root={tmp}", "--out", str(out),
            "--cluster-timeout", str(RUN_TIMEOUT_S)], RUN_TIMEOUT_S + 60)
    m = measured_step(read_jsonl(out / "metrics.jsonl"))
    ops = by_op_per_step(out / "comm.json")
    return {**m, "by_op_s": ops} if ops else m


def _calibrate(d: dict[str, Any], link: str, nodes: int, tmp: Path, path: Path) -> None:
    """``bench-collectives`` on the cluster that is up (``nodes`` nodes at ``link``): the
    link's hardware levels and the timings behind the fit (so the link can be refitted
    later), saved into ``d``. With the sweep's compute probe in ``d`` the command skips
    its own (the slowdown does not depend on the link); a file from before gets the
    link's contention calibration as then."""
    import yaml

    bench = tmp / f"bench-{link}"
    shared = bool(d.get("compute_probe"))
    _scidl(["bench-collectives", "--cluster", CLUSTER, "--ops", ",".join(CALIBRATION_OPS),
            "--min-bytes", str(LATENCY_SIZES[0]), "--max-bytes", "4194304", "--iters",
            str(CALIBRATION_ITERS), "--out", str(bench),
            *(["--no-compute-probe"] if shared else [])], 900)
    d["hardware"][link] = yaml.safe_load((bench / "hardware.yaml").read_text())
    d.setdefault("calibration_rows", {})[link] = json.loads(
        (bench / "bench.json").read_text())["rows"]
    d.setdefault("calibrated_at_nodes", {})[link] = nodes
    if not shared:
        d.setdefault("contention", {})[link] = _sharing()
    _save(d, path)


def _profile(d: dict[str, Any], tmp: Path) -> None:
    """The one-process profile (``scidl profile``, the strategies' own computation
    included) into ``d``, with the command and the load after it."""
    import yaml

    prof_dir = tmp / f"profile-{time.time_ns()}"
    comms = ",".join(c for c in COMMS if c != "dense")
    args = [WORKLOAD, *OVERRIDES, "--max-steps", str(PROFILE_STEPS), "--comm", comms]
    _scidl(["profile", *args, f"log.root={tmp}", "--out", str(prof_dir)], 900)
    d["profile"] = yaml.safe_load((prof_dir / "profile.yaml").read_text())
    d["profile_command"] = "scidl profile " + " ".join(args)
    d["profile_load"] = _load()
    d["profile_date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _reference_step(steps: int = REFERENCE_STEPS) -> float:
    """One process, one thread, in this process: the median compute of ``steps`` training
    steps of the sweep's workload (forward, backward, the run's optimizer), the same
    measurement as the profile's compute (:func:`scidl.scaling.calibrate.time_steps`),
    taken again at a later moment to read the machine's drift."""
    import torch
    from torch.utils.data import DataLoader

    from scidl.config import load_config
    from scidl.scaling.calibrate import _cycle, run_optimizer, time_steps
    from scidl.workloads import get_workload
    from scidl.workloads.base import BuildContext

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = load_config(WORKLOAD, None, list(OVERRIDES), None)
        task = get_workload(cfg.workload).build(cfg.task_config(), BuildContext(seed=0))
        batches = _cycle(DataLoader(task.train_data, batch_size=int(cfg.train.batch_size),
                                    shuffle=True, drop_last=True, collate_fn=task.collate_fn,
                                    generator=torch.Generator().manual_seed(0)))
        return float(time_steps(task.model, task.loss, batches, steps,
                                make_optimizer=run_optimizer(cfg))["compute_s"])
    finally:
        torch.set_num_threads(threads)


def _reference(d: dict[str, Any], key: str, path: Path) -> None:
    """The reference step at this moment: the median of ``REFERENCE_BUILDS`` fresh builds
    of the model (one build's memory layout moves its step by several percent)."""
    d.setdefault("reference", {})[key] = statistics.median(
        _reference_step() for _ in range(REFERENCE_BUILDS))
    d.setdefault("reference_load", {})[key] = _load()
    _save(d, path)


def _latency(d: dict[str, Any], link: str, nodes: int, tmp: Path, path: Path) -> None:
    """The small collectives timed on the cluster that is up (``nodes`` nodes at
    ``link``): what one such call costs at that node count (on this machine mostly the
    ranks' wait for one another on the shared cores at each hop), saved into ``d``."""
    bench = tmp / f"latency-{link}-{nodes}"
    _scidl(["bench-collectives", "--cluster", CLUSTER, "--nproc", str(nodes), "--ops",
            "allreduce,allgather", "--min-bytes", str(LATENCY_SIZES[0]), "--max-bytes",
            str(LATENCY_SIZES[-1]), "--iters", str(LATENCY_ITERS), "--no-compute-probe",
            "--out", str(bench)], 600)
    d.setdefault("latency_rows", {}).setdefault(link, {})[str(nodes)] = json.loads(
        (bench / "bench.json").read_text())["rows"]
    _save(d, path)


def run(args: argparse.Namespace) -> dict[str, Any]:
    path = Path(args.out)
    d: dict[str, Any] | None = None
    if path.is_file() and not args.fresh:
        d = json.loads(path.read_text())
        if d.get("overrides") != OVERRIDES or d.get("steps") != STEPS:
            sys.exit(f"{path} holds another configuration; use --fresh")
    tmp = Path(tempfile.mkdtemp(prefix="predict_cluster-"))
    t_start = time.time()
    if d is None:
        d = {"overrides": OVERRIDES, "steps": STEPS, "warmup": WARMUP, "rows": [],
             "repeats": args.repeats,
             "hardware": {}, "load_before": _load(), "cpus": os.cpu_count(),
             "command": "python benchmarks/predict_cluster.py " + " ".join(sys.argv[1:]),
             "versions": _versions()}
        _profile(d, tmp)
        _reference(d, "profile", path)
    if not d["profile"].get("codec_fraction"):  # a profile taken before the codec term
        d["profile"]["codec_fraction"] = _codec()
        d["codec_load"] = _load()
        _save(d, path)
    # the rank counts the runs take, and the node sizes (loopback timings of the node level)
    ranks = {n * g for g, n in blocks(args.nodes, args.ranks_per_node) if n * g > 1}
    counts = sorted(ranks | set(args.ranks_per_node) - {1})
    if not d.get("compute_probe") and not d.get("contention"):  # once per sweep
        d["compute_probe"] = _probe(counts)
        _save(d, path)
    timed = {int(r["ranks"]) for r in d.get("cores_rows") or []}
    if not set(counts) <= timed:  # once per sweep: the cores' own collective rates
        d["cores_rows"] = [*(d.get("cores_rows") or []),
                           *_cores(sorted(set(counts) - timed), tmp)]
        _save(d, path)
    probed = {int(k) for k in (d.get("compute_probe") or {}).get("slowdown", {})}
    if d.get("compute_probe") and not ranks <= probed:
        sys.exit(f"the sweep's compute probe covers {sorted(probed)} ranks; this sweep "
                 "needs more (use --fresh, or nodes × ranks per node within them)")
    try:
        for link in args.links:
            bits = __import__("scidl.cluster.spec", fromlist=["parse_rate"]).parse_rate(link)
            if link not in d["hardware"] or missing_ops(d, link):
                # the link is calibrated with few nodes (calibration_nodes): its α, β are
                # the link's, not the CPU time-sharing of many ranks on few cores (that is
                # the contention model's per-collective delay; counting it in α too
                # charged it twice to every collective of the larger counts)
                at = calibration_nodes(args.nodes)
                _cluster_up(at, link)
                _calibrate(d, link, at, tmp, path)
            for g, nodes in blocks(args.nodes, args.ranks_per_node):
                todo = [(k, c) for k, c in interleaved(list(args.comms), args.repeats)
                        if len(row_repeats(_row(d, link, nodes, c, g) or {"repeats": []})) <= k]
                if not todo:
                    continue
                _cluster_up(nodes, link)
                if g == 1 and nodes != (d.get("calibrated_at_nodes") or {}).get(link) and \
                        str(nodes) not in ((d.get("latency_rows") or {}).get(link) or {}):
                    _latency(d, link, nodes, tmp, path)
                if not sharing_of(d, link):  # a calibration from before the model
                    d.setdefault("contention", {})[link] = _sharing(later=True)
                    _save(d, path)
                key = block_key(link, nodes, g)
                if d.get("reference", {}).get("profile") and key not in d["reference"]:
                    _reference(d, key, path)
                for k, comm in todo:
                    load0 = _load()
                    t0 = time.time()
                    m = _train(comm, nodes, tmp, g)
                    r = _row(d, link, nodes, comm, g)
                    if r is None:
                        r = {"link": link, "link_bits": bits, "nodes": nodes, "comm": comm}
                        if g > 1:
                            r["ranks_per_node"] = g
                        d["rows"].append(r)
                    done = row_repeats(r) if "measured_s" in r else []
                    r["repeats"] = [*done, {**m, "load_before": load0, "load_after": _load(),
                                            "wall_s": time.time() - t0}]
                    r.update(aggregate_repeats(r["repeats"]))
                    d["load_after"] = _load()
                    d["date"] = r["date"] = datetime.date.today().isoformat()
                    _save(d, path)
                    last = r["repeats"][-1]
                    print(f"{link} {_layout(nodes, g)} {comm} (run {k + 1}): measured "
                          f"{last['step_s']:.3f} s, predicted {r['predicted_s']:.3f} s "
                          f"(row {_pct(r['error'])}), load {load0:.1f}", flush=True)
    finally:
        try:
            _scidl(["cluster", "down", "--name", CLUSTER], 120)
        except Exception as e:  # noqa: BLE001 - report, the results are saved
            print(f"cluster down failed: {e}", file=sys.stderr)
    d["wall_s"] = d.get("wall_s", 0.0) + time.time() - t_start
    d["load_after"] = _load()
    _save(d, path)
    return d


def _row(d: dict[str, Any], link: str, nodes: int, comm: str, g: int = 1
         ) -> dict[str, Any] | None:
    return next((r for r in d["rows"] if (r["link"], r["nodes"], r["comm"],
                                          int(r.get("ranks_per_node", 1))) == (link, nodes, comm, g)),
                None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", nargs="?", default="run", choices=["run", "predict", "table", "profile"],
                    help="run the sweep (resumable); predict: recompute the predictions from "
                    "the stored inputs; table: print the docs block; profile: take the "
                    "one-process profile again, then predict")
    ap.add_argument("--links", nargs="+", default=LINKS)
    ap.add_argument("--nodes", nargs="+", type=int, default=NODES)
    ap.add_argument("--comms", nargs="+", default=COMMS)
    ap.add_argument("--ranks-per-node", nargs="+", type=int, default=[1],
                    help="ranks on each virtual node (> 1: the nodes share their link and "
                    "talk over loopback inside; hierarchical differs from a flat ring)")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--repeats", type=int, default=REPEATS,
                    help="runs of each configuration, interleaved; the row takes their median")
    ap.add_argument("--fresh", action="store_true", help="start over (default: resume)")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    if min(args.ranks_per_node) < 1:
        ap.error("--ranks-per-node must be >= 1")
    if args.what == "table":
        print(render(json.loads(Path(args.out).read_text())))
        return 0
    if args.what in ("predict", "profile"):
        d = json.loads(Path(args.out).read_text())
        if args.what == "profile":
            _profile(d, Path(tempfile.mkdtemp(prefix="predict_cluster-")))
            d.pop("reference", None)  # the runs' references belong to the old profile
        for link in d["hardware"]:
            if not sharing_of(d, link):
                d.setdefault("contention", {})[link] = _sharing(later=True)
        _save(d, Path(args.out))
    else:
        d = run(args)
    print(render(d))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
