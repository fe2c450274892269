"""Reports for train and predict folders; the predict command end to end."""

from __future__ import annotations

import json

import pytest
import yaml

from scidl.cli import main
from scidl.scaling.report import render_run


def test_train_report(tmp_path):
    rows = [{"step": i, "loss": 1.0 / i, "step_time_s": 0.01} for i in range(1, 20)]
    rows.append({"step": 19, "eval/accuracy": 0.9})
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{bad")
    (tmp_path / "summary.json").write_text(json.dumps({"steps": 19}))
    out = render_run(tmp_path)
    html = out.read_text()
    assert html.count("data:image/png;base64,") == 1
    assert "eval/accuracy" in html
    assert (tmp_path / "train_curves.png").stat().st_size > 1000


def _burgers_like_run(tmp_path):
    rows = [{"step": s, "loss": 1.0 / s} for s in range(10, 310, 10)]
    evals = [(100, 0.20, 3.0), (200, 0.034, 1.0), (300, 0.054, 2.0)]
    rows += [{"step": s, "eval/rel_l2": a, "eval/max_abs_err": m} for s, a, m in evals]
    rows.append({"step": 300, "epoch": 3, "eval/rel_l2": 0.054, "eval/max_abs_err": 2.0})
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "summary.json").write_text(json.dumps(
        {"workload": "burgers", "headline": "rel_l2", "higher_is_better": False,
         "headline_value": 0.054, "steps": 300, "world_size": 2, "backend": "gloo",
         "device": "cpu", "wall_s": 12.5, "step_time_s": 0.0042, "final_loss": 0.0033,
         "provenance": {"host": "node7", "cpus": 16, "torch": "2.13.0", "scidl": "0.1.0",
                        "date": "2026-12-01"}}))
    (tmp_path / "config.yaml").write_text("workload: burgers\noptim:\n  lr: 0.003\n")
    return rows


def test_train_report_leads_with_headline_and_curves(tmp_path):
    """The page opens with the headline (best and final) and the curves; the config and the
    summary follow. Before, it opened with the summary JSON dump and put the plot last."""
    _burgers_like_run(tmp_path)
    html = render_run(tmp_path).read_text()
    body = html[html.index("<body>"):]
    head = body.index('class="headline"')
    img = body.index("<img")
    assert head < img < body.index("config.yaml") < body.index("summary.json")
    assert "<pre>" not in body[:img] and "<table>" not in body[:img]
    lead = body[head:img]
    assert "rel_l2: best <b>0.034</b> (step 200)" in lead
    assert "final <b>0.054</b> (step 300)" in lead and "lower is better" in lead
    assert "trained on node7 (16 CPUs) · torch 2.13.0 · SciDL 0.1.0 · 2026-12-01" in body[:img]
    assert "4.2 ms per step" in lead
    assert body.count("<tr><td>300</td>") == 1  # the final eval repeats step 300: one row


def test_each_eval_metric_has_its_own_axis(tmp_path):
    """max_abs_err (≈ 1–3) no longer flattens rel_l2 (≈ 0.03–0.2) on one shared axis."""
    from scidl.scaling.report import best_and_final, train_curves_figure

    rows = _burgers_like_run(tmp_path)
    fig = train_curves_figure(rows, headline="rel_l2", higher_is_better=False)
    axes = [a for a in fig.axes if a.get_visible()]
    assert [a.get_ylabel() for a in axes] == ["loss", "rel_l2", "max_abs_err"]
    rel, mae = axes[1], axes[2]
    assert list(rel.lines[0].get_ydata()) == [0.20, 0.034, 0.054]
    assert list(mae.lines[0].get_ydata()) == [3.0, 1.0, 2.0]
    assert rel.get_ylim()[1] < 0.5  # its own scale
    assert best_and_final(rows, "eval/rel_l2", False) == {
        "best": 0.034, "best_step": 200, "final": 0.054, "final_step": 300}
    assert best_and_final(rows, "eval/max_abs_err", True)["best"] == 3.0


def test_scale_report_error_bars_from_repeats(tmp_path):
    """Repeats give error bars (min–max step time) and the breakdown picks ms, not 0.004 s."""
    from scidl.scaling.report import spread

    pts = [{"ranks": p, "repeats": 3, "step_s": 0.004 * p, "step_s_min": 0.0035 * p,
            "step_s_max": 0.005 * p, "samples_per_s": 1000.0 / p, "efficiency": 1.0 / p,
            "compute_s": 0.003 * p, "comm_s": 0.001 * p, "exposed_comm_s": 0.001 * p,
            "global_batch": 4} for p in (1, 2)]
    (tmp_path / "scaling.json").write_text(json.dumps(
        {"workload": "toy", "mode": "weak", "comm": "dense", "host": "h1",
         "created": "2026-11-30T00:00:00Z", "points": pts}))
    html = render_run(tmp_path).read_text()
    assert html.count("data:image/png") == 3
    assert "measured on h1" in html
    assert "<td>4 ms</td><td>3.5 ms</td><td>5 ms</td>" in html  # step_s, its min and max
    lo, hi = spread(pts[1], "samples_per_s")
    assert lo == pytest.approx(500.0 * 0.008 / 0.010) and hi == pytest.approx(500.0 * 0.008 / 0.007)
    assert spread({"ranks": 1, "step_s": 1.0}, "step_s") is None


def test_report_rejects_non_run(tmp_path):
    with pytest.raises(FileNotFoundError):
        render_run(tmp_path)
    assert main(["report", str(tmp_path / "nope")]) == 2


def test_predict_command(tmp_path, capsys):
    prof = tmp_path / "profile.yaml"
    prof.write_text(yaml.safe_dump({"compute_s": 0.3, "grad_bytes": 1e8, "samples_per_step": 64}))
    out = tmp_path / "pred"
    rc = main(["predict", "--profile", str(prof), "--hardware", "summit",
               "--ranks", "1,6,...,27600", "--comm", "dense,fp16,topk:0.01", "--out", str(out)])
    assert rc == 0
    data = json.loads((out / "prediction.json").read_text())
    assert len(data["curves"]) == 3
    dense, fp16, _ = data["curves"].values()
    assert dense[-1]["ranks"] == 27600
    assert dense[0]["efficiency"] == pytest.approx(1.0)
    assert fp16[-1]["comm_s"] < dense[-1]["comm_s"]
    assert all(0 < p["efficiency"] <= 1.0 + 1e-9 for p in dense)
    assert (out / "report.html").read_text().count("data:image/png") == 3
    assert "27600" in capsys.readouterr().out
    # regenerate
    assert main(["report", str(out)]) == 0
    assert main(["predict", "--profile", str(prof), "--hardware", "summit",
                 "--algorithm", "bogus"]) == 2
