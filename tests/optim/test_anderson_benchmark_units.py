"""The pure parts of benchmarks/anderson.py: the absolute extra time per epoch, the
process count in the table heading, bad --nproc."""

from __future__ import annotations

import pytest

from scidl.testing import load_repo_script


def _bench():
    return load_repo_script("benchmarks/anderson.py")


def _run(wall, cpu):
    return {"epoch_time_median_s": wall, "epoch_cpu_median_s": cpu}


def test_extra_ms_pairs_each_repeat_with_the_same_repeat_of_sgd():
    b = _bench()
    sgd = [_run([0.010, 0.020], [0.012, 0.030]), _run([0.008], [0.010])]
    aa = [_run([0.012, 0.026], [0.013, 0.032]), _run([0.011], [0.014])]
    assert b._extra_ms(aa, sgd, "epoch_time_median_s") == pytest.approx(3.0)  # 2, 6, 3 ms
    assert b._extra_ms(aa, sgd, "epoch_cpu_median_s") == pytest.approx(2.0)  # 1, 2, 4 ms
    with pytest.raises(ValueError):  # unequal repeats are an error, not a silent truncation
        b._extra_ms([_run([0.01], [0.01])], sgd[:1], "epoch_time_median_s")


def test_table_heading_names_the_processes_and_the_extra_column():
    b = _bench()
    t = {"epochs_to_0.01": [4], "epochs_ratio_median": 1.0, "epochs_ratio_of_sums": 1.0,
         "time_per_epoch_ratio_median": 1.0, "wall_to_0.01_ratio_median": 1.0,
         "cpu_per_epoch_ratio_median": 1.0, "cpu_to_0.01_ratio_median": 1.0,
         "passes_per_epoch": {"forward_backward": 8.0, "forward_only": 0.0},
         "rejected_fraction": None}
    run = {**_run([0.01], [0.02]), "load": [(0.5, 0.7)]}
    d = {"meta": {"cpus": 2}, "adm2": {"nproc": 2, "epochs": 5, "seeds": [0], "repeats": 1,
                                       "runs": {"sgd": [run]}, "table": {"sgd": t}}}
    out = b.table_admissions(d, key="adm2")
    assert "2 gloo processes (batch 20 each)" in out
    assert "| 0.00 / 0.00 |" in out and "load average during the runs 0.5–0.7" in out


def test_bad_nproc_is_one_clear_error(capsys):
    with pytest.raises(SystemExit) as e:
        _bench().main(["--nproc", "0"])
    assert e.value.code == 2
    assert "--nproc must be >= 1" in capsys.readouterr().err
