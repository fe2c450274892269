"""Collective benchmark (allreduce / allgather / reduce-scatter) and α-β-γ calibration.

Sizes follow nccl-tests: ``n`` is the allreduce buffer, the allgather *output* and the
reduce-scatter *input*. algbw = n / t; busbw = algbw·2(p−1)/p (allreduce) or
algbw·(p−1)/p (allgather, reduce-scatter), the bandwidth one link sustains.

The fit solves, by non-negative weighted least squares over every measured (op, p, n),

    allreduce:      t = 2(p−1)·α + 2(p−1)/p·n·β + (p−1)/p·n·γ
    allgather:      t =  (p−1)·α +  (p−1)/p·n·β
    reduce-scatter: t =  (p−1)·α +  (p−1)/p·n·(β + γ)

in two stages (:func:`fit_alpha_beta_gamma`): β and γ from the marginal cost of a byte
(the time differences between consecutive sizes of each (op, p) series, in absolute
time, so the largest, bandwidth-bound messages carry them), then α from every timing
given β and γ, with weights 1/t, so the small, latency-bound messages carry it. On a
link that follows the α-β model this is the plain fit; on a shaped link whose token
bucket lets the first few hundred kilobytes through faster than the sustained rate it
keeps the sustained rate, the one a training step's megabyte-sized buckets see (a fit
of every size alike in relative terms read 1.7 Gbit/s on a 1 Gbit/s link).

An op may name the element type it moves, ``allreduce:float16`` (:func:`split_op`;
float32 otherwise). Its timings get a rate and small-message times of their own
(``op_beta``, ``op_latency``) and stay out of the common α-β-γ fit, which describes
float32: a reduction's cost per byte depends on the type (gloo on CPU adds float16
entries slower per byte than float32 ones, so an fp16 allreduce can take well over half
the time of the float32 one of the same entries), and the cost model prices a strategy's
collective by the rate measured for its wire type where there is one.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from scidl.comm.accounting import ring_allreduce_bytes, ring_pass_bytes, ring_steps

OPS = ("allreduce", "allgather", "reduce_scatter")
DTYPES = ("float32", "float16", "bfloat16")


def split_op(op: str) -> tuple[str, str]:
    """(collective, element type) of an op name: ``allreduce:float16`` → (allreduce,
    float16); a bare name moves float32. KeyError names an unknown part."""
    base, _, dtype = op.partition(":")
    dtype = dtype or "float32"
    if base not in OPS:
        raise KeyError(f"unknown collective {base!r}; choices: {', '.join(OPS)}")
    if dtype not in DTYPES:
        raise KeyError(f"unknown element type {dtype!r} in {op!r}; choices: {', '.join(DTYPES)}")
    return base, dtype


def busbw_factor(op: str, p: int) -> float:
    """busbw / algbw for ``op`` on ``p`` ranks: the bytes per rank per payload byte."""
    if p <= 1:
        return 0.0
    base, _ = split_op(op)
    return ring_allreduce_bytes(1.0, p) if base == "allreduce" else ring_pass_bytes(1.0, p)


def model_coefficients(op: str, p: int, n: float) -> tuple[float, float, float]:
    """(coefficient of α, of β, of γ) of the ring model of ``op`` (any element type)."""
    op, _ = split_op(op)
    if op == "allreduce":
        return 2 * ring_steps(p), ring_allreduce_bytes(float(n), p), ring_pass_bytes(n, p)
    if op == "allgather":
        return ring_steps(p), ring_pass_bytes(n, p), 0.0
    if op == "reduce_scatter":
        return ring_steps(p), ring_pass_bytes(n, p), ring_pass_bytes(n, p)
    raise AssertionError(op)  # split_op checked it


def _scaled_nnls(a: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Non-negative least squares of ``a·x ≈ t`` with the columns scaled to 1."""
    from scipy.optimize import nnls

    scale = np.abs(a).max(axis=0)
    scale[scale == 0] = 1.0
    x, _ = nnls(a / scale, t)
    return np.asarray(x / scale, float)


