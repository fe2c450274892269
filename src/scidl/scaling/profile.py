"""Step profiles (compute time, gradient buckets, overlap) from run folders or files.

A run folder written by the trainer holds ``config.yaml``, ``summary.json`` and
``metrics.jsonl`` (per step: ``step_time_s``, ``comm_s``, ``comm_exposed_s``). The
compute time of a step is ``step_time_s − comm_exposed_s`` (median over steps after the
first); gradient sizes come from ``profile.json`` when ``scidl scale`` wrote one, or
from rebuilding the workload's model and counting its trainable parameters.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import yaml

from scidl.scaling.predict import StepProfile, split_buckets


def median_of(rows: list[dict[str, Any]], key: str, default: float = 0.0) -> float:
    vals = [float(r[key]) for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else default


def summary_median_step(summary: dict[str, Any]) -> float:
    """Median step time of a run's ``summary.json`` (the fallback when it logged no rows).

    ``step_time_s`` is the mean since the summary reports periodic work; summaries written
    before that hold the median there.
    """
    return float(summary.get("step_time_median_s", summary.get("step_time_s")) or 0.0)


def step_rows(run_dir: Path) -> list[dict[str, Any]]:
    """Training-step rows of ``metrics.jsonl`` without the first (warm-up) step."""
    from scidl.scaling.report import read_jsonl

    path = run_dir / "metrics.jsonl"
    rows = read_jsonl(path) if path.is_file() else []
    rows = [r for r in rows if "step_time_s" in r]
    return rows[1:] if len(rows) > 2 else rows


def model_grad_shapes(cfg_dict: dict[str, Any]) -> list[list[int]]:
    """Shape of each trainable parameter, in reverse registration order (≈ the order
    gradients become ready in backward), from rebuilding the workload's model."""
    from scidl.config import RunConfig
    from scidl.runtime.seed import seed_everything
    from scidl.workloads import get_workload
    from scidl.workloads.base import BuildContext

    cfg = RunConfig.model_validate(cfg_dict)
    seed_everything(cfg.train.seed)
    task = get_workload(cfg.workload).build(cfg.task_config(), BuildContext(seed=cfg.train.seed))
    shapes = [list(p.shape) for p in task.model.parameters() if p.requires_grad]
    return shapes[::-1]


def fp32_bytes(shape: list[int]) -> int:
    """Bytes of an fp32 tensor of ``shape``."""
    return 4 * math.prod(shape)


def model_grad_sizes(cfg_dict: dict[str, Any]) -> list[int]:
    """fp32 bytes of each trainable parameter, in backward order (see model_grad_shapes)."""
    return [fp32_bytes(s) for s in model_grad_shapes(cfg_dict)]


def bucketize(sizes: list[int], cap: float) -> list[float]:
    """Group parameter sizes (backward order) into DDP-style buckets of ≤ ``cap`` bytes."""
    out: list[float] = []
    cur = 0.0
    for s in sizes:
        if cur and cur + s > cap:
            out.append(cur)
            cur = 0.0
        cur += s
    if cur:
        out.append(cur)
    return out


def bucketize_shapes(shapes: list[list[int]], cap: float) -> list[list[list[int]]]:
    """The parameter shapes of each bucket :func:`bucketize` forms (same grouping)."""
    out: list[list[list[int]]] = []
    cur: list[list[int]] = []
    size = 0.0
    for s in shapes:
        if cur and size + fp32_bytes(s) > cap:
            out.append(cur)
            cur, size = [], 0.0
        cur.append(s)
        size += fp32_bytes(s)
    if cur:
        out.append(cur)
    return out


def profile_from_run(run_dir: str | Path) -> StepProfile:
    """Measured step profile of a train or scale-point run folder."""
    d = Path(run_dir)
    cfg_path, summ_path = d / "config.yaml", d / "summary.json"
    if not cfg_path.is_file() or not summ_path.is_file():
        raise FileNotFoundError(f"{d}: needs config.yaml and summary.json (a finished run)")
    cfg = yaml.safe_load(cfg_path.read_text())
    summary = json.loads(summ_path.read_text())
    rows = step_rows(d)
    step = median_of(rows, "step_time_s", summary_median_step(summary))
    exposed = median_of(rows, "comm_exposed_s")
    comm = median_of(rows, "comm_s")
    extra: dict[str, Any] = {}
    prof_json = d / "profile.json"
    if prof_json.is_file():
        extra = json.loads(prof_json.read_text())
    shapes = extra.get("param_shapes")
    if shapes is None and not extra.get("param_bytes"):
        shapes = model_grad_shapes(cfg)
    sizes = [fp32_bytes(s) for s in shapes] if shapes is not None else extra["param_bytes"]
    cap = float(cfg.get("comm", {}).get("bucket_cap_mb", 25.0)) * 2**20
    world = int(summary.get("world_size") or 1)
    overlap = None if comm <= 0 or world <= 1 else max(0.0, 1.0 - exposed / comm)
    return StepProfile(
        compute_s=max(step - exposed, 1e-9),
        grad_bytes=float(sum(sizes)),
        bucket_bytes=bucketize(list(sizes), cap) or split_buckets(0, cap),
        bucket_shapes=bucketize_shapes(shapes, cap) if shapes else None,
        samples_per_step=int(summary.get("batch_size_per_rank") or 1)
        * int(cfg.get("train", {}).get("grad_accum", 1)),
        overlap_measured=overlap,
        measured_here=True,
        source=str(d),
        measured_ranks=world,
        measured_step_s=step if world > 1 else None,
        measured_comm_s=comm if world > 1 else None,
        measured_exposed_comm_s=exposed if world > 1 else None,
    )


def load_profile(path: str | Path) -> StepProfile:
    """A run folder, or a YAML/JSON file with :class:`StepProfile` fields."""
    p = Path(path)
    if p.is_dir():
        return profile_from_run(p)
    if not p.is_file():
        raise FileNotFoundError(f"profile not found: {p} (a run folder or a YAML/JSON file)")
    data = yaml.safe_load(p.read_text())
    return StepProfile.model_validate(data)
