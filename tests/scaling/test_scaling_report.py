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
