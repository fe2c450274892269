"""Predict the published scaling points of ``published_scaling.csv`` with the cost model.

One assumption set per hardware system (:data:`SYSTEMS`: preset, per-device batch,
gradient precision) and one figure set per model (:data:`MODELS`: forward FLOPs per
sample, parameters); nothing is fitted per row. The compute time of one step is
``3·F_fwd·batch / sustained_flops`` (backward ≈ 2× forward), gradients are
``params·bytes`` reduced in the system's fusion buckets.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from scidl.scaling.costmodel import Compression
from scidl.scaling.hardware import load_hardware
from scidl.scaling.predict import StepProfile, predict_curve

# Forward FLOPs per sample = 2 × multiply-accumulates (torchvision model docs list MACs as
# "GFLOPS": inception_v3 5.71, resnet101 7.80, vgg16 15.47, resnet50 4.09 at 224/299 px).
# ``p100_img_s``: measured single-GPU training throughput (images/s) on a P100 SXM2 by
# batch size, TensorFlow benchmarks of May 2017 (tensorflow/docs, site/en/r1/guide/
# performance/benchmarks.md, "Details for NVIDIA DGX-1", synthetic data). ResNet-101 is
# not in that table: its rate is interpolated in FLOP/s between ResNet-50 (5.37 TFLOP/s)
# and ResNet-152 (6.34 TFLOP/s) at its FLOPs, giving 5.9 TFLOP/s = 126 images/s.
MODELS: dict[str, dict[str, Any]] = {
    "Inception V3": {
        "fwd_flops": 2 * 5.71e9, "p100_img_s": {64: 142.0, 32: 128.0},
        "source": "torchvision inception_v3, 299 px",
    },
    "ResNet-101": {
        "fwd_flops": 2 * 7.80e9, "p100_img_s": {64: 126.0},
        "source": "torchvision resnet101, 224 px; P100 rate interpolated",
    },
    "VGG-16": {
        "fwd_flops": 2 * 15.47e9, "p100_img_s": {64: 154.0, 32: 144.0},
        "source": "torchvision vgg16, 224 px",
    },
    "ResNet-50": {
        "fwd_flops": 2 * 4.09e9, "p100_img_s": {64: 219.0, 32: 195.0},
        "source": "torchvision resnet50, 224 px",
    },
    "ResNet-1001": {
        "fwd_flops": 2 * 1.5e9,
        "source": "ASSUMPTION: pre-activation ResNet-1001 at 32x32 px, 3x111 bottleneck "
        "blocks ≈ 1.5 GMAC (counted from He et al. 2016's architecture)",
    },
    "fully convolutional inverse-problem network": {
        "fwd_flops": None,
        "params_millions": 200.0,
        "compute_s": 0.5,
        "source": "ASSUMPTION: neither FLOPs nor parameters are in the CSV; 200 M parameters "
        "and 0.5 s of compute per step (see the sensitivity table in docs/scaling.md)",
    },
}

# One entry per hardware system of the CSV (matched on the `system` column).
SYSTEMS: dict[str, dict[str, Any]] = {
    "128 servers x 4 Pascal GPUs": {
        "hardware": "horovod_p100_roce", "batch": 64, "grad": "dense", "p100_scale": 9.3 / 10.6,
        "why": "tf_cnn_benchmarks --batch_size 64 (Horovod benchmark docs), fp32 gradients; "
        "P100 SXM2 rates x 9.3/10.6 for the PCIe P100",
    },
    "32 servers x 8 P100 (Big Basin)": {
        "hardware": "bigbasin", "batch": 32, "grad": "dense", "p100_scale": 1.0,
        "why": "32 images per GPU (Goyal et al.), fp32 gradients; P100 SXM2 rate at batch 32 "
        "measured with TensorFlow (Goyal et al. used Caffe2)",
    },
    "Summit (ORNL)": {
        "hardware": "summit", "batch": None, "grad": "fp16",
        "why": "fp16 gradients (Laanait et al. train in fp16)",
    },
    "Intel Xeon cluster (Stampede2 / MareNostrum class)": {
        "hardware": "stampede2_knl", "batch": 32, "grad": "dense", "cores_per_rank": 68,
        "why": "ASSUMPTION: 104K cores = 1,536 KNL nodes x 68 cores, one rank per node, "
        "32 images per node (~49K global batch), fp32 gradients",
    },
    "Stampede2 (TACC)": {
        "hardware": "stampede2_skx", "batch": 128, "grad": "dense",
        "why": "ASSUMPTION: 128 images per node, pure data parallelism (the paper's run is "
        "hybrid model+data parallel), fp32 gradients",
    },
}


def _ranks(text: str, sys_cfg: dict[str, Any]) -> int:
    n = int(text.split()[0].replace(",", ""))
    return max(1, round(n / sys_cfg.get("cores_per_rank", 1)))


def _efficiency(text: str, ranks: int) -> tuple[float, str]:
    t = text.strip()
    if t.endswith("x over 1 node"):
        speedup = float(t.split("x")[0])
        return speedup / ranks, f"{t} = {speedup / ranks:.3f} efficiency"
    return float(t), t


def row_profile(
    row: dict[str, str], use_measured: bool = True
) -> tuple[StepProfile, dict[str, Any]]:
    """The step profile and assumptions for one CSV row.

    With ``use_measured`` the compute time comes from a published single-GPU throughput
    where the model has one on the system's device; otherwise from FLOPs and the
    system's sustained FLOP/s.
    """
    sys_cfg = SYSTEMS[row["system"]]
    model = MODELS[row["model"]]
    hw = load_hardware(sys_cfg["hardware"])
    params_m = float(row["params_millions"]) if row["params_millions"] else model["params_millions"]
    batch = sys_cfg["batch"] or 1
    rates = model.get("p100_img_s", {})
    basis = "flops"
    if model["fwd_flops"] is not None:
        flops = 3 * model["fwd_flops"] * batch
        assert hw.sustained_flops
        compute = flops / hw.sustained_flops
        if use_measured and "p100_scale" in sys_cfg and batch in rates:
            compute = batch / (rates[batch] * sys_cfg["p100_scale"])
            flops, basis = None, "measured"
    else:
        flops, compute = None, float(model["compute_s"])
    prof = StepProfile(
        compute_s=compute, grad_bytes=params_m * 1e6 * 4, samples_per_step=batch,
        flops_per_step=flops, source=f"{row['source']} / {row['model']}",
    )
    info = {"hardware": hw, "system": sys_cfg, "model": model, "params_m": params_m}
    return prof, {**info, "basis": basis}


def predict_row(row: dict[str, str], use_measured: bool = True) -> dict[str, Any]:
    """Predicted vs reported efficiency for one CSV row."""
    prof, info = row_profile(row, use_measured)
    hw, sys_cfg = info["hardware"], info["system"]
    comp = Compression("fp16", value_bytes=2) if sys_cfg["grad"] == "fp16" else Compression()
    ranks = _ranks(row["ranks"], sys_cfg)
    base = 8 if row["source"].startswith("Goyal") else 1  # Goyal quote: from 8 to 256 GPUs
    pts = predict_curve(prof, hw, [base, ranks], comp=comp, mode="weak")
    pred = pts[1]["step_s"] and pts[0]["step_s"] / pts[1]["step_s"]
    reported, rep_text = _efficiency(row["reported_efficiency"], ranks)
    return {
        "source": row["source"], "system": row["system"], "model": row["model"],
        "ranks": ranks, "hardware": hw.name, "algorithm": hw.algorithm,
        "batch_per_rank": prof.samples_per_step, "params_millions": info["params_m"],
        "compute_s": pts[1]["compute_s"], "comm_s": pts[1]["comm_s"],
        "exposed_comm_s": pts[1]["exposed_comm_s"], "step_s": pts[1]["step_s"],
        "predicted": pred, "reported": reported, "reported_text": rep_text,
        "baseline_ranks": base, "delta_points": 100 * (pred - reported),
        "compute_basis": info["basis"],
        "assumptions": sys_cfg["why"] + "; " + info["model"]["source"],
    }


def read_rows(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def validate(path: str | Path, use_measured: bool = True) -> list[dict[str, Any]]:
    """Predictions for every row of the published-scaling CSV at ``path``."""
    return [predict_row(r, use_measured) for r in read_rows(path)]
