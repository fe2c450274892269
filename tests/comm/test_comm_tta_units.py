"""The pure parts of benchmarks/comm_tta.py: time to the dense target, the per-seed
summary, the strategy labels, and reading a run folder."""

from __future__ import annotations

import json
from pathlib import Path

from scidl.testing import load_repo_script

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    return load_repo_script("benchmarks/comm_tta.py")


def _run(strategy, seed, curve, final, nbytes, higher=True):
    return {"model": "digits", "link": "100mbit", "optimizer": "adam", "strategy": strategy,
            "seed": seed, "steps": 60, "headline": "accuracy", "higher_is_better": higher,
            "final": final, "curve": curve, "bytes_per_step": nbytes}


def test_time_to_target_within_half_a_percent():
    b = _bench()
    curve = [[10, 1.0, 0.80], [20, 2.0, 0.951], [30, 3.0, 0.96]]
    assert b.time_to(curve, 0.955, higher=True) == 2.0  # 0.951 ≥ 0.955·0.995
    assert b.time_to(curve, 0.99, higher=True) is None
    loss = [[10, 1.0, 2.0], [20, 2.0, 1.004]]
    assert b.time_to(loss, 1.0, higher=False) == 2.0


def test_summary_per_seed_target_and_spread():
    b = _bench()
    data = {"runs": [
        _run("dense", 0, [[30, 4.0, 0.90], [60, 8.0, 0.95]], 0.95, 1000.0),
        _run("dense", 1, [[30, 4.0, 0.956], [60, 8.0, 0.96]], 0.96, 1000.0),
        _run("fp16", 0, [[30, 2.0, 0.95], [60, 4.0, 0.95]], 0.95, 500.0),
        _run("fp16", 1, [[30, 3.0, 0.90], [60, 6.0, 0.956]], 0.956, 500.0),
        _run("topk", 0, [[30, 1.0, 0.5], [60, 2.0, 0.6]], 0.6, 10.0),
        {**_run("auto", 0, [], 0.0, 0.0), "error": "boom"},  # failed runs are left out
    ]}
    rows = {r["strategy"]: r for r in b.summarise(data)}
    assert set(rows) == {"dense", "fp16", "topk"}
    assert rows["dense"]["reached"] == 2 and rows["dense"]["tta_s"]["mean"] == 6.0  # 4 s, 8 s
    assert rows["fp16"]["tta_s"] == {"mean": 4.0, "min": 2.0, "max": 6.0, "n": 2}
    assert rows["fp16"]["tta_vs_dense"]["mean"] == (2.0 / 8.0 + 6.0 / 4.0) / 2
    assert rows["fp16"]["bytes_vs_dense"] == 2.0
    assert rows["topk"]["reached"] == 0 and rows["topk"]["tta_s"] is None
    text = b.markdown(data)
    assert "| digits | 100mbit | adam | 60 | fp16 | 60 | 2/2 | 4.0 ± 2.0 |" in text
    assert "| topk | 60 | 0/1 | — |" in text


def test_strategies_may_outlast_dense_and_the_longest_run_of_a_seed_counts():
    b = _bench()
    assert b.run_steps("dense", 60, 2.0) == 60  # dense's final is the target
    assert b.run_steps("powersgd", 60, 2.0) == 120
    assert b.run_steps("topk:density=0.001", 60, 1.5) == 90
    assert b.run_steps("fp16", 60, 1.0) == 60
    data = {"runs": [
        _run("dense", 0, [[30, 8.0, 0.90], [60, 16.0, 0.95]], 0.95, 1000.0),
        # a 60-step run that falls short, and the 120-step run of the same seed after it
        _run("powersgd", 0, [[30, 2.0, 0.90], [60, 4.0, 0.94]], 0.94, 10.0),
        {**_run("powersgd", 0, [[30, 2.1, 0.90], [60, 4.1, 0.94], [90, 6.0, 0.948],
                                [120, 8.0, 0.95]], 0.95, 10.0), "steps": 120, "budget": 60},
    ]}
    rows = {r["strategy"]: r for r in b.summarise(data)}
    assert rows["powersgd"]["steps"] == 60 and rows["powersgd"]["steps_run"] == [120]
    assert rows["powersgd"]["seeds"] == 1 and rows["powersgd"]["reached"] == 1
    assert rows["powersgd"]["tta_vs_dense"]["mean"] == 6.0 / 16.0  # 0.948 ≥ 0.95·0.995
    assert "| digits | 100mbit | adam | 60 | powersgd | 120 | 1/1 | 6.0 |" in b.markdown(data)


