"""Predict the published scaling points of ``published_scaling.csv`` with the cost model.

One assumption set per hardware system (:data:`SYSTEMS`: preset, per-device batch,
gradient precision) and one figure set per model (:data:`MODELS`: forward FLOPs per
sample, parameters). The compute time of one step is ``3·F_fwd·batch / sustained_flops``
(backward ≈ 2× forward; the sustained rate the paper reports where it reports one),
gradients are ``params·bytes`` reduced in the system's fusion buckets.

The only fitted parameter is each system's straggler spread (``straggler_cv``, see
:func:`scidl.scaling.costmodel.straggler_time`): fitted on the one row a system names
(``SYSTEMS[...]["fit"]``), then used to predict that system's other rows. Systems with a
single row get the median of the fitted systems' spreads, so their rows are predictions too.

Strong-scaling rows read the compute at the shrunk local batch from the model's
published single-device throughput table (:func:`published_curve`,
:func:`scidl.scaling.costmodel.curve_from_throughput`): as it is on the device it was
measured on, carried over by its fixed part in samples on any other
(:func:`scidl.scaling.costmodel.transferred_curve`); only a model without one has its
compute proportional to the local batch. :func:`diagnose` says, for each row, what the
model's terms would need to be to reproduce it (the spread, the fixed share of a step,
the global batch).

Systems that are not bundled presets (added with the rows of
``benchmarks/data/published_more.csv``) come as :class:`ExtraSystems`: their assumption
sets from ``benchmarks/data/published_systems.yaml``, their hardware files from
``benchmarks/data/hardware/``.
"""

from __future__ import annotations

import csv
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scidl.scaling.costmodel import (
    Compression,
    affine_curve,
    compute_at_batch,
    curve_from_throughput,
    fixed_samples,
    fixed_share,
    transferred_curve,
)
from scidl.scaling.hardware import Hardware, load_hardware, preset_names
from scidl.scaling.predict import StepProfile, predict_point

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
    "Tiramisu (climate segmentation)": {
        "train_flops": 4.2e12, "params_millions": 7.2, "batch": 2,
        "source": "ASSUMPTION: Kurth et al.'s modified Tiramisu on 1152x768x16 climate images, "
        "about 4.2 TFLOP per sample for forward+backward, 7.2 M parameters, 2 images per GPU",
    },
    "DeepLabv3+ (climate segmentation)": {
        "train_flops": 14.4e12, "params_millions": 43.7, "batch": 2, "grad": "dense",
        "source": "ASSUMPTION: Kurth et al.'s DeepLabv3+ on 1152x768x16 climate images, about "
        "14.4 TFLOP per sample for forward+backward, 43.7 M parameters, 2 images per GPU; "
        "fp32 gradients (the single-precision run)",
    },
    "Transformer (big; NMT)": {
        # 5,000 tokens per MPI process (an upper bound per batch, padding included: the
        # TensorFlow official Transformer batches sentences by length up to it): Horovod
        # issue #687 (S. Varadharajan, a co-author: "local batch size of 5000 tokens",
        # 4 processes per node) and the team's code, dellemc-hpc-ai/models README
        # (mpiexec ... --param_set=big --batch_size=5000, 4 processes per node)
        "fwd_flops": 2 * 213e6, "params_millions": 213.0, "batch": 5000,
        # one V100 SXM2, fairseq Transformer big on WMT14 en-de, tokens/s by tokens per
        # GPU (NVIDIA DeepLearningExamples, PyTorch/Translation/Transformer/README.md,
        # DGX-1 tables): fp32 7,635 at 2,560; mixed precision 23,821 at 2,560 and 32,153
        # at 5,120, "4.21" times fp32 at 5,120 (so fp32 at 5,120 = 32,153/4.21)
        "batch_rates": {2560: 7635.0, 5120: 32153.0 / 4.21},
        "batch_device": "V100 SXM2 (PyTorch fairseq, fp32)",
        "other_precision_rates": {2560: 23821.0, 5120: 32153.0},
        "other_precision_device": "V100 SXM2 (PyTorch fairseq, mixed precision)",
        "source": "Transformer big, 213 M parameters (Vaswani et al. 2017, Table 3); forward "
        "FLOPs per token = 2 x parameters (Kaplan et al. 2020); 5,000 tokens per process per "
        "step in the weak runs (Horovod issue #687 by a co-author; dellemc-hpc-ai/models "
        "README: --batch_size=5000, 4 processes per node); embeddings densified "
        "(sparse_as_dense), so every gradient is allreduced dense",
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
        "fit": "Inception V3",
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
        "fit": "DeepLabv3+ (climate segmentation)",
        "why": "fp16 gradients (Laanait et al. train in fp16)",
    },
    "Piz Daint (CSCS)": {
        "hardware": "piz_daint", "batch": 2, "grad": "dense",
        "why": "one P100 per node, fp32 gradients, Horovod-style allreduce (Kurth et al. 2018)",
    },
    "Intel Xeon cluster (Stampede2 / MareNostrum class)": {
        "hardware": "stampede2_knl", "batch": 32, "grad": "dense", "cores_per_rank": 68,
        "why": "ASSUMPTION: 104K cores = 1,536 KNL nodes x 68 cores, one rank per node, "
        "32 images per node (~49K global batch), fp32 gradients",
    },
    "Stampede2 (TACC)": {
        "hardware": "stampede2_skx", "batch": 128, "grad": "dense",
        "fit": "Transformer (big; NMT)@weak",
        "why": "ASSUMPTION: 128 images per node, pure data parallelism (the paper's run is "
        "hybrid model+data parallel), fp32 gradients; processes per node as the paper ran "
        "them (the node's FLOP/s shared among them)",
    },
}


