"""Hardware presets load, cite their sources, and feed the published-point predictions."""

from __future__ import annotations

import pytest

from scidl.scaling.hardware import load_hardware, preset_names, save_hardware
from scidl.scaling.published import SYSTEMS, predict_row, read_rows

CSV = """source,system,model,params_millions,ranks,device,devices_per_node,intra_node_link,inter_node_link,scaling,reported_efficiency,notes
Sergeev & Del Balso 2018,128 servers x 4 Pascal GPUs,VGG-16,138,512,P100,4,PCIe,25 Gbit/s RoCE,weak,0.68,x
Awan et al. 2020 HyPar-Flow,Stampede2 (TACC),ResNet-1001,30,128 nodes,Xeon,1,,Omni-Path,speedup,110x over 1 node,x
"""


def test_every_preset_loads_with_sources():
    names = preset_names()
    for want in ("summit", "horovod_p100_roce", "bigbasin", "stampede2_skx", "stampede2_knl"):
        assert want in names
    for n in names:
        hw = load_hardware(n)
        assert hw.sources and hw.sustained_flops and hw.inter is not None
        assert hw.topology().devices_per_node == hw.devices_per_node
    assert {s["hardware"] for s in SYSTEMS.values()} <= set(names)


def test_unknown_preset_and_file_roundtrip(tmp_path):
    with pytest.raises(KeyError, match="presets"):
        load_hardware("no-such-machine")
    path = save_hardware(load_hardware("summit"), tmp_path / "s.yaml")
    assert load_hardware(path) == load_hardware("summit")
    with pytest.raises(FileNotFoundError):
        load_hardware(tmp_path / "missing.yaml")


def test_published_rows(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text(CSV)
    vgg, hypar = (predict_row(r) for r in read_rows(f))
    assert vgg["ranks"] == 512 and vgg["compute_basis"] == "measured"
    # comm-heavy VGG-16: a large exposed share; efficiency well below 1
    assert 0.5 < vgg["predicted"] < 0.9
    assert vgg["exposed_comm_s"] > 0.1 * vgg["compute_s"]
    assert hypar["ranks"] == 128 and hypar["reported"] == pytest.approx(110 / 128)
    assert 0 < hypar["predicted"] <= 1


def test_per_process_count_fit_is_used_at_that_count():
    from scidl.scaling.hardware import Hardware, Level
    from scidl.scaling.predict import StepProfile, predict_point

    slow = Level(alpha=1e-2, beta=1e-8)
    hw = Hardware(name="cpu", devices_per_node=8, intra=Level(alpha=1e-4, beta=1e-9),
                  intra_by_ranks={"4": slow}, measured_here=True, overlap=0.0)
    assert hw.topology(4).intra.alpha == 1e-2
    assert hw.topology(2).intra.alpha == 1e-4
    prof = StepProfile(compute_s=0.1, grad_bytes=4e6)
    p2 = predict_point(prof, hw, 2)
    p4 = predict_point(prof, hw, 4)
    assert p4["comm_s"] > 10 * p2["comm_s"]


def test_measured_compute_slowdown_replaces_core_rule():
    from scidl.scaling.hardware import Hardware, Level
    from scidl.scaling.predict import StepProfile, compute_time

    hw = Hardware(name="cpu", concurrent_devices=2, intra=Level(alpha=0, beta=0),
                  compute_slowdown={"2": 1.5}, measured_here=True)
    prof = StepProfile(compute_s=0.1, grad_bytes=0)
    assert compute_time(prof, hw, 1, "weak") == 0.1
    assert compute_time(prof, hw, 2, "weak") == 0.15000000000000002
    assert compute_time(prof, hw, 4, "weak") == 0.2  # no probe at 4: p/cores
    assert compute_time(prof, hw, 4, "strong") == 0.05


MORE = """source,system,model,params_millions,ranks,device,devices_per_node,intra_node_link,inter_node_link,scaling,reported_efficiency,notes,sustained_tflops,baseline_ranks,global_batch
Cavdar,Stampede2 (TACC),Transformer (big; NMT),,1200,Xeon,4,,OPA,weak,0.91,x,,4,
Cavdar,Stampede2 (TACC),Transformer (big; NMT),,400,Xeon,2,,OPA,strong,0.65,x,,2,2000000
"""


def test_straggler_fitted_on_one_row_predicts_the_others(tmp_path):
    from scidl.scaling.published import validate

    f, more = tmp_path / "p.csv", tmp_path / "more.csv"
    f.write_text(CSV)
    more.write_text(MORE)
    vgg, hypar, weak, strong = validate(f, more=more)
    # Stampede2 is fitted on the weak Transformer row: it reproduces it
    assert weak["role"] == "fit" and weak["delta_points"] == pytest.approx(0.0, abs=0.05)
    assert weak["straggler_cv"] > 0
    # the system's other rows use that spread and stay predictions
    assert hypar["role"] == strong["role"] == "predicted"
    assert hypar["straggler_cv"] == strong["straggler_cv"] == weak["straggler_cv"]
    assert strong["scaling"] == "strong" and strong["batch_per_rank"] == 5000
    # Horovod's fit row (Inception V3) is absent: VGG-16 gets the median of fitted systems
    assert vgg["cv_source"] == "median of the fitted systems"
    assert vgg["straggler_cv"] == pytest.approx(weak["straggler_cv"])
    # the spread costs efficiency: VGG-16 below its prediction without stragglers
    assert vgg["predicted"] < predict_row(read_rows(f)[0])["predicted"]