def test_strategy_labels_and_defaults():
    b = _bench()
    assert b.comm_overrides("topk:density=0.001") == ["comm.strategy=topk", "comm.density=0.001"]
    assert b.comm_overrides("powersgd") == ["comm.strategy=powersgd", "comm.rank=4"]
    assert b.default_strategies()[:5] == ["dense", "fp16", "powersgd", "topk", "auto"]


def test_read_run_sums_step_times_up_to_each_evaluation(tmp_path):
    b = _bench()
    rows = [{"step": s, "step_time_s": 0.5} for s in range(1, 5)]
    rows[1]["eval/accuracy"] = 0.7  # an evaluation logged on a training row
    rows.append({"step": 4, "eval/accuracy": 0.8})
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "summary.json").write_text(json.dumps(
        {"headline": "accuracy", "higher_is_better": True, "headline_value": 0.8, "steps": 4}))
    (tmp_path / "comm.json").write_text(json.dumps({"strategy": "auto", "choice": ["fp16"], "by_op": {
        "allreduce": {"bytes_sent": 400}, "probe": {"bytes_sent": 10**6}}}))
    got = b.read_run(tmp_path)
    assert got["curve"] == [[2, 1.0, 0.7], [4, 2.0, 0.8]]
    assert got["bytes_per_step"] == 100  # the probe is not a step's traffic
    assert got["auto"]["choice"] == ["fp16"]


def test_optimizer_families_of_strategies_that_own_optimizer_state():
    b = _bench()
    assert b.optimizer_overrides("digits", "sgd", "fp16") == [
        "optim.name=sgd", "optim.momentum=0.9", "optim.lr=0.05"]
    # dgc applies the family's momentum itself; topk_adam applies Adam at Adam's rate
    assert b.optimizer_overrides("digits", "sgd", "dgc") == [
        "optim.name=sgd", "optim.momentum=0", "optim.lr=0.05"]
    assert b.optimizer_overrides("digits", "adam", "topk_adam:density=0.001") == [
        "optim.name=sgd", "optim.momentum=0", "optim.lr=0.001"]
    assert b.optimizer_overrides("digits", "adam", "dgc") is None
    assert b.optimizer_overrides("digits", "sgd", "topk_adam") is None


def test_targets_met_or_distance_from_the_summary():
    b = _bench()
    runs = []
    for seed in (0, 1):
        runs += [
            {**_run("dense", seed, [[30, 4.0, 0.90], [60, 8.0, 0.95]], 0.95, 1000.0),
             "load_after": [2.0 + seed, 1.0, 1.0]},
            _run("fp16", seed, [[30, 3.0, 0.95], [60, 6.0, 0.95]], 0.95, 500.0),
            _run("topk", seed, [[30, 1.0, 0.95], [60, 2.0, 0.95]], 0.95, 10.0),
            _run("auto", seed, [[30, 1.5, 0.95], [60, 3.0, 0.95]], 0.95, 10.0),
            _run("torch_fp16", seed, [[30, 0.5, 0.95], [60, 1.0, 0.95]], 0.95, 500.0),
        ]
    t = next(x for x in b.targets({"runs": runs})
             if x["model"] == "digits" and x["optimizer"] == "adam")
    # best SciDL strategy topk: 4 s of dense's 8 s... time to 0.95 is 1 s vs 8 s
    assert t["best"] == "topk" and t["best_ratio"] == 1.0 / 8.0 and t["best_met"]
    assert t["auto_vs_best"] == 1.5 and not t["auto_met"]  # torch's hook is no candidate
    # seed by seed: auto 1.5 s vs topk 1 s at the first evaluation, the same pace after it
    sbs = t["auto_side_by_side"]
    assert sbs["against"] == "topk" and sbs["ratio"]["mean"] == 1.5
    assert sbs["startup_s"]["mean"] == 0.5 and sbs["pace"]["mean"] == 1.5
    text = b.markdown_targets({"runs": runs})
    assert "**digits, adam** (60 steps, 2 seeds): time to accuracy met" in text
    assert "seed by seed against topk: 1.50 [1.50–1.50]× its time" in text
    assert "+0.50 [+0.50–+0.50] s later" in text
    assert "**lm, sgd**: not met — not run" in text
    assert "| 2.0–3.0 |" in b.markdown({"runs": runs})
    assert b.link_bits("100mbit") == 1e8 and b.link_bits("1gbit") == 1e9


