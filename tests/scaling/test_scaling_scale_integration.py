"""`scidl scale` on 1 and 2 processes and `scidl bench-collectives` on 2 (gloo, CPU)."""

from __future__ import annotations

import json

import pytest
import yaml

from scidl.cli import main


@pytest.mark.timeout(240)
def test_scale_1_and_2_processes_report(tmp_path, capsys):
    hw = {
        "name": "test-local", "devices_per_node": 2, "concurrent_devices": 2,
        "sustained_flops": 1e9, "overlap": 0.0, "measured_here": True,
        "intra": {"alpha": 1e-4, "beta": 1e-9, "gamma": 0.0},
    }
    hw_file = tmp_path / "hw.yaml"
    hw_file.write_text(yaml.safe_dump(hw))
    out = tmp_path / "scale"
    rc = main(["scale", "digits", "--nproc", "1,2", "--steps", "5", "--mode", "weak",
               "--hardware", str(hw_file), "--out", str(out), "task.hidden=[16]",
               "train.batch_size=8", f"log.root={tmp_path}"])
    assert rc == 0
    data = json.loads((out / "scaling.json").read_text())
    p1, p2 = data["points"]
    assert (p1["ranks"], p2["ranks"]) == (1, 2)
    assert (p1["global_batch"], p2["global_batch"]) == (8, 16)  # weak: per-rank batch fixed
    assert p1["efficiency"] == pytest.approx(1.0)
    assert p2["efficiency"] == pytest.approx(p1["step_s"] / p2["step_s"])
    assert p2["bytes_sent_per_step"] > 0 and p1["bytes_sent_per_step"] == 0
    for q in (p1, p2):
        assert q["step_s"] > 0 and q["steps"] >= 3
        assert q["compute_s"] == pytest.approx(q["step_s"] - q["exposed_comm_s"])
        assert "predicted_step_s" in q
    assert data["grad_bytes"] == 4 * (64 * 16 + 16 + 16 * 10 + 10)
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3
    assert "efficiency" in html
    for png in ("scaling_efficiency.png", "scaling_throughput.png", "scaling_breakdown.png"):
        assert (out / png).stat().st_size > 1000
    table = capsys.readouterr().out
    assert "E(p)" in table and "pred_E" in table
    # the report can be regenerated, and a point's run folder is a valid predict profile
    assert main(["report", str(out)]) == 0
    assert main(["predict", "--profile", p1["run_dir"], "--hardware", str(hw_file),
                 "--ranks", "1,2,4", "--out", str(tmp_path / "pred")]) == 0


@pytest.mark.timeout(120)
def test_bench_collectives_two_processes(tmp_path):
    out = tmp_path / "bench"
    rc = main(["bench-collectives", "--nproc", "2", "--min-bytes", "4096",
               "--max-bytes", "262144", "--factor", "8", "--iters", "3", "--out", str(out)])
    assert rc == 0
    bench = json.loads((out / "bench.json").read_text())
    assert len(bench["rows"]) == 5 * 3  # 3 ops in float32, allreduce in float16, bfloat16
    for r in bench["rows"]:
        assert 0 < r["time_s_min"] <= r["time_s"] <= r["time_s_max"]  # spread of the repeats
        assert r["busbw_Bps"] == pytest.approx(
            r["algbw_Bps"] * (1.0 if r["op"].startswith("allreduce") else 0.5))
    assert bench["provenance"]["cpus"] >= 1
    assert all((out / f"collectives_{k}.png").stat().st_size > 1000 for k in ("busbw", "time"))
    hw = yaml.safe_load((out / "hardware.yaml").read_text())
    assert hw["measured_here"] and hw["intra"]["alpha"] >= 0 and hw["intra"]["beta"] >= 0
    assert hw["compute_slowdown"][2] > 0  # slowest of 2 busy ranks vs 1
    assert main(["bench-collectives", "--nproc", "1"]) == 2
    assert main(["bench-collectives", "--cores", "2,4"]) == 2  # only with --cluster
    assert main(["bench-collectives", "--min-bytes", "4096", "--max-bytes", "8192"]) == 2
    assert main(["bench-collectives", "--cluster", "x", "--cores", "1"]) == 2


@pytest.mark.timeout(120)
def test_bench_collectives_times_an_op_in_float16(tmp_path):
    out = tmp_path / "bench"
    # up to 4 MiB: the rate comes from the time differences between sizes, which for
    # messages of a few hundred KiB on loopback are inside the timing noise
    rc = main(["bench-collectives", "--nproc", "2", "--ops", "allreduce,allreduce:float16",
               "--min-bytes", "4096", "--max-bytes", "4194304", "--factor", "32", "--iters", "5",
               "--no-compute-probe", "--out", str(out)])
    assert rc == 0
    rows = json.loads((out / "bench.json").read_text())["rows"]
    assert sorted({r["op"] for r in rows}) == ["allreduce", "allreduce:float16"]
    hw = yaml.safe_load((out / "hardware.yaml").read_text())
    assert hw["intra"]["op_beta"]["allreduce:float16"] > 0
    assert set(hw["intra"]["op_latency"]) == {"allreduce", "allreduce:float16"}
    for bad in ("allreduce:int8", "allreduce:float16"):  # unknown type; no float32 op
        assert main(["bench-collectives", "--ops", bad, "--out", str(tmp_path / "x")]) == 2