def marginal_rows(rows: Sequence[dict[str, Any]], coef: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(Δ coefficients, Δ time) between consecutive message sizes of each (op, p) series:
    the cost of the extra bytes alone, free of α and of any fixed cost per call."""
    series: dict[tuple[str, int], list[int]] = {}
    for i, s in enumerate(rows):
        series.setdefault((s["op"], int(s["ranks"])), []).append(i)
    da, dt = [], []
    for idx in series.values():
        idx.sort(key=lambda i: rows[i]["bytes"])
        for i, j in zip(idx, idx[1:], strict=False):
            if rows[j]["bytes"] > rows[i]["bytes"]:
                da.append(coef[j] - coef[i])
                dt.append(float(rows[j]["time_s"]) - float(rows[i]["time_s"]))
    return np.array(da, float).reshape(-1, coef.shape[1]), np.array(dt, float)


def fit_alpha_beta_gamma(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Fit α, β, γ ≥ 0 to rows ``{"op", "ranks", "bytes", "time_s"}``.

    β and γ: least squares on the time differences between consecutive sizes of each
    (op, p) series (:func:`marginal_rows`), in absolute time: the largest messages, the
    bandwidth-bound ones, weigh most, and α cancels, as does a token bucket's burst
    allowance once both sizes exceed the bucket. α: least squares of the time left
    after β and γ over every row, with weights 1/t (latency-bound rows weigh as much as
    the others). Without two sizes of one series, one fit of all three with weights
    1/t (``method`` says which).

    Returns ``alpha``, ``beta``, ``gamma``, ``bandwidth`` (1/β), ``rel_rms`` (root mean
    square relative error of the fit over all rows), ``n`` (rows used) and ``method``.
    γ is only identifiable when the rows mix reducing and non-reducing collectives;
    otherwise it is 0. Rows of ops that name another element type than float32
    (``allreduce:float16``) only enter ``op_beta`` and ``op_latency``.
    """
    rows = [s for s in samples if s["ranks"] > 1 and s["time_s"] > 0
            and split_op(s["op"])[1] == "float32"]
    if len(rows) < 2:
        raise ValueError("need at least two timings with more than one rank to fit α, β")
    a = np.array([model_coefficients(s["op"], s["ranks"], s["bytes"]) for s in rows], float)
    t = np.array([s["time_s"] for s in rows], float)
    # β and γ appear in a fixed ratio within one op: γ needs two different ops
    has_gamma = len({s["op"] for s in rows}) >= 2
    if not has_gamma:
        a = a[:, :2]
    w = 1.0 / t
    da, dt = marginal_rows(rows, a[:, 1:])
    if len(dt) >= a.shape[1] - 1 and np.any(da != 0):
        per_byte = _scaled_nnls(da, dt)
        rest = t - a[:, 1:] @ per_byte
        k = a[:, 0] * w
        alpha = max(0.0, float(np.dot(k, rest * w) / np.dot(k, k))) if np.any(k) else 0.0
        x = np.concatenate([[alpha], per_byte])
        method = "marginal"
    else:
        x = _scaled_nnls(a * w[:, None], t * w)
        method = "relative"
    alpha, beta = float(x[0]), float(x[1])
    gamma = float(x[2]) if has_gamma else 0.0
    pred = a @ x
    rel = float(np.sqrt(np.mean(((pred - t) / t) ** 2)))
    return {
        "alpha": alpha,
        "beta": beta,
        "gamma": gamma,
        "bandwidth": 1.0 / beta if beta > 0 else float("inf"),
        "rel_rms": rel,
        "n": len(rows),
        "method": method,
        "op_beta": fit_op_rates(samples),
        "op_beta_ranks": op_rate_ranks(samples),
        "op_latency": fit_op_latency(samples),
    }


LATENCY_MAX_BYTES = 64 * 1024


def fit_op_latency(samples: Sequence[dict[str, Any]], max_bytes: int = LATENCY_MAX_BYTES
                   ) -> dict[str, dict[int, list[list[float]]]]:
    """Per collective and rank count, ``[[bytes, seconds], ...]`` of the timings of at most
    ``max_bytes``: the mean time per call (``time_s_mean``; the median where a file has
    no mean), what a step that makes such a call pays on average.

    Small collectives cost what the backend, the scheduler and the link's latency add up
    to, often several times the α a fit over larger sizes reads (gloo's allreduce of
    16 KiB to 256 KiB takes several round trips; ranks that share cores wait for one
    another at each hop), and the cost model never prices one below its measured time
    (:func:`scidl.scaling.costmodel.latency_floor`)."""
    out: dict[str, dict[int, list[list[float]]]] = {}
    for s in samples:
        if s["ranks"] > 1 and 0 < s["bytes"] <= max_bytes:
            t = float(s.get("time_s_mean", s["time_s"]))
            if t > 0:
                out.setdefault(s["op"], {}).setdefault(int(s["ranks"]), []).append(
                    [float(s["bytes"]), t])
    for by_p in out.values():
        for rows in by_p.values():
            rows.sort()
    return out


def fit_op_rates(samples: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Per collective, its own seconds per byte of the ring model's β term (a reducing
    op's γ folded in): least squares through the origin of the time differences between
    consecutive sizes (:func:`marginal_rows`, so α and a shaper's burst cancel).

    One β for every op assumes the backend moves each op's bytes equally fast; where it
    does not (gloo's allgather over a shaped link runs well below its allreduce per byte),
    a single fit prices each op wrongly, by the others' share of the rows. Ops with fewer
    than two sizes of one (op, p) series are left out (the common β prices them)."""
    rows = [s for s in samples if s["ranks"] > 1 and s["time_s"] > 0]
    out: dict[str, float] = {}
    for op in sorted({s["op"] for s in rows}):
        mine = [s for s in rows if s["op"] == op]
        coef = np.array([[model_coefficients(op, s["ranks"], s["bytes"])[1]] for s in mine], float)
        da, dt = marginal_rows(mine, coef)
        if len(dt) and float(np.dot(da[:, 0], da[:, 0])) > 0:
            out[op] = max(0.0, float(np.dot(da[:, 0], dt) / np.dot(da[:, 0], da[:, 0])))
    return out


def cores_rates(rows: Sequence[dict[str, Any]]) -> dict[str, dict[int, float]]:
    """Per op and rank count, the seconds per byte that the machine's cores alone sustain:
    :func:`fit_op_rates` on each count's timings of ``rows`` (loopback, no link in the
    way). A link level's ``cores_beta``: where a virtual cluster's nodes share these
    cores, a node count beyond the calibration's adds their cost per byte
    (:func:`scidl.scaling.contention.cores_bound_rates`)."""
    out: dict[str, dict[int, float]] = {}
    for p in sorted({int(r["ranks"]) for r in rows if r["ranks"] > 1}):
        for op, rate in fit_op_rates([r for r in rows if r["ranks"] == p]).items():
            out.setdefault(op, {})[p] = rate
    return out


def with_cores_rates(hardware: dict[str, Any], table: dict[str, dict[int, float]]
                     ) -> dict[str, Any]:
    """A hardware file (as a dict) with ``table`` as the ``cores_beta`` of each of its link
    levels (unchanged where ``table`` is empty)."""
    if not table:
        return hardware
    out = dict(hardware)
    for key in ("inter", "intra"):
        if out.get(key):
            out[key] = {**out[key], "cores_beta": table}
    return out


def op_rate_ranks(samples: Sequence[dict[str, Any]]) -> int | None:
    """The one rank count (> 1) of the timings behind :func:`fit_op_rates`, or None where
    they mix several (then the cores' cost at other counts cannot be priced against it,
    :func:`scidl.scaling.contention.cores_bound_rates`)."""
    counts = {int(s["ranks"]) for s in samples if s["ranks"] > 1 and s["time_s"] > 0}
    return counts.pop() if len(counts) == 1 else None


def size_sweep(min_bytes: int, max_bytes: int, factor: int = 4) -> list[int]:
    """Message sizes from ``min_bytes`` to ``max_bytes`` multiplying by ``factor``."""
    sizes, n = [], max(4, min_bytes)
    while n <= max_bytes:
        sizes.append(n)
        n *= factor
    return sizes


def _time_op(op: str, n: int, p: int, iters: int) -> list[float]:
    import torch
    import torch.distributed as dist

    op, type_name = split_op(op)
    dtype = getattr(torch, type_name)
    numel = max(p, n // dtype.itemsize // p * p)
    if op == "allreduce":
        buf = torch.ones(numel, dtype=dtype)

        def call() -> None:
            dist.all_reduce(buf)
    elif op == "allgather":
        inp, out = torch.ones(numel // p, dtype=dtype), torch.empty(numel, dtype=dtype)

        gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor

        def call() -> None:
            gather(out, inp)
    else:
        inp, out = torch.ones(numel, dtype=dtype), torch.empty(numel // p, dtype=dtype)

        scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor

        def call() -> None:
            scatter(out, inp)

    call()  # warm-up
    times = []
    for _ in range(iters):
        dist.barrier()
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    per_iter = torch.tensor(times, dtype=torch.float64)
    dist.all_reduce(per_iter, op=dist.ReduceOp.MAX)  # each call ends with its slowest rank
    return sorted(per_iter.tolist())


def bench_worker(rank: int, world: int, sizes: list[int], ops: list[str], iters: int) -> list:
    """Run on every rank (inside an initialised process group): timings per (op, size).

    Ops are interleaved at each size so drifts in machine load hit them alike.
    """
    rows = []
    for n in sizes:
        for op in ops:
            ts = _time_op(op, n, world, iters)
            rows.append({"op": op, "ranks": world, "bytes": n, "time_s": statistics.median(ts),
                         "time_s_mean": statistics.fmean(ts), "time_s_min": ts[0],
                         "time_s_max": ts[-1]})
    return rows


def run_bench(
    nprocs: Sequence[int], sizes: Sequence[int], ops: Sequence[str] = OPS, iters: int = 10,
    timeout: float = 300.0,
) -> list[dict[str, Any]]:
    """Launch gloo process groups of each size in ``nprocs`` and time the collectives."""
    from scidl.runtime.launch import run_distributed

    rows: list[dict[str, Any]] = []
    for p in nprocs:
        if p < 2:
            raise ValueError("bench-collectives needs at least 2 processes")
        res = run_distributed(bench_worker, p, list(sizes), list(ops), iters, timeout=timeout)
        for r in res[0]:
            alg = r["bytes"] / r["time_s"]
            r["algbw_Bps"] = alg
            r["busbw_Bps"] = alg * busbw_factor(r["op"], p)
            rows.append(r)
    return rows


def compute_probe_worker(
    rank: int, world: int, n: int, inner: int, rounds: int, blocks: int,
) -> dict[str, list[float]]:
    """Run on every rank of a group of ``world`` = p ranks: ``blocks`` paired blocks,
    each a one-rank block then a busy block, and one more one-rank block at the end.

    A step is ``inner`` n×n matmuls then a one-element allreduce (a data-parallel step
    in miniature: compute, then wait for every rank). Busy block: every rank runs one
    untimed step (its allreduce lines the ranks up) then ``rounds`` timed steps; its
    figure is the slowest rank's time per step. A rank the scheduler starts late delays
    the allreduce and so every rank's clock (timing each rank's own matmuls hid
    time-sharing: 4 ranks on 2 cores read ×1.06). One-rank block: rank 0 runs
    ``rounds`` steps' matmuls alone while the other ranks sleep (they neither compute
    nor wait in a collective, whose waiting took cores in an earlier probe), so each busy
    block has a one-rank reference taken on the same machine seconds apart at most.

    Returns (on every rank) ``busy``: seconds per step of each busy block, ``solo``:
    of each one-rank block (``blocks + 1``, the busy block k between solo k and k + 1).
    """
    import torch
    import torch.distributed as dist

    a, b = torch.randn(n, n), torch.randn(n, n)
    flag = torch.zeros(1)
    for _ in range(2):  # warm-up: the first matmul and the first collective
        a @ b
        dist.all_reduce(flag)
    # how long the others sleep through a one-rank block: generously its length
    est = torch.tensor([_solo_step(a, b, inner, 2) if rank == 0 else 0.0], dtype=torch.float64)
    dist.broadcast(est, 0)
    pause = 3.0 * float(est) * rounds + 0.02

    def solo() -> float:
        dist.barrier()
        if rank == 0:
            return _solo_step(a, b, inner, rounds)
        time.sleep(pause)
        return 0.0

    solos, busy = [solo()], []
    for _ in range(max(1, blocks)):
        dist.barrier()
        for _ in range(inner):
            a @ b
        dist.all_reduce(flag)
        t0 = time.monotonic()
        for _ in range(rounds):
            for _ in range(inner):
                a @ b
            dist.all_reduce(flag)
        busy.append((time.monotonic() - t0) / rounds)
        solos.append(solo())
    out = torch.tensor(busy + solos, dtype=torch.float64)
    dist.all_reduce(out, op=dist.ReduceOp.MAX)  # the slowest rank's busy steps; rank 0's solos
    vals = [float(x) for x in out.tolist()]
    return {"busy": vals[:len(busy)], "solo": vals[len(busy):]}


def paired_ratios(busy: Sequence[float], solo: Sequence[float]) -> list[float]:
    """The slowdown each busy block reads against the one-rank blocks run right before and
    right after it (``solo[k]`` and ``solo[k + 1]``, their mean step): a change of the
    machine's load between blocks hits a ratio's two sides alike instead of every ratio
    of a count."""
    if len(solo) != len(busy) + 1:
        raise ValueError("need one more one-rank block than busy blocks")
    out = []
    for k, t in enumerate(busy):
        ref = (float(solo[k]) + float(solo[k + 1])) / 2
        if ref <= 0:
            raise ValueError("one-rank probe step must be > 0")
        out.append(float(t) / ref)
    return out


def robust_factor(ratios: Sequence[float]) -> dict[str, Any]:
    """The median of the paired ratios (:func:`paired_ratios`) as the factor, their
    quartiles as its spread (``lo``, ``hi``) and their count ``n``: a few blocks slowed by
    a load spike move neither (a ratio of medians over three unpaired blocks read ×2.20
    for 2 ranks on 2 cores where the same probe minutes later read ×1.11)."""
    xs = sorted(float(x) for x in ratios)
    if not xs:
        raise ValueError("no probe ratios")
    if len(xs) == 1:
        lo = hi = xs[0]
    else:
        q = statistics.quantiles(xs, n=4, method="inclusive")
        lo, hi = q[0], q[2]
    return {"factor": statistics.median(xs), "lo": lo, "hi": hi, "n": len(xs)}


def _solo_step(a: Any, b: Any, inner: int, rounds: int) -> float:
    """Seconds per probe step of this process alone: ``rounds`` steps of ``inner``
    matmuls of ``a`` and ``b``."""
    t0 = time.perf_counter()
    for _ in range(rounds):
        for _ in range(inner):
            a @ b
    return (time.perf_counter() - t0) / rounds


def measure_compute_slowdown_stats(
    nprocs: Sequence[int], n: int = 192, inner: int = 24, rounds: int = 8,
    blocks: int = 8, groups: int = 2, timeout: float = 300.0,
) -> dict[str, Any]:
    """Slowest-rank step time with p ranks computing at once, relative to one rank, paired.

    Each count p in ``nprocs`` runs in a process group of exactly p processes, as a
    p-rank job has (an earlier probe ran every count in one group of max(p) ranks: the
    idle ranks waiting in their collective took cores and made 2 busy ranks of a 4-rank
    group read ×1.7 on 2 quiet cores); the counts take turns, ``groups`` times each (so a
    slow spell of the machine does not land on one count only). Each group runs
    ``blocks`` busy blocks of ``rounds`` steps, each between two one-rank blocks
    (:func:`compute_probe_worker`), and each busy block is read against its neighbours
    (:func:`paired_ratios`). The factor at p is the median of its ``groups × blocks``
    ratios, with their quartiles as its spread (:func:`robust_factor`).

    Returns ``slowdown`` {p: factor}, ``range`` {p: [lo, hi]}, ``ratios`` {p: [...]},
    ``probe_step_s`` (w: the median one-rank step, the contention model's step length,
    :mod:`scidl.scaling.contention`) and the settings. On a node with fewer free cores
    than ranks (or other users' load) the ranks time-share: this is the factor the cost
    model applies to the compute at p.
    """
    from scidl.runtime.launch import run_distributed

    counts = sorted({int(p) for p in nprocs if int(p) > 1})
    ratios: dict[int, list[float]] = {p: [] for p in counts}
    solos: list[float] = []
    for _ in range(max(1, groups)):
        for p in counts:
            res = run_distributed(compute_probe_worker, p, n, inner, rounds, blocks,
                                  timeout=timeout)[0]
            ratios[p] += paired_ratios(res["busy"], res["solo"])
            solos += res["solo"]
    stats = {p: robust_factor(r) for p, r in ratios.items()}
    return {"slowdown": {p: s["factor"] for p, s in stats.items()},
            "range": {p: [s["lo"], s["hi"]] for p, s in stats.items()},
            "ratios": ratios, "probe_step_s": statistics.median(solos),
            "n": n, "inner": inner, "rounds": rounds, "blocks": blocks, "groups": groups}


def measure_compute_slowdown(
    nprocs: Sequence[int], n: int = 192, inner: int = 24, rounds: int = 8,
    timeout: float = 300.0, blocks: int = 8, groups: int = 2,
) -> dict[int, float]:
    """{p: factor} of :func:`measure_compute_slowdown_stats` (the paired median)."""
    return measure_compute_slowdown_stats(nprocs, n=n, inner=inner, rounds=rounds,
                                          blocks=blocks, groups=groups,
                                          timeout=timeout)["slowdown"]


def measure_probe_step(n: int = 192, inner: int = 24, rounds: int = 12, blocks: int = 3,
                       fastest: bool = False) -> float:
    """Seconds of one compute-probe step on one rank alone (w): ``inner`` n×n float32
    matmuls on one thread, as :func:`compute_probe_worker` runs them (its collective
    is a no-op for one rank), median over ``blocks`` blocks of ``rounds / blocks``
    steps (``fastest``: the fastest block instead, the step of a quiet core when other
    processes load the machine). The contention model (:mod:`scidl.scaling.contention`)
    reads the probe's slowdown against this step length: what a short step's factor
    says about a long one (:func:`measure_compute_slowdown_stats` measures it beside its
    ratios as ``probe_step_s``).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        for _ in range(2):
            a @ b
        per_block = max(1, math.ceil(rounds / max(1, blocks)))
        samples = [_solo_step(a, b, inner, per_block) for _ in range(max(1, blocks))]
    finally:
        torch.set_num_threads(threads)
    return min(samples) if fastest else statistics.median(samples)


def contention_fields(probe_step_s: float, cores: int | None = None) -> dict[str, Any]:
    """The hardware-file fields that calibrate the contention model of ranks sharing
    cores (:mod:`scidl.scaling.contention`) beside ``compute_slowdown``: the probe's
    one-rank step w (:func:`measure_probe_step`) and the cores C the ranks share."""
    return {"probe_step_s": float(probe_step_s),
            "concurrent_devices": int(cores or os.cpu_count() or 1)}


def alpha_free_of_sharing(hardware: dict[str, Any], ranks: int) -> dict[str, Any]:
    """A hardware dict whose link levels were fitted from collectives timed with ``ranks``
    ranks sharing this machine's cores (a virtual cluster), with each level's α net of
    the contention model's scheduling delay at ``ranks``
    (:func:`scidl.scaling.contention.link_alpha`): the model charges that delay to every
    collective's compute phase, so leaving it in α too counted it twice, and an α fitted
    at 8 ranks overpriced every collective at 2. Needs the contention fields
    (``compute_slowdown``, ``probe_step_s``, ``concurrent_devices``); else unchanged."""
    from scidl.scaling.contention import CoreSharing, link_alpha

    sharing = CoreSharing.calibrated(hardware.get("concurrent_devices"),
                                     hardware.get("probe_step_s"),
                                     hardware.get("compute_slowdown"))
    if sharing is None:
        return hardware
    out = dict(hardware)
    for key in ("inter", "intra"):
        level = out.get(key)
        if level and "alpha" in level:
            alpha = link_alpha(float(level["alpha"]), sharing, ranks)
            out[key] = {**level, "alpha": alpha,
                        "note": f"{level.get('note', '')}; α {float(level['alpha']) * 1e3:.3f} ms "
                                f"as fitted, net of the scheduling delay of {ranks} ranks on "
                                f"{sharing.cores} cores".lstrip("; ")}
    return out


def measure_matmul_flops(n: int = 384, repeats: int = 5) -> float:
    """Sustained FLOP/s of one thread on a float32 matmul (2n³ FLOPs), median of repeats."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times)


def fit_by_ranks(samples: Sequence[dict[str, Any]]) -> dict[int, dict[str, float]]:
    """One α-β-γ fit per process count (where that count has enough timings)."""
    out = {}
    for p in sorted({s["ranks"] for s in samples}):
        rows = [s for s in samples if s["ranks"] == p and split_op(s["op"])[1] == "float32"]
        if p > 1 and len(rows) >= 3:
            out[p] = fit_alpha_beta_gamma(rows)
    return out


def _level(fit: dict[str, Any], what: str) -> dict[str, Any]:
    return {
        "alpha": fit["alpha"], "beta": fit["beta"], "gamma": fit["gamma"],
        "op_beta": dict(fit.get("op_beta", {})),
        "op_beta_ranks": fit.get("op_beta_ranks"),
        "op_latency": dict(fit.get("op_latency", {})),
        "note": f"least-squares fit of {fit['n']} timings ({what}), "
        f"rel. rms error {fit['rel_rms']:.2f}",
    }


def local_hardware(
    fit: dict[str, float], device_flops: float, max_p: int,
    per_p: dict[int, dict[str, float]] | None = None,
    slowdown: dict[int, float] | None = None,
) -> dict[str, Any]:
    """A hardware-profile dict for this machine from a fit (see :class:`Hardware`)."""
    cores = os.cpu_count() or 1
    per_p = per_p if per_p and len(per_p) > 1 else {}
    return {
        "name": f"local-{platform.node() or 'host'}",
        "description": f"this machine, gloo on CPU, calibrated with up to {max_p} processes",
        "device": f"{platform.processor() or platform.machine()} CPU core (1 thread per rank)",
        "devices_per_node": max(cores, max_p),
        "peak_flops": None,
        "sustained_flops": device_flops,
        "concurrent_devices": cores,
        "overlap": 0.0,
        "algorithm": "ring",
        "fusion_bytes": 25 * 2**20,
        "intra": _level(fit, "all process counts"),
        "inter": None,
        "intra_by_ranks": {p: _level(f, f"p = {p}") for p, f in per_p.items()},
        "compute_slowdown": dict(slowdown or {}),
        "measured_here": True,
        "sources": ["scidl bench-collectives (this machine)"],
        "assumptions": [
            "all ranks on one node; compute at p is slowed by the measured slowest-rank "
            "factor compute_slowdown[p] (time-sharing, other users' load)",
            "gloo runs its collectives on the same cores as compute: overlap 0",
            "sustained_flops: one-thread float32 matmul, used only to move profiles elsewhere",
        ],
    }
