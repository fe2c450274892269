"""Rows added to the published-results validation, their hardware files and the
diagnosis of misses, against hand-computed cases."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from scidl.scaling import published
from scidl.scaling.published import (
    SYSTEMS,
    ExtraSystems,
    diagnose,
    fixed_share_to_match,
    predict_row,
    read_rows,
    system_config,
    system_hardware,
)
from scidl.testing import load_repo_script

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "benchmarks" / "data"
MORE = DATA / "published_more.csv"
HW_DIR = DATA / "hardware"
EXTRA = ExtraSystems.load(DATA / "published_systems.yaml", HW_DIR)

# ResNet-50's published P100 curve (195 img/s at 32, 219 at 64): fixed part t0/k in images
RESNET50_B_HALF = (2 * 32 / 195 - 64 / 219) / ((64 / 219 - 32 / 195) / 32)

HEAD = ("source,system,model,params_millions,ranks,device,devices_per_node,intra_node_link,"
        "inter_node_link,scaling,reported_efficiency,notes,sustained_tflops,baseline_ranks,"
        "global_batch\n")


def test_every_added_row_has_its_system_model_and_hardware():
    rows = read_rows(MORE)
    assert rows
    for r in rows:
        assert r["source"] and r["reported_efficiency"]
        assert r["model"] in published.MODELS
        cfg = system_config(r["system"], EXTRA)
        assert cfg["why"] and cfg["grad"] in ("dense", "fp16")
        hw = system_hardware(cfg["hardware"], EXTRA)
        assert hw.sources and hw.sustained_flops and hw.inter is not None
    assert sum(r["scaling"] == "strong" for r in rows) >= 2


def test_system_lookup_prefers_presets_and_reads_files(tmp_path):
    empty = ExtraSystems(hw_dir=tmp_path)
    assert system_hardware("summit", empty).name == "summit"
    assert system_hardware("zenith_skx", EXTRA).devices_per_node == 1
    with pytest.raises(KeyError):
        system_hardware("zenith_skx")  # not a preset, no folder given
    with pytest.raises(FileNotFoundError):
        system_hardware("no_such_machine", empty)
    assert system_config("Summit (ORNL)") is SYSTEMS["Summit (ORNL)"]
    with pytest.raises(KeyError, match="Zenith"):
        system_config("Zenith (Dell EMC)")  # only with the benchmark's extra systems


def test_zenith_row_is_strong_scaling_at_one_global_batch():
    row = next(r for r in read_rows(MORE) if r["system"] == "Zenith (Dell EMC)")
    res = predict_row(row, extra=EXTRA)
    # the ratio of the two printed efficiencies: 76 % at 314 nodes over 83 % at 256
    assert res["reported"] == pytest.approx(0.76 / 0.83)
    assert res["scaling"] == "strong" and res["baseline_ranks"] == 256
    assert res["batch_per_rank"] == round(8192 / 314)  # 26
    # compute per node from FLOPs at the baseline's 32 images: 3 x 2 x 4.09 GFLOP x 32 /
    # 1.84 TFLOP/s, read at 8192/314 images from ResNet-50's P100 curve carried over by its
    # fixed part in samples, b½ = t0/k = 8.98: x (b½ + 26.09)/(b½ + 32)
    b = RESNET50_B_HALF
    at_32 = 3 * 2 * 4.09e9 * 32 / 1.84e12
    assert res["compute_s"] == pytest.approx(at_32 * (b + 8192 / 314) / (b + 32), rel=1e-6)
    # no collectives' or stragglers' share to speak of: E ≈ (b½ + 32)/((314/256)(b½ + 26.09))
    assert res["predicted"] == pytest.approx((b + 32) / (314 / 256 * (b + 8192 / 314)), abs=0.01)


def _toy(tmp_path: Path, reported: str) -> dict[str, str]:
    """A strong-scaling row on a machine whose network costs nothing."""
    hw = yaml.safe_load((HW_DIR / "zenith_skx.yaml").read_text())
    hw["name"] = "toy"
    for level in ("intra", "inter"):
        hw[level].update(alpha=0.0, beta=0.0, gamma=0.0)
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(hw))
    (tmp_path / "rows.csv").write_text(
        HEAD + f"t,Toy,ResNet-50,25.6,64,cpu,1,,free,strong,{reported},x,,32,2048\n")
    return read_rows(tmp_path / "rows.csv")[0]


TOY = {"Toy": {"hardware": "toy", "batch": 32, "grad": "dense", "why": "test"}}


def test_fixed_share_hand_computed(tmp_path):
    # no communication, no stragglers: E = 1 / (f·r + 1 − f) with r = 64/32 = 2
    row = _toy(tmp_path, "0.8")
    extra = ExtraSystems(TOY, tmp_path)
    # by default ResNet-50's P100 curve carried over: E = (b½ + 64) / (2 (b½ + 32))
    b = RESNET50_B_HALF
    assert predict_row(row, extra=extra)["predicted"] == pytest.approx((b + 64) / (2 * (b + 32)))
    for f in (0.0, 0.1, 0.25, 0.5):
        got = predict_row(row, extra=extra, batch_share=f)["predicted"]
        assert got == pytest.approx(1 / (2 * f + 1 - f))
    # 0.8 = 1 / (1 + f) → f = 0.25 at the baseline's local batch (2048/32 = 64)
    assert fixed_share_to_match(row, 0.0, extra=extra) == pytest.approx(0.25, abs=1e-6)
    g = diagnose(row, predict_row(row, extra=extra), extra=extra)
    assert g["baseline_batch_per_rank"] == 64
    # the same curve at the 64-rank local batch of 32: 0.25 / (0.25 + 0.75/2) = 0.4
    assert g["fixed_share_at_ranks"] == pytest.approx(0.4, abs=1e-6)
    # a spread costs the baseline as much as the larger run: none reproduces 0.8
    assert g["cv_to_match"] is None
    # the global batch that reproduces 0.8 with the carried-over curve: E(B) =
    # (b½ + B/32) / (2 (b½ + B/64)) = 0.8 → 0.4·B/64 = 0.6·b½ → B = 96 b½ = 862.3 (the
    # row's batch is read as a whole number of samples)
    assert g["global_batch_to_match"] == pytest.approx(96 * b, abs=1.0)


def test_transformer_curves_hand_computed():
    m = published.MODELS["Transformer (big; NMT)"]
    # fp32 on a V100: 7,635 tokens/s at 2,560 and 32,153/4.21 at 5,120 (printed as the
    # mixed-precision rate and its speedup over fp32): t0 = 2 t(2560) − t(5120) ≈ 0
    t1, t2 = 2560 / 7635, 5120 * 4.21 / 32153
    b_fp32 = (2 * t1 - t2) / ((t2 - t1) / 2560)
    assert b_fp32 == pytest.approx(1.5376, abs=1e-3)
    curve = published.published_curve(m)
    assert curve is not None and published.fixed_samples(curve) == pytest.approx(b_fp32)
    # mixed precision: 23,821 at 2,560 and 32,153 at 5,120: b½ = 2,754 tokens (not used)
    a1, a2 = 2560 / 23821, 5120 / 32153
    assert published.fixed_samples(published.curve_from_throughput(m["other_precision_rates"])) \
        == pytest.approx((2 * a1 - a2) / ((a2 - a1) / 2560))
    assert (2 * a1 - a2) / ((a2 - a1) / 2560) == pytest.approx(2754.2, abs=0.1)
    # a model without a published curve has none; ResNet-101 has one batch size only
    assert published.published_curve(published.MODELS["ResNet-1001"]) is None
    assert published.published_curve(published.MODELS["ResNet-101"]) is None


def test_global_batch_to_match_bounds(tmp_path):
    extra = ExtraSystems(TOY, tmp_path)
    # already below at the given batch: the given batch; out of reach: None
    assert published.global_batch_to_match(_toy(tmp_path, "0.95"), 0.0, extra=extra) == 2048
    assert published.global_batch_to_match(_toy(tmp_path, "0.3"), 0.0, extra=extra) is None


def test_fixed_share_beyond_reach_is_none(tmp_path):
    # E = 1/(1 + f) ≥ 1/1.95 = 0.513 for f ≤ 0.95: 0.3 cannot be reached
    row = _toy(tmp_path, "0.3")
    assert fixed_share_to_match(row, 0.0, extra=ExtraSystems(TOY, tmp_path)) is None
    row = _toy(tmp_path, "1.2")  # already below: nothing to add
    assert fixed_share_to_match(row, 0.0, extra=ExtraSystems(TOY, tmp_path)) == 0.0


def test_strong_rows_read_a_published_curve_on_its_device(tmp_path):
    # ResNet-50 strong-scaled on the P100 cluster: compute at the local batch comes from
    # the published 32/64 curve, not from 1/p
    (tmp_path / "p.csv").write_text(
        HEAD + "t,32 servers x 8 P100 (Big Basin),ResNet-50,25.6,16,P100,8,NVLink,Eth,strong,"
        "0.9,x,,8,512\n")
    row = read_rows(tmp_path / "p.csv")[0]
    prof, _ = published.row_profile(row)
    assert prof.batch_curve == [(32.0, pytest.approx(32 / 195)), (64.0, pytest.approx(64 / 219))]
    res = predict_row(row)
    # 512 images over 16 GPUs = 32 each: one GPU's step at batch 32 is 32/195 s
    assert res["compute_s"] == pytest.approx(32 / 195, rel=1e-6)


def test_ratio_of_printed_efficiencies_and_its_rounding():
    eff, text = published._efficiency("0.76/0.83", 314)
    assert eff == pytest.approx(0.9156627)
    # each printed percent is known to ±0.5 %: 0.755/0.835 .. 0.765/0.825
    assert "0.904–0.927" in text


def _bench():
    return load_repo_script("benchmarks/scaling.py")


def test_render_misses_lists_only_predicted_rows_beyond_tolerance():
    def row(model: str, delta: float, role: str = "predicted", **kw):  # noqa: ANN202
        base = {"model": model, "system": "S", "ranks": 100, "scaling": "weak", "baseline_ranks": 1,
                "predicted": 0.9, "reported": 0.9 - delta / 100, "delta_points": delta,
                "straggler_cv": 0.02, "role": role,
                "diagnosis": {"cv_to_match": 0.05, "no_overlap_predicted": 0.85}}
        base.update(kw)
        return base

    d = {"tolerance_points": 5.0, "batch_curves": [],
         "rows": [row("A", 2.0), row("B", 12.5), row("C", 30.0, role="fit"), row("D", -6.0)]}
    text = _bench().render_misses(d)
    assert "**B, S**" in text and "**D, S**" in text
    assert "**A, S**" not in text and "**C, S**" not in text
    assert "+12.5 points** (7.5 beyond ±5)" in text
    # σ/step to match vs the one given: 0.05 / 0.02 = 2.5×
    assert "σ/step = 0.0500, 2.5× the 0.0200" in text
    # B: reported 0.775, and 0.85 without any overlap is still above it
    assert "the model still predicts 0.850: the collectives, as priced, do not explain it" in text
    # E: without overlap the model (0.700) falls below the reported 0.775: the overlap decides
    e = row("E", 7.5, diagnosis={"cv_to_match": 0.05, "no_overlap_predicted": 0.70})
    d["rows"] = [e]
    text = _bench().render_misses(d)
    assert "the model predicts 0.700: the collectives, as priced, could explain it" in text
    assert "do not explain it" not in text
    d["rows"] = [row("A", 2.0)]
    assert _bench().render_misses(d) == "Every predicted row is within ±5 points."


def test_cavdar_strong_row_holds_the_one_node_batch_hand_computed():
    # the strong run keeps the global batch of its one-node baseline: 2 processes x the
    # 25,600 tokens per worker that fit a node's memory (Dell EMC blog) = 51,200 tokens
    strong = next(r for r in read_rows(MORE)
                  if r["model"].startswith("Transformer") and r["scaling"] == "strong")
    assert int(strong["baseline_ranks"]) == 2 and int(strong["global_batch"]) == 2 * 25_600
    # the weak runs: 5,000 tokens per process (Horovod issue #687, dellemc-hpc-ai/models)
    assert published.MODELS["Transformer (big; NMT)"]["batch"] == 5000
    res = predict_row(strong, extra=EXTRA)
    assert res["batch_per_rank"] == 128 and res["baseline_ranks"] == 2
    # compute at 128 tokens per process: 3 x 2 x 213e6 FLOP per token on half a node's
    # 1.94 TFLOP/s, times the fp32 V100 curve's fixed part b½ carried over (≈ 1.5 tokens):
    # (b½ + 128)/128 per token relative to the baseline's (b½ + 25,600)/25,600
    t1, t2 = 2560 / 7635, 5120 * 4.21 / 32153
    b = (2 * t1 - t2) / ((t2 - t1) / 2560)
    flops = 3 * 2 * 213e6 * 128
    want = flops / (1.94e12 / 2) * ((b + 128) / 128) / ((b + 25_600) / 25_600)
    assert res["compute_s"] == pytest.approx(want, rel=1e-6)