@dataclass(frozen=True)
class ExtraSystems:
    """Systems the bundled presets do not describe (rows added beside a benchmark):
    each one's :data:`SYSTEMS`-style entry, its ``hardware`` named after a YAML file in
    ``hw_dir``."""

    systems: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    hw_dir: Path | None = None

    @classmethod
    def load(cls, systems_yaml: str | Path, hw_dir: str | Path) -> ExtraSystems:
        """Read the entries from a YAML mapping of system name → entry."""
        data = yaml.safe_load(Path(systems_yaml).read_text()) or {}
        return cls(systems=data, hw_dir=Path(hw_dir))


def system_config(name: str, extra: ExtraSystems | None = None) -> Mapping[str, Any]:
    """The assumption set of the system ``name`` (KeyError naming it when unknown)."""
    if name in SYSTEMS:
        return SYSTEMS[name]
    if extra is not None and name in extra.systems:
        return extra.systems[name]
    raise KeyError(f"no assumption set for system {name!r}")


def _row_key(row: dict[str, str]) -> str:
    return f"{row['model']}@{row.get('scaling') or 'weak'}"


def _fits(sys_cfg: Mapping[str, Any], row: dict[str, str]) -> bool:
    want = sys_cfg.get("fit")
    return want is not None and want in (row["model"], _row_key(row))


def _ranks(text: str, sys_cfg: Mapping[str, Any]) -> int:
    n = int(text.split()[0].replace(",", ""))
    return max(1, round(n / sys_cfg.get("cores_per_rank", 1)))


def published_curve(model: Mapping[str, Any]) -> list[tuple[float, float]] | None:
    """The model's published single-device batch curve in the precision its rows train
    in (fp32): the P100 TensorFlow rates, else ``batch_rates``; None without two batch
    sizes. A curve in another precision is not used: Tensor Cores speed up the
    per-sample work and not the fixed part, so its shape is not the fp32 one."""
    rates = model.get("p100_img_s") or model.get("batch_rates") or {}
    return curve_from_throughput(rates) if len(rates) >= 2 else None


def _baseline(row: dict[str, str]) -> int:
    """Ranks the row's efficiency is relative to (Goyal et al. quote theirs from 8 GPUs)."""
    return int(row.get("baseline_ranks") or (8 if row["source"].startswith("Goyal") else 1))


def _efficiency(text: str, ranks: int) -> tuple[float, str]:
    t = text.strip()
    if "/" in t:  # "a/b": the ratio of two printed efficiencies (strong scaling vs a base)
        a, b = (float(x) for x in t.split("/"))
        h = 0.005  # printed to whole percents: each is known to ±0.5 %
        return a / b, (f"{a:.0%} ÷ {b:.0%} of perfect = {a / b:.3f} "
                       f"({(a - h) / (b + h):.3f}–{(a + h) / (b - h):.3f} from the rounding)")
    if t.endswith("x over 1 node"):
        speedup = float(t.split("x")[0])
        return speedup / ranks, f"{t} = {speedup / ranks:.3f} efficiency"
    return float(t), t


def system_hardware(name: str, extra: ExtraSystems | None = None) -> Hardware:
    """A system's hardware: the bundled preset ``name``, else ``extra.hw_dir/name.yaml``."""
    if name in preset_names() or extra is None or extra.hw_dir is None:
        return load_hardware(name)
    return load_hardware(extra.hw_dir / f"{name}.yaml")