def test_fidelity_prediction_is_step_ratio_over_delta_next_to_the_measured_ratio():
    """benchmarks/comm_fidelity.py: δ over the seeds, the predicted time (step-time
    ratio ÷ mean δ) and the measured one, for the strategy's default settings only."""
    fid = load_repo_script("benchmarks/comm_fidelity.py")

    def run(strategy, seed, curve, train_s):
        r = _run(strategy, seed, curve, curve[-1][2], 100.0)
        return {**r, "train_s": train_s, "steps_done": 60}

    tta = {"runs": [run("dense", 0, [[30, 4.0, 0.90], [60, 8.0, 0.95]], 8.0),
                    run("powersgd", 0, [[30, 1.0, 0.93], [60, 2.0, 0.95]], 2.0)]}
    cases = [{"model": "digits", "optimizer": "adam", "seed": s, "steps": 30, "ranks": 4,
              "delta": {"powersgd:4": d, "powersgd:8": 0.9}} for s, d in ((0, 0.4), (1, 0.6))]
    rows = {r["compressor"]: r for r in fid.predictions(cases, tta)}
    p4 = rows["powersgd:4"]
    assert p4["delta"] == {"mean": 0.5, "min": 0.4, "max": 0.6, "n": 2}
    assert p4["step_vs_dense"] == 0.25 and p4["predicted_tta_vs_dense"] == 0.5
    assert p4["measured_tta_vs_dense"] == 0.25 and p4["reached"] == 1  # 2.0 s ÷ 8.0 s
    assert "predicted_tta_vs_dense" not in rows["powersgd:8"]  # not the setting measured
    md = fid.markdown({"rows": list(rows.values()), "cases": cases, "command": "x ",
                       "date": "d", "versions": {"torch": "t"}})
    assert "| digits | Adam | `powersgd:4` | 0.500 [0.400–0.600] (2 seeds) | 0.25 | 0.50 | 0.25 (1/1) |" in md


def test_fidelity_compressors_name_the_runs_they_predict():
    fid = load_repo_script("benchmarks/comm_fidelity.py")
    assert fid.tta_label("powersgd:4") == "powersgd"
    assert fid.tta_label("powersgd:8") == "powersgd:rank=8"
    assert fid.tta_label("topk:0.01") == "topk"
    assert fid.tta_label("quant:8") == "quant" and fid.tta_label("quant") == "quant"
    assert fid.tta_label("quant:4") == "quant:quant_bits=4"


def test_the_table_says_how_far_apart_a_ratio_and_its_dense_run_are():
    b = _bench()
    curve = [[30, 1.0, 0.95], [60, 2.0, 0.95]]
    runs = [{**_run("dense", 0, curve, 0.95, 1000.0), "date": "2026-12-03T08:00:00+00:00"},
            {**_run("fp16", 0, curve, 0.95, 500.0), "date": "2026-12-03T08:30:00+00:00"},
            {**_run("auto", 0, curve, 0.95, 10.0), "date": "2026-12-05T08:00:00+00:00"}]
    assert b.dense_gap_hours({"runs": runs}) == [0.5, 48.0]
    assert "within the hour for 1 of 2 runs and up to 2.0 days apart" in b.markdown({"runs": runs})
    assert "run within the hour." in b.markdown({"runs": runs[:2]})


def test_side_by_side_leaves_out_runs_taken_far_apart():
    b = _bench()
    curve = [[30, 1.0, 0.95], [60, 2.0, 0.95]]
    late = [[30, 1.5, 0.95], [60, 2.5, 0.95]]
    runs = [{**_run("dense", s, curve, 0.95, 1000.0), "date": "2026-12-03T08:00:00+00:00"}
            for s in (0, 1)]
    runs += [{**_run("quant", 0, curve, 0.95, 100.0), "date": "2026-12-04T08:00:00+00:00"},
             {**_run("auto", 0, late, 0.95, 100.0), "date": "2026-12-04T08:10:00+00:00"},
             {**_run("quant", 1, curve, 0.95, 100.0), "date": "2026-12-03T08:10:00+00:00"},
             {**_run("auto", 1, late, 0.95, 100.0), "date": "2026-12-04T08:20:00+00:00"}]
    sbs = b.side_by_side({"runs": runs}, "digits", "100mbit", "adam", 60, "auto", "quant")
    assert sbs["startup_s"]["n"] == 1 and sbs["startup_s"]["mean"] == 0.5  # seed 1 left out
    assert sbs["pace"]["mean"] == 1.0 and sbs["ratio"]["mean"] == 1.5
    assert b.side_by_side({"runs": runs[:2]}, "digits", "100mbit", "adam", 60, "auto",
                          "quant") is None


def test_auto_choice_column_counts_seeds_that_chose_differently():
    b = _bench()
    same = [{"auto": {"choice": ["powersgd", "powersgd", "dense"]}}] * 3
    assert b._choice(same) == "powersgd×2, dense×1"
    mixed = [{"auto": {"choice": ["dense"]}}, {"auto": {"choice": ["fp16"]}},
             {"auto": {"choice": ["fp16"]}}, {"strategy": "dense"}]
    assert b._choice(mixed) == "dense×1 (1 seed); fp16×1 (2 seeds)"
    assert b._choice([{"strategy": "dense"}]) is None