def _row_hardware(row: dict[str, str], sys_cfg: Mapping[str, Any],
                  extra: ExtraSystems | None = None) -> Hardware:
    """The system's preset, with the row's processes per node sharing a one-rank-per-node
    CPU preset's FLOP/s (Cavdar et al. ran 2 and 4 MPI processes per Stampede2 node)."""
    hw = system_hardware(sys_cfg["hardware"], extra)
    ppn = int(row.get("devices_per_node") or 1)
    if hw.devices_per_node == 1 and ppn > 1:
        assert hw.sustained_flops
        hw = hw.model_copy(update={"devices_per_node": ppn,
                                   "sustained_flops": hw.sustained_flops / ppn})
    return hw


def row_profile(
    row: dict[str, str], use_measured: bool = True, extra: ExtraSystems | None = None
) -> tuple[StepProfile, dict[str, Any]]:
    """The step profile and assumptions for one CSV row.

    With ``use_measured`` the compute time comes from a published single-GPU throughput
    where the model has one on the system's device; otherwise from FLOPs and the
    sustained FLOP/s (the row's ``sustained_tflops`` where the paper reports its rate,
    else the preset's). Strong-scaling rows hold the whole global batch at p = 1 and
    carry the model's published single-device batch curve where it has one on this
    device (compute at the shrunk local batch is read from it).
    """
    sys_cfg = system_config(row["system"], extra)
    model = MODELS[row["model"]]
    hw = _row_hardware(row, sys_cfg, extra)
    params_m = float(row["params_millions"]) if row["params_millions"] else model["params_millions"]
    batch = model.get("batch") or sys_cfg["batch"] or 1
    if (row.get("scaling") or "weak") == "strong" and row.get("global_batch"):
        batch = int(float(row["global_batch"]))
    rates = model.get("p100_img_s", {})
    sustained = float(row["sustained_tflops"]) * 1e12 if row.get("sustained_tflops") else None
    if sustained:
        hw = hw.model_copy(update={"sustained_flops": sustained})
    basis = "flops"
    train_flops = model.get("train_flops") or (
        3 * model["fwd_flops"] if model.get("fwd_flops") is not None else None)
    if train_flops is not None:
        flops = train_flops * batch
        assert hw.sustained_flops
        compute = flops / hw.sustained_flops
        if use_measured and "p100_scale" in sys_cfg and batch in rates:
            compute = batch / (rates[batch] * sys_cfg["p100_scale"])
            flops, basis = None, "measured"
    else:
        flops, compute = None, float(model["compute_s"])
    curve = None
    strong = row.get("scaling") == "strong"
    if strong and "p100_scale" in sys_cfg and len(rates) >= 2:
        curve = curve_from_throughput({b: r * sys_cfg["p100_scale"] for b, r in rates.items()})
        if use_measured:  # the one-rank step of the global batch, read from the same curve
            compute, flops, basis = compute_at_batch(batch, curve), None, "measured"
    elif strong and (published := published_curve(model)) is not None:
        # another device: the model's published curve carried over by its shape (fixed
        # part in samples); the sustained rate holds at the baseline's local batch
        low, base_batch = batch / _ranks(row["ranks"], sys_cfg), batch / _baseline(row)
        curve = transferred_curve(published, base_batch, low)
        compute *= compute_at_batch(batch, curve) / (
            compute_at_batch(base_batch, curve) * batch / base_batch)
        flops = None
    prof = StepProfile(
        compute_s=compute, grad_bytes=params_m * 1e6 * 4, samples_per_step=batch,
        flops_per_step=flops, source=f"{row['source']} / {row['model']}", batch_curve=curve,
    )
    info = {"hardware": hw, "system": sys_cfg, "model": model, "params_m": params_m}
    return prof, {**info, "basis": basis}


def predict_row(row: dict[str, str], use_measured: bool = True, straggler_cv: float = 0.0,
                extra: ExtraSystems | None = None, overlap: float | None = None,
                batch_share: float | None = None) -> dict[str, Any]:
    """Predicted vs reported efficiency for one CSV row, the system's straggler spread
    ``straggler_cv`` given. ``overlap`` replaces the hardware's overlap and ``batch_share``
    gives compute a fixed share per step at the baseline's local batch (both only for
    :func:`diagnose`)."""
    prof, info = row_profile(row, use_measured, extra)
    hw, sys_cfg = info["hardware"], info["system"]
    hw = hw.model_copy(update={"straggler_cv": straggler_cv,
                               **({} if overlap is None else {"overlap": overlap})})
    grad = info["model"].get("grad", sys_cfg["grad"])
    comp = Compression("fp16", value_bytes=2) if grad == "fp16" else Compression()
    mode = row.get("scaling") or "weak"
    mode = "strong" if mode == "strong" else "weak"
    ranks = _ranks(row["ranks"], sys_cfg)
    base = _baseline(row)
    if batch_share is not None:
        prof = prof.model_copy(update={"batch_curve": affine_curve(
            batch_share, prof.samples_per_step / base, prof.samples_per_step / ranks)})
    pts = [predict_point(prof, hw, q, comp=comp, mode=mode) for q in (base, ranks)]
    scale = ranks / base if mode == "strong" else 1.0
    pred = pts[0]["step_s"] / (scale * pts[1]["step_s"])
    reported, rep_text = _efficiency(row["reported_efficiency"], ranks)
    return {
        "source": row["source"], "system": row["system"], "model": row["model"],
        "ranks": ranks, "hardware": hw.name, "algorithm": hw.algorithm, "scaling": mode,
        "batch_per_rank": prof.samples_per_step if mode == "weak"
        else round(prof.samples_per_step / ranks),
        "global_batch": prof.samples_per_step if mode == "strong" else None,
        "params_millions": info["params_m"],
        "compute_s": pts[1]["compute_s"], "comm_s": pts[1]["comm_s"],
        "exposed_comm_s": pts[1]["exposed_comm_s"], "straggler_s": pts[1]["straggler_s"],
        "step_s": pts[1]["step_s"], "straggler_cv": straggler_cv,
        "predicted": pred, "reported": reported, "reported_text": rep_text,
        "baseline_ranks": base, "delta_points": 100 * (pred - reported),
        "compute_basis": info["basis"],
        "assumptions": sys_cfg["why"] + "; " + info["model"]["source"],
    }


def fit_straggler_cv(row: dict[str, str], use_measured: bool = True,
                     extra: ExtraSystems | None = None) -> float:
    """The straggler spread σ/step that makes the model reproduce ``row``'s reported
    efficiency (bisection; 0 where the model without stragglers is already below it)."""
    target = predict_row(row, use_measured, extra=extra)["reported"]
    lo, hi = 0.0, 0.5
    if predict_row(row, use_measured, 0.0, extra)["predicted"] <= target:
        return 0.0
    for _ in range(50):
        mid = (lo + hi) / 2
        if predict_row(row, use_measured, mid, extra)["predicted"] > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def read_rows(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def fixed_share_to_match(row: dict[str, str], straggler_cv: float, use_measured: bool = True,
                         extra: ExtraSystems | None = None) -> float | None:
    """For a strong-scaling row: the fixed share of a step at the baseline's local batch
    (:func:`scidl.scaling.costmodel.affine_curve`) with which the model reproduces the
    reported efficiency, all else as predicted (bisection; None when even a share of 0.95
    stays above the reported value, 0 when the model is already below it)."""
    target = predict_row(row, use_measured, straggler_cv, extra)["reported"]

    def pred(f: float) -> float:
        return float(predict_row(row, use_measured, straggler_cv, extra,
                                 batch_share=f)["predicted"])

    if pred(0.0) <= target:
        return 0.0
    lo, hi = 0.0, 0.95
    if pred(hi) > target:
        return None
    for _ in range(50):
        mid = (lo + hi) / 2
        if pred(mid) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def global_batch_to_match(row: dict[str, str], straggler_cv: float, use_measured: bool = True,
                          extra: ExtraSystems | None = None) -> float | None:
    """For a strong-scaling row with a ``global_batch``: the global batch with which the
    model reproduces the reported efficiency, all else as predicted (bisection on its
    logarithm between one sample per rank and the row's value; None when even one sample
    per rank stays above the reported value, the row's value when the model is already
    below it). Efficiency grows with the global batch (the collectives are fixed per
    step, compute is not)."""
    if not row.get("global_batch"):
        return None
    given = float(row["global_batch"])
    target = predict_row(row, use_measured, straggler_cv, extra)["reported"]

    def pred(batch: float) -> float:
        return float(predict_row({**row, "global_batch": str(batch)}, use_measured,
                                 straggler_cv, extra)["predicted"])

    if pred(given) <= target:
        return given
    lo = float(_ranks(row["ranks"], system_config(row["system"], extra)))
    if pred(lo) > target:
        return None
    hi = given
    for _ in range(60):
        mid = (lo * hi) ** 0.5
        if pred(mid) > target:
            hi = mid
        else:
            lo = mid
    return (lo * hi) ** 0.5


def diagnose(row: dict[str, str], res: dict[str, Any], use_measured: bool = True,
             extra: ExtraSystems | None = None) -> dict[str, Any]:
    """What the model's terms would need to be to reproduce one row (not used to predict):
    the straggler spread σ/step that matches it alone (``cv_to_match``; None where no
    σ/step up to 0.5 does), the prediction
    with no overlap of communication at all (``no_overlap_predicted``: how much the
    collectives could explain at most) and, for strong scaling, the fixed share of a step
    at the baseline's local batch that matches it (``fixed_share_to_match``) and that
    curve's fixed share at the largest run's local batch (``fixed_share_at_ranks``) and,
    where the row gives its global batch, the global batch that matches
    (``global_batch_to_match``)."""
    cv = float(res["straggler_cv"])
    cv_match = fit_straggler_cv(row, use_measured, extra)
    out: dict[str, Any] = {
        "cv_to_match": None if cv_match > 0.499 else cv_match,  # None: no σ/step ≤ 0.5 does
        "no_overlap_predicted": predict_row(row, use_measured, cv, extra,
                                            overlap=0.0)["predicted"],
    }
    if res["scaling"] == "strong":
        base = int(res["baseline_ranks"])
        out["baseline_batch_per_rank"] = row_profile(row, use_measured, extra)[0] \
            .samples_per_step / base
        f = fixed_share_to_match(row, cv, use_measured, extra)
        out["fixed_share_to_match"] = f
        # the same curve's fixed share at the local batch of the largest run
        ratio = int(res["ranks"]) / base
        out["fixed_share_at_ranks"] = None if f is None else f / (f + (1 - f) / ratio)
        if row.get("global_batch"):
            out["global_batch_to_match"] = global_batch_to_match(row, cv, use_measured, extra)
        other = MODELS[row["model"]].get("other_precision_rates", {})
        if len(other) >= 2:  # what-if: the shape of the model's curve in another precision
            b_half = fixed_samples(curve_from_throughput(other))
            out["other_precision_b_half"] = b_half
            out["other_precision_predicted"] = predict_row(
                row, use_measured, cv, extra,
                batch_share=b_half / (b_half + out["baseline_batch_per_rank"]))["predicted"]
    return out


def reference_batch_curves() -> list[dict[str, Any]]:
    """The published single-device batch curves the models carry: each one's fixed share
    of a step at its smallest batch (:func:`scidl.scaling.costmodel.fixed_share`)."""
    out = []
    for name, m in MODELS.items():
        rates = m.get("p100_img_s") or m.get("batch_rates") or {}
        if len(rates) >= 2:
            curve = curve_from_throughput(rates)
            b = min(rates)
            device = "P100 SXM2 (TensorFlow)" if "p100_img_s" in m else m["batch_device"]
            out.append({"model": name, "device": device, "rates": rates, "batch": b,
                        "fixed_share": fixed_share(curve, b),
                        "fixed_samples": fixed_samples(curve)})
    return out


def validate(path: str | Path, use_measured: bool = True,
             more: str | Path | None = None, extra: ExtraSystems | None = None,
             diagnostics: bool = False) -> list[dict[str, Any]]:
    """Predictions for every row of the published-scaling CSV at ``path`` (and of the
    rows in ``more``): each system's straggler spread fitted on its ``fit`` row, the
    median of those for systems without one. Each row says whether it was the fitted
    one (``role``: ``fit``) or a prediction; with ``diagnostics`` it also carries
    :func:`diagnose`'s figures (``diagnosis``)."""
    rows = read_rows(path) + (read_rows(more) if more else [])
    fitted: dict[str, float] = {}
    for r in rows:
        sys_cfg = system_config(r["system"], extra)
        if _fits(sys_cfg, r) and r["system"] not in fitted:
            fitted[r["system"]] = fit_straggler_cv(r, use_measured, extra)
    pooled = statistics.median(fitted.values()) if fitted else 0.0
    out = []
    for r in rows:
        cv = fitted.get(r["system"], pooled)
        res = predict_row(r, use_measured, cv, extra)
        res["role"] = "fit" if _fits(system_config(r["system"], extra), r) else "predicted"
        res["cv_source"] = ("fitted on this row" if res["role"] == "fit" else
                            f"fitted on the {system_config(r['system'], extra)['fit']} row"
                            if r["system"] in fitted else "median of the fitted systems")
        if diagnostics:
            res["diagnosis"] = diagnose(r, res, use_measured, extra)
        out.append(res)
    return out
